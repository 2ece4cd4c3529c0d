"""The operator's side: watch a fleet's rollout and report on it (``python -m agent fleet``).

Runs on a laptop or a CI runner, never on a device: nothing in the device's runtime
imports this package, and its libraries (``rich``, ``matplotlib``) come with the
``[operator]`` extra. It consumes exactly what devices publish on their platform,
status and health topics (see the README's "Topics and messages").
"""

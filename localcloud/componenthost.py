"""The contract between a simulated core device and its nucleus IPC server.

``localcloud.device.CoreDevice`` implements it; ``localcloud.nucleus`` consumes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Lifecycle states as Greengrass names them.
LIFECYCLE_STATES = (
    "NEW", "INSTALLED", "STARTING", "RUNNING", "STOPPING", "ERRORED", "BROKEN", "FINISHED",
)

#: Called with (component_name, changed_key_path) after a component's configuration changed.
ConfigListener = Callable[[str, list[str]], None]

#: Called (on an IPC thread) when every subscriber answered a pre-update round, with the
#: longest ``recheckAfterMs`` asked for (0: go ahead now).
RoundAnswered = Callable[[int], None]


class UpdatePolicyNotifier(Protocol):
    """How a device applying a deployment with the NOTIFY_COMPONENTS update policy tells
    the components that subscribed to component updates (the nucleus IPC server does it).

    A round: :meth:`pre_update` sends the event to every subscription and returns whether
    any answer is awaited; ``answered`` runs once all came in. The device ends a round by
    :meth:`end_round` (all answered, or its policy timeout passed on the world clock) and
    afterwards sends :meth:`post_update` when the update ran.
    """

    def pre_update(
        self, deployment_id: str, ggc_restarting: bool, answered: RoundAnswered
    ) -> bool:
        """Send a PreComponentUpdateEvent to every subscriber; True if answers are awaited."""

    def end_round(self) -> int:
        """Stop awaiting answers (later ones are refused); the longest ``recheckAfterMs``
        among the answers that came (0 when none did)."""

    def post_update(self, deployment_id: str) -> None:
        """Send a PostComponentUpdateEvent to every subscriber."""


@dataclass
class ComponentInfo:
    """One component as the device has it now."""

    name: str
    version: str
    state: str
    configuration: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)


class ComponentHost(Protocol):
    """What the nucleus needs to know about the device it runs on."""

    thing_name: str

    def component(self, name: str) -> ComponentInfo | None:
        """The component installed under ``name``, or None."""

    def components(self) -> list[ComponentInfo]:
        """Every installed component."""

    def report_state(self, name: str, state: str) -> None:
        """A component's UpdateState (RUNNING or ERRORED) over IPC."""

    def add_config_listener(self, listener: ConfigListener) -> None:
        """Be told whenever a deployment changed a component's configuration."""

    def set_update_notifier(self, notifier: UpdatePolicyNotifier | None) -> None:
        """Who tells subscribed components about deployments (None: nobody listens)."""

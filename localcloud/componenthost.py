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

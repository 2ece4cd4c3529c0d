"""Test helpers for the simulated nucleus: a static component host and IPC clients."""

from __future__ import annotations

import copy
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localcloud.componenthost import ComponentInfo, ConfigListener, UpdatePolicyNotifier

#: AF_UNIX socket paths must stay under ~107 bytes.
_MAX_SOCKET_PATH = 100


def mqtt_acl(
    *, publish: list[str] | None = None, subscribe: list[str] | None = None
) -> dict[str, Any]:
    """An ``accessControl`` block for ``aws.greengrass.ipc.mqttproxy``."""
    policies: dict[str, Any] = {}
    if publish is not None:
        policies["pub"] = {
            "operations": ["aws.greengrass#PublishToIoTCore"],
            "resources": publish,
        }
    if subscribe is not None:
        policies["sub"] = {
            "operations": ["aws.greengrass#SubscribeToIoTCore"],
            "resources": subscribe,
        }
    return {"aws.greengrass.ipc.mqttproxy": policies}


def recipe_with_acl(name: str, access_control: dict[str, Any]) -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": access_control}},
    }


class StaticHost:
    """A ComponentHost whose components the test sets directly."""

    def __init__(
        self, thing_name: str = "test-core", components: Iterable[ComponentInfo] = ()
    ) -> None:
        self.thing_name = thing_name
        self._lock = threading.Condition()
        self._components = {c.name: c for c in components}
        self._listeners: list[ConfigListener] = []
        self.reported: list[tuple[str, str]] = []

    def component(self, name: str) -> ComponentInfo | None:
        with self._lock:
            info = self._components.get(name)
            return copy.deepcopy(info) if info is not None else None

    def components(self) -> list[ComponentInfo]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._components.values()]

    def report_state(self, name: str, state: str) -> None:
        with self._lock:
            self.reported.append((name, state))
            if name in self._components:
                self._components[name].state = state
            self._lock.notify_all()

    def wait_for_report(self, name: str, state: str, timeout: float = 5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: (name, state) in self.reported, timeout)

    def add_config_listener(self, listener: ConfigListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def set_update_notifier(self, notifier: UpdatePolicyNotifier | None) -> None:
        """A static host applies no deployments: it never sends update events."""

    def add(self, info: ComponentInfo) -> None:
        with self._lock:
            self._components[info.name] = info

    def set_config(self, name: str, key_path: list[str], value: Any) -> None:
        """Change one configuration value and tell the listeners, like a deployment."""
        with self._lock:
            node = self._components[name].configuration
            for key in key_path[:-1]:
                node = node.setdefault(key, {})
            node[key_path[-1]] = value
            listeners = list(self._listeners)
        for listener in listeners:
            listener(name, list(key_path))


@contextmanager
def short_socket_dir(base: Path) -> Iterator[Path]:
    """``base`` if a socket path under it is short enough, else a short temp dir."""
    if len(os.fsencode(str(base / "ipc.sock"))) <= _MAX_SOCKET_PATH:
        yield base
        return
    short = Path(tempfile.mkdtemp(prefix="gg"))
    try:
        yield short
    finally:
        for child in short.iterdir():
            child.unlink()
        short.rmdir()

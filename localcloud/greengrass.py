"""AWS IoT Greengrass V2 control-plane emulator. Placeholder: being written."""

from __future__ import annotations

from typing import Any

from localcloud.http import Router


class GreengrassEmulator:
    def __init__(self, world: Any) -> None:
        self.world = world
        self.router = Router()

    def tick(self, now: float) -> None:
        pass

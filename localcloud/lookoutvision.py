"""Amazon Lookout for Vision emulator (API 2020-11-20, REST-JSON). Placeholder: being written."""

from __future__ import annotations

from typing import Any

from localcloud.http import Router


class LookoutVisionEmulator:
    def __init__(self, world: Any) -> None:
        self.world = world
        self.router = Router()

    def tick(self, now: float) -> None:
        pass

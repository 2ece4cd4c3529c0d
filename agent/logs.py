"""Structured logs: JSON lines on stdout (Greengrass captures them), readable on a TTY.

A processor removes anything that looks like a credential before it is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"(secret|token|password|credential|authorization|svcuid)", re.I)
_SECRET_VALUE = re.compile(r"(ASIA|AKIA)[A-Z0-9]{12,}")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = _SECRET_VALUE.sub("[redacted]", event[key])
    return event


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Set up structlog once for the process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )

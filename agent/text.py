"""Quoting values in messages without echoing them whole."""

from __future__ import annotations

#: The most characters of a value an error line quotes.
EXCERPT_LIMIT = 200


def clip(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, with a note of how much was left out.

    Configuration values can be arbitrarily large (a 10 MB string pasted into a key);
    an error line names the problem, not the whole value.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


def excerpt(value: object, limit: int = EXCERPT_LIMIT) -> str:
    """``repr(value)``, clipped like :func:`clip`."""
    return clip(repr(value), limit)

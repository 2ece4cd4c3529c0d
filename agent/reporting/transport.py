"""The port every MQTT transport implements (IPC through the nucleus, or direct MQTT5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: Called with (topic, payload) for each message on a subscribed topic. Runs on the
#: transport's thread: it must return quickly and never raise.
MessageHandler = Callable[[str, bytes], None]


class Transport(Protocol):
    """An MQTT connection with QoS 1 publish acknowledgements.

    Implementations raise only ``agent.errors.TransportError`` (or a ConfigurationError
    from ``connect`` when settings are unusable, e.g. missing certificate files).
    """

    #: True when the transport can keep retained messages (direct MQTT5 can; IPC cannot).
    supports_retain: bool

    def connect(self, timeout: float) -> None:
        """Open the connection; raise TransportError if not connected within ``timeout``."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float) -> None:
        """Publish at QoS 1 and return only once acknowledged; else raise TransportError."""

    def subscribe(self, topic: str, handler: MessageHandler, *, timeout: float) -> None:
        """Subscribe at QoS 1; ``handler`` receives every message. Re-subscribed on reconnect."""

    def is_connected(self) -> bool:
        """Whether a publish now has a chance to succeed."""

    def close(self) -> None:
        """Close the connection; idempotent."""

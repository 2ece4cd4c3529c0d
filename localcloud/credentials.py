"""The world's registry of the temporary credentials it has issued (world clock).

The token exchange service of a simulated core device hands these out; ``World.dispatch``
checks every signed request's access key against the registry.
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass

from localcloud.clock import Clock, RealClock
from localcloud.http import ServiceError

TEMPORARY_KEY_PREFIX = "ASIA"
_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class TemporaryCredentials:
    """One issued credential set; ``expires_at`` is in world-clock seconds."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: float


class CredentialRegistry:
    """The temporary keys the world has issued and when each expires (world time).

    ``check`` is called by ``World.dispatch`` with the access key of every signed
    request: unknown long-term keys pass, temporary (``ASIA``) keys must be known and
    unexpired.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or RealClock()
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, ttl_seconds: float) -> TemporaryCredentials:
        """Create and register a new temporary key valid for ``ttl_seconds`` of world time."""
        credentials = TemporaryCredentials(
            access_key_id=TEMPORARY_KEY_PREFIX
            + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16)),
            secret_access_key=secrets.token_urlsafe(30)[:40],
            session_token=secrets.token_urlsafe(96),
            expires_at=self.clock.now() + ttl_seconds,
        )
        self.register(credentials.access_key_id, credentials.expires_at)
        return credentials

    def register(self, access_key: str, expires_at: float) -> None:
        with self._lock:
            self._expiry[access_key] = expires_at

    def revoke(self, access_key: str) -> None:
        with self._lock:
            self._expiry.pop(access_key, None)

    def expires_at(self, access_key: str) -> float | None:
        with self._lock:
            return self._expiry.get(access_key)

    def check(self, access_key: str) -> ServiceError | None:
        """None if a request signed with ``access_key`` may proceed, else the error."""
        if not access_key.startswith(TEMPORARY_KEY_PREFIX):
            return None
        expires_at = self.expires_at(access_key)
        if expires_at is None:
            return ServiceError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                403,
            )
        if self.clock.now() >= expires_at:
            return ServiceError(
                "ExpiredTokenException",
                "The security token included in the request is expired",
                403,
            )
        return None

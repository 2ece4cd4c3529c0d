"""The token exchange service (TES) of the simulated nucleus.

The temporary credentials it hands out are issued by the world's
:class:`localcloud.credentials.CredentialRegistry` .

Components get ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and
``AWS_CONTAINER_AUTHORIZATION_TOKEN``; botocore's container provider then calls
``GET /2016-11-01/credentialprovider/`` with the token in ``Authorization`` and
receives ``AccessKeyId``, ``SecretAccessKey``, ``Token`` and ``Expiration``.

Two clocks are involved on purpose. ``Expiration`` is real (wall-clock) time because
botocore decides when to refresh from the machine's clock. The world enforces expiry
on its own clock (``World.credentials``), so a test on a virtual clock can advance
past the lifetime and see ``ExpiredTokenException`` without waiting.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcloud.world import World

CREDENTIALS_PATH = "/2016-11-01/credentialprovider/"


class TokenExchangeService:
    """The ``aws.greengrass.TokenExchangeService`` HTTP endpoint on 127.0.0.1."""

    def __init__(self, world: World, ttl_seconds: float = 3600) -> None:
        self.world = world
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self._issued = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- tokens ---------------------------------------------------------------------
    def register_token(self, token: str) -> None:
        """Accept ``token`` in the Authorization header from now on."""
        with self._lock:
            self._tokens.add(token)

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def _authorized(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and token in self._tokens

    @property
    def issued(self) -> int:
        """How many credential sets have been handed out."""
        with self._lock:
            return self._issued

    def _issue(self) -> dict[str, str]:
        credentials = self.world.credentials.issue(self.ttl_seconds)
        expiration = datetime.fromtimestamp(time.time() + self.ttl_seconds, tz=timezone.utc)
        with self._lock:
            self._issued += 1
        return {
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "Token": credentials.session_token,
            "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    # -- server -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the token exchange service is not started")
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}{CREDENTIALS_PATH}"

    def start(self) -> TokenExchangeService:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="tes", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5.0)
        self._server = self._thread = None

    def __enter__(self) -> TokenExchangeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(service: TokenExchangeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "LocalTES/1.0"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.rstrip("/") != CREDENTIALS_PATH.rstrip("/"):
                self._reply(404, {"message": "Not found"})
            elif not service._authorized(self.headers.get("Authorization")):
                self._reply(403, {"message": "Request denied: invalid authorization token"})
            else:
                self._reply(200, service._issue())

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler

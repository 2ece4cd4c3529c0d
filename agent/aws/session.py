"""boto3 clients for the agent, created once each and reused.

Lookout for Vision is no longer in botocore (AWS ended the service on 2025-10-31), so
the agent ships its own model in ``agent/aws/data`` and adds that directory to
botocore's data path, the public mechanism for extra service models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA_PATH = Path(__file__).parent / "data"

#: The services the agent calls, by boto3 name.
SERVICES = ("lookoutvision", "greengrassv2", "iot")

ClientHook = Callable[[Any], None]


class AwsClients:
    """Lazily created, cached boto3 clients sharing one session.

    ``endpoints`` maps a boto3 service name to an endpoint URL (None: botocore's own
    resolution, which honours ``AWS_ENDPOINT_URL_<SERVICE>``). ``customize`` is called
    with every new client (the local world's in-process transport uses it).
    """

    def __init__(
        self,
        *,
        region: str,
        endpoints: dict[str, str | None] | None = None,
        max_attempts: int = 3,
        retry_mode: str = "standard",
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        customize: ClientHook | None = None,
    ) -> None:
        self.region = region
        self._endpoints = endpoints or {}
        self._max_attempts = max_attempts
        self._retry_mode = retry_mode
        self._timeouts = (connect_timeout, read_timeout)
        self._customize = customize
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self._lock = threading.Lock()

    def _boto_session(self) -> Any:
        if self._session is None:
            import boto3
            import botocore.session

            core = botocore.session.get_session()
            core.set_config_variable("data_path", str(DATA_PATH))
            self._session = boto3.Session(botocore_session=core, region_name=self.region)
        return self._session

    def client(self, service: str) -> Any:
        """The one client for ``service``."""
        with self._lock:
            found = self._clients.get(service)
            if found is not None:
                return found
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": self._max_attempts, "mode": self._retry_mode},
                connect_timeout=self._timeouts[0],
                read_timeout=self._timeouts[1],
                user_agent_extra="l4v-edge-agent",
            )
            kwargs: dict[str, Any] = {"config": config}
            endpoint = self._endpoints.get(service)
            if endpoint:
                kwargs["endpoint_url"] = endpoint
            client = self._boto_session().client(service, **kwargs)
            if self._customize is not None:
                self._customize(client)
            self._clients[service] = client
            return client

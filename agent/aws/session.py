"""boto3 clients for the agent, created once each and reused.

Lookout for Vision is no longer in botocore (AWS ended the service on 2025-10-31), so
the agent ships its own model in ``agent/aws/data`` and adds that directory to
botocore's data path, the public mechanism for extra service models.

Footprint: botocore's legacy endpoint table (``endpoints.json``, every service in every
partition) costs ~7 MiB of resident memory once parsed, for three services that resolve
their endpoints from their own rule sets (Greengrass V2, IoT) or from the partition
defaults (Lookout for Vision, which is no longer in that table anyway). The session's
loader therefore answers ``endpoints`` with the partition defaults only, built from
botocore's small ``partitions.json`` (:func:`partition_defaults`);
``tests/unit/test_aws_session.py`` checks that every request URL and signing scope of
the agent's services is unchanged in every region.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA_PATH = Path(__file__).parent / "data"

#: The services the agent calls, by boto3 name.
SERVICES = ("lookoutvision", "sagemaker", "greengrassv2", "iot")

ClientHook = Callable[[Any], None]


def partition_defaults(partitions: dict[str, Any]) -> dict[str, Any]:
    """botocore's legacy endpoint data (``endpoints.json`` format) with no per-service
    entries, from its rule-set partition data (``partitions.json``)."""
    out = []
    for partition in partitions["partitions"]:
        outputs = partition["outputs"]
        suffix = outputs["dnsSuffix"]
        plain, fips = "{service}.{region}.{dnsSuffix}", "{service}-fips.{region}.{dnsSuffix}"
        variants: list[dict[str, Any]] = [{"dnsSuffix": suffix, "hostname": fips, "tags": ["fips"]}]
        dual = outputs.get("dualStackDnsSuffix")
        if outputs.get("supportsDualStack") and dual:
            variants += [
                {"dnsSuffix": dual, "hostname": fips, "tags": ["dualstack", "fips"]},
                {"dnsSuffix": dual, "hostname": plain, "tags": ["dualstack"]},
            ]
        pattern = re.compile(partition["regionRegex"])
        out.append(
            {
                "partition": partition["id"],
                "partitionName": outputs.get("name", partition["id"]),
                "dnsSuffix": suffix,
                "regionRegex": partition["regionRegex"],
                # Pseudo-regions such as aws-global are not in the legacy table.
                "regions": {k: v for k, v in partition["regions"].items() if pattern.match(k)},
                "defaults": {
                    "hostname": plain,
                    "protocols": ["https"],
                    "signatureVersions": ["v4"],
                    "variants": variants,
                },
                "services": {},
            }
        )
    return {"partitions": out, "version": 3}


def lean_loader() -> Any:
    """botocore's data loader (with the agent's data path) that never parses the full
    legacy endpoint table: ``endpoints`` is answered by :func:`partition_defaults`."""
    from botocore.loaders import Loader

    class LeanLoader(Loader):  # type: ignore[misc]
        def load_data_with_path(self, name: str) -> tuple[Any, str]:
            if name == "endpoints":
                data, path = super().load_data_with_path("partitions")
                return partition_defaults(data), path
            found: tuple[Any, str] = super().load_data_with_path(name)
            return found

    return LeanLoader(extra_search_paths=[str(DATA_PATH)])


class AwsClients:
    """Lazily created, cached boto3 clients sharing one session.

    ``endpoints`` maps a boto3 service name to an endpoint URL (None: botocore's own
    resolution, which honours ``AWS_ENDPOINT_URL_<SERVICE>``). ``customize`` is called
    with every new client (the local world's in-process transport uses it).
    ``credentials`` (access key id, secret access key) replaces botocore's credential
    chain; simulations use it instead of changing the process environment.
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
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.region = region
        self._credentials = credentials
        self._endpoints = endpoints or {}
        self._max_attempts = max_attempts
        self._retry_mode = retry_mode
        self._timeouts = (connect_timeout, read_timeout)
        self._customize = customize
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self._lock = threading.Lock()

    def _boto_session(self) -> Any:
        # botocore's session directly: boto3 would add ~2 MiB of resident memory (its
        # resource layer and s3transfer) for nothing the agent uses.
        if self._session is None:
            import botocore.session

            core = botocore.session.get_session()
            core.set_config_variable("data_path", str(DATA_PATH))
            core.register_component("data_loader", lean_loader())
            if self._credentials is not None:
                core.set_credentials(*self._credentials)
            self._session = core
        return self._session

    def client(self, service: str) -> Any:
        """The one client for ``service``."""
        with self._lock:
            found = self._clients.get(service)
            if found is not None:
                return found
            from botocore.config import Config

            # total_max_attempts counts the first request too (botocore's "max_attempts"
            # key counts only retries): awsMaxAttempts 1 means exactly one request.
            config = Config(
                retries={"total_max_attempts": self._max_attempts, "mode": self._retry_mode},
                connect_timeout=self._timeouts[0],
                read_timeout=self._timeouts[1],
                user_agent_extra="l4v-edge-agent",
            )
            kwargs: dict[str, Any] = {"config": config}
            endpoint = self._endpoints.get(service)
            if endpoint:
                kwargs["endpoint_url"] = endpoint
            client = self._boto_session().create_client(service, region_name=self.region, **kwargs)
            if self._customize is not None:
                self._customize(client)
            self._clients[service] = client
            return client

"""The agent's lean botocore loader resolves exactly what stock botocore resolves.

``agent.aws.session`` answers botocore's request for its legacy endpoint table with the
partition defaults only (to save ~7 MiB per process). This compares, for each of the
agent's services, every region of every partition, with and without FIPS, the request
URL and the SigV4 credential scope of a real (intercepted, never sent) request against
a stock botocore session. Dual-stack, which the agent never configures, is compared
where stock botocore supports it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from agent.aws.session import DATA_PATH, AwsClients, lean_loader

#: One cheap operation per service.
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "lookoutvision": ("list_models", {"ProjectName": "p"}),
    "greengrassv2": ("list_deployments", {}),
    "iot": ("describe_thing", {"thingName": "t"}),
}


def _session(lean: bool) -> Any:
    session = botocore.session.get_session()
    session.set_config_variable("data_path", str(DATA_PATH))
    if lean:
        session.register_component("data_loader", lean_loader())
    return session


def _regions() -> list[str]:
    data = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())
    return [
        region
        for partition in data["partitions"]
        for region in partition["regions"]
        if re.match(partition["regionRegex"], region)
    ]


def _resolve(session: Any, service: str, region: str, fips: bool, dualstack: bool) -> tuple[Any, ...]:
    try:
        client = session.create_client(
            service,
            region_name=region,
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=Config(
                use_fips_endpoint=fips,
                use_dualstack_endpoint=dualstack,
                retries={"total_max_attempts": 1},
            ),
        )
    except Exception as exc:
        return ("cannot create", type(exc).__name__)
    seen: dict[str, Any] = {}

    def intercept(request: Any, **_: Any) -> AWSResponse:
        auth = request.headers.get("Authorization") or b""
        auth = auth.decode() if isinstance(auth, bytes) else auth
        scope = re.search(r"Credential=[^/]+/\d+/([^,]+)", auth)
        seen["url"], seen["scope"] = request.url, scope.group(1) if scope else None
        return AWSResponse(request.url, 200, {}, None)

    client.meta.events.register("before-send", intercept)
    operation, kwargs = CALLS[service]
    try:
        getattr(client, operation)(**kwargs)
    except Exception as exc:  # the empty fake response may not parse; the request was made
        seen.setdefault("error", type(exc).__name__)
    return seen.get("url"), seen.get("scope")


@pytest.fixture(scope="module")
def sessions() -> tuple[Any, Any]:
    return _session(lean=False), _session(lean=True)


@pytest.mark.parametrize("service", sorted(CALLS))
def test_every_region_resolves_as_stock_botocore(service: str, sessions: tuple[Any, Any]) -> None:
    stock, lean = sessions
    regions = _regions()
    assert "us-east-1" in regions and "cn-north-1" in regions and "us-gov-west-1" in regions
    compared = 0
    for region in regions:
        for fips in (False, True):
            for dualstack in (False, True):
                expected = _resolve(stock, service, region, fips, dualstack)
                if dualstack and expected[0] == "cannot create":
                    continue  # no dual-stack in that partition's legacy data
                got = _resolve(lean, service, region, fips, dualstack)
                assert got == expected, (service, region, fips, dualstack)
                compared += 1
    assert compared >= 3 * len(regions)


def test_the_agent_clients_never_parse_the_legacy_endpoint_table() -> None:
    clients = AwsClients(region="eu-west-1")
    loader = clients._boto_session().get_component("data_loader")
    parsed: list[str] = []
    original = loader.load_data_with_path

    def spy(name: str) -> Any:
        parsed.append(name)
        return original(name)

    loader.load_data_with_path = spy
    for service in CALLS:
        clients.client(service)
    assert "endpoints" in parsed  # asked for, and answered without the big table
    endpoints = loader.load_data("endpoints")
    assert all(p["services"] == {} for p in endpoints["partitions"])
    assert clients.client("greengrassv2").meta.endpoint_url == "https://greengrass.eu-west-1.amazonaws.com"

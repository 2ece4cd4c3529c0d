"""The project's own Lookout for Vision models must match the official 2020-11-20 model.

The official model comes from botocore 1.40.60 (installed into ``.cache`` by
``tests.support.oracle``). The project carries two copies of its own, each for the
operations its user needs: the agent's ``agent/aws/data/lookoutvision/2020-11-20``
(the five it calls) and the local world's ``localcloud/data/lookoutvision/2020-11-20``
(the seven the emulator serves and validates requests against). For every operation
either ships, the HTTP binding, the error list and every reachable shape (names, types,
members, locations, constraints, enums, traits) must be identical. Only documentation is
allowed to differ, and ours has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.loaders import Loader

from localcloud.validation import DATA_PATH as LOCALCLOUD_DATA_PATH
from tests.support.oracle import PROJECT_DATA_PATH

SERVICE = "lookoutvision"
API_VERSION = "2020-11-20"
SHIPPED_OPERATIONS = (
    "ListModels",
    "DescribeModel",
    "StartModelPackagingJob",
    "DescribeModelPackagingJob",
    "ListModelPackagingJobs",
)
EMULATED_OPERATIONS = ("ListProjects", "DescribeProject", *SHIPPED_OPERATIONS)
#: Each copy of our model: its data directory and the operations it must declare.
OUR_MODELS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "agent": (PROJECT_DATA_PATH, SHIPPED_OPERATIONS),
    "localcloud": (LOCALCLOUD_DATA_PATH, EMULATED_OPERATIONS),
}
# Keys that hold references to other shapes (compared by recursing) or prose.
_REFERENCE_KEYS = {"members", "member", "key", "value"}
_PROSE_KEYS = {"documentation", "documentationUrl"}


def _load(data_path: Path, type_name: str) -> dict[str, Any]:
    loader = Loader(extra_search_paths=[str(data_path)], include_default_search_paths=False)
    return loader.load_service_model(SERVICE, type_name, API_VERSION)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def official(oracle_data_path: Path) -> dict[str, Any]:
    return _load(oracle_data_path, "service-2")


@pytest.fixture(scope="module", params=sorted(OUR_MODELS))
def copy_name(request: pytest.FixtureRequest) -> str:
    """Which of our model copies a test checks."""
    return str(request.param)


@pytest.fixture(scope="module")
def ours(copy_name: str) -> dict[str, Any]:
    return _load(OUR_MODELS[copy_name][0], "service-2")


def _traits(node: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in skip and k not in _PROSE_KEYS}
    if "required" in out:
        out["required"] = sorted(out["required"])
    return out


def _compare_shape(
    ours: dict[str, Any],
    official: dict[str, Any],
    name_ours: str,
    name_official: str,
    path: str,
    seen: set[str],
    diffs: list[str],
) -> None:
    """Append every difference between two shapes (recursively) to ``diffs``."""
    if name_ours != name_official:
        diffs.append(f"{path}: shape name {name_ours!r} != official {name_official!r}")
    if name_official in seen:
        return
    seen.add(name_official)
    if name_ours not in ours["shapes"]:
        diffs.append(f"{path}: shape {name_ours!r} missing from our model")
        return
    mine = ours["shapes"][name_ours]
    theirs = official["shapes"][name_official]
    if _traits(mine, _REFERENCE_KEYS) != _traits(theirs, _REFERENCE_KEYS):
        diffs.append(
            f"{path} ({name_official}): {_traits(mine, _REFERENCE_KEYS)} != "
            f"official {_traits(theirs, _REFERENCE_KEYS)}"
        )
    if set(mine.get("members", {})) != set(theirs.get("members", {})):
        diffs.append(
            f"{path} ({name_official}): members {sorted(mine.get('members', {}))} != "
            f"official {sorted(theirs.get('members', {}))}"
        )
    children: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for member, ref in theirs.get("members", {}).items():
        if member in mine.get("members", {}):
            children.append((f"{path}.{member}", mine["members"][member], ref))
    for key in ("member", "key", "value"):
        if key in theirs or key in mine:
            if key not in theirs or key not in mine:
                diffs.append(f"{path} ({name_official}): {key!r} present in only one model")
                continue
            children.append((f"{path}[{key}]", mine[key], theirs[key]))
    for child_path, my_ref, their_ref in children:
        if _traits(my_ref, {"shape"}) != _traits(their_ref, {"shape"}):
            diffs.append(
                f"{child_path}: member traits {_traits(my_ref, {'shape'})} != "
                f"official {_traits(their_ref, {'shape'})}"
            )
        _compare_shape(ours, official, my_ref["shape"], their_ref["shape"], child_path, seen, diffs)


def test_we_ship_exactly_the_operations_used(copy_name: str, ours: dict[str, Any]) -> None:
    """The agent's model declares the five operations the agent calls, the local world's
    the seven the emulator serves, and neither any other."""
    assert sorted(ours["operations"]) == sorted(OUR_MODELS[copy_name][1])


def test_metadata_matches_official(ours: dict[str, Any], official: dict[str, Any]) -> None:
    """Protocol, API version, endpoint prefix, service id, signing and uid equal the official."""
    for key in (
        "apiVersion",
        "endpointPrefix",
        "protocol",
        "serviceId",
        "signatureVersion",
        "signingName",
        "uid",
    ):
        assert ours["metadata"][key] == official["metadata"][key], key
    assert ours["metadata"]["protocol"] == "rest-json"
    assert ours["metadata"]["serviceId"] == "LookoutVision"


@pytest.mark.parametrize(
    ("copy_name", "operation"),
    [(name, operation) for name, (_, ops) in sorted(OUR_MODELS.items()) for operation in ops],
    scope="module",
)
def test_operation_matches_official(
    operation: str, ours: dict[str, Any], official: dict[str, Any]
) -> None:
    """HTTP method/requestUri, input/output/error shapes and every reachable member
    (name, type, location, locationName, required, min/max/pattern, enum,
    idempotencyToken, error traits) are identical to the official model."""
    mine = ours["operations"][operation]
    theirs = official["operations"][operation]
    assert _traits(mine, {"input", "output", "errors"}) == _traits(
        theirs, {"input", "output", "errors"}
    )
    assert mine["http"] == theirs["http"]
    assert sorted(e["shape"] for e in mine["errors"]) == sorted(
        e["shape"] for e in theirs["errors"]
    )
    diffs: list[str] = []
    seen: set[str] = set()
    for key in ("input", "output"):
        assert (key in mine) == (key in theirs), key
        if key in theirs:
            _compare_shape(
                ours, official, mine[key]["shape"], theirs[key]["shape"], key, seen, diffs
            )
    for error in theirs["errors"]:
        _compare_shape(ours, official, error["shape"], error["shape"], "errors", seen, diffs)
    assert diffs == []


def test_client_token_is_an_idempotency_header(ours: dict[str, Any]) -> None:
    """StartModelPackagingJob's ClientToken is the X-Amzn-Client-Token header with the
    idempotencyToken trait, so botocore fills it in when the caller does not."""
    member = ours["shapes"]["StartModelPackagingJobRequest"]["members"]["ClientToken"]
    assert member == {
        "shape": "ClientToken",
        "idempotencyToken": True,
        "location": "header",
        "locationName": "X-Amzn-Client-Token",
    }


def test_every_shape_we_ship_is_used(ours: dict[str, Any]) -> None:
    """No orphan shapes: every shape is reachable from one of our operations."""
    reachable: set[str] = set()

    def visit(name: str) -> None:
        if name in reachable:
            return
        reachable.add(name)
        shape = ours["shapes"][name]
        for ref in shape.get("members", {}).values():
            visit(ref["shape"])
        for key in ("member", "key", "value"):
            if key in shape:
                visit(shape[key]["shape"])

    for operation in ours["operations"].values():
        for key in ("input", "output"):
            if key in operation:
                visit(operation[key]["shape"])
        for error in operation.get("errors", []):
            visit(error["shape"])
    assert sorted(set(ours["shapes"]) - reachable) == []


def test_our_model_has_no_documentation() -> None:
    """The project's model files carry facts only: no "documentation" key anywhere."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _PROSE_KEYS:
                    found.append(f"{where}.{key}")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    for data_path, _ in OUR_MODELS.values():
        for path in sorted((data_path / SERVICE / API_VERSION).glob("*.json")):
            walk(json.loads(path.read_text()), str(path.relative_to(data_path.parent)))
    assert found == []


def test_paginators_match_official(oracle_data_path: Path) -> None:
    """Our ListModels and ListModelPackagingJobs paginators equal the official ones,
    and we ship no paginator for an operation we do not ship."""
    mine = _load(PROJECT_DATA_PATH, "paginators-1")["pagination"]
    theirs = _load(oracle_data_path, "paginators-1")["pagination"]
    assert sorted(mine) == ["ListModelPackagingJobs", "ListModels"]
    for operation, config in mine.items():
        assert config == theirs[operation], operation

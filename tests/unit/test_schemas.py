"""The committed JSON Schema files match the models, and real messages validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from agent.coordination import Deployed, Failed, JobNews, Ready, Released
from agent.reporting.events import (
    AnnouncementCounts,
    Command,
    CommandName,
    CommandResponse,
    DeployedModel,
    ErrorInfo,
    HealthReport,
    PlatformReport,
    ResourceUse,
    StatusEvent,
    StatusPhase,
)
from agent.reporting.schemas import MESSAGE_SCHEMAS, export_schemas, render_schema, schema_filename

COMMITTED = Path(__file__).resolve().parents[2] / "schemas"


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((COMMITTED / schema_filename(name)).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("name", sorted(MESSAGE_SCHEMAS))
def test_committed_schema_equals_what_the_model_generates(name: str) -> None:
    """schemas/<name>.schema.json is byte-for-byte what the model generates now; a field
    added without re-running the export fails here."""
    committed = (COMMITTED / schema_filename(name)).read_text(encoding="utf-8")
    assert committed == render_schema(name, MESSAGE_SCHEMAS[name]), (
        f"schemas/{schema_filename(name)} is stale: run `python -m agent schemas schemas`"
    )


def test_no_stray_schema_files() -> None:
    """Every file in schemas/ belongs to a message in MESSAGE_SCHEMAS."""
    expected = {schema_filename(n) for n in MESSAGE_SCHEMAS}
    assert {p.name for p in COMMITTED.glob("*.schema.json")} == expected


def test_export_writes_sorted_keys_and_a_trailing_newline(tmp_path: Path) -> None:
    """export_schemas writes one file per message, sorted keys, ending in a newline."""
    paths = export_schemas(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(schema_filename(n) for n in MESSAGE_SCHEMAS)
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n") and not text.endswith("\n\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


BASE: dict[str, Any] = {
    "thing_name": "dev-1",
    "sequence": 12,
    "epoch": "0123456789abcdef",
    "timestamp": "2026-11-27T07:00:00.000+00:00",
}


def examples() -> list[tuple[str, bytes]]:
    """One or more real serialized messages of every kind."""
    error = ErrorInfo(type="ThrottledError", code="ThrottlingException", message="slow down")
    return [
        (
            "status",
            StatusEvent(
                **BASE,
                rollout_id=1,
                model_version=3,
                platform_key="x86-64-cpu",
                attempt=1,
                phase=StatusPhase.CHECKING,
            ).to_json(),
        ),
        (
            "status",
            StatusEvent(
                **BASE,
                rollout_id=2,
                model_version=3,
                platform_key="jetson-xavier",
                attempt=2,
                phase=StatusPhase.DEPLOYMENT_FAILED,
                job_name="p-j-v3-2",
                component_name="p.j",
                component_version="3.0.0",
                deployment_id="d-1",
                detail="rolled back",
                error=error,
            ).to_json(),
        ),
        (
            "platform",
            PlatformReport(
                **BASE,
                supported=True,
                platform={"os": "LINUX"},
                request={"TargetDevice": "jetson_xavier"},
            ).to_json(),
        ),
        ("platform", PlatformReport(**BASE, supported=False, error=error).to_json()),
        (
            "health",
            HealthReport(
                **BASE,
                agent_state="RUNNING",
                status="DEGRADED",
                uptime_seconds=12.5,
                deployed=DeployedModel(
                    model_version=3,
                    component_name="p.c",
                    component_version="3.0.0",
                    lifecycle_state="RUNNING",
                ),
                active_rollout={
                    "id": 4,
                    "modelVersion": 4,
                    "phase": "PACKAGING",
                    "jobName": "j",
                    "deploymentId": None,
                },
                last_successful_check="2026-11-27T06:59:00.000+00:00",
                last_error=error,
                resources=ResourceUse(
                    cpu_percent=1.5,
                    memory_rss_bytes=50_000_000,
                    disk_used_bytes=1,
                    disk_free_bytes=2,
                ),
                outbox_depth=3,
                announcements=AnnouncementCounts(
                    accepted=5, rejected=1, last_rejection="modelVersion: Input should be greater than or equal to 1"
                ),
            ).to_json(),
        ),
        (
            "command-response",
            CommandResponse(
                **BASE, id="c-1", outcome="ACCEPTED", detail="check requested"
            ).to_json(),
        ),
        (
            "command-response",
            CommandResponse(
                **BASE, id=None, outcome="REJECTED", detail="payload: not valid JSON"
            ).to_json(),
        ),
        ("command", json.dumps({"id": "c-1", "command": "check-now"}).encode()),
        *announcement_examples(),
        (
            "command",
            Command(id="d:2", command=CommandName.DEPLOY_VERSION, model_version=7)
            .model_dump_json(by_alias=True)
            .encode(),
        ),
    ]


ANNOUNCED: dict[str, Any] = {"thing_name": "dev-1", "sent_at": "2026-11-27T07:00:00.000+00:00", "model_version": 3}


def announcement_examples() -> list[tuple[str, bytes]]:
    """Every kind of fleet announcement, as a device sends it."""
    arn = "arn:aws:iot:us-east-1:123456789012:thinggroup/widgets-x86-wave-1"
    return [
        ("announcement-released", Released(**ANNOUNCED).to_json()),
        ("announcement-job", JobNews(**ANNOUNCED, platform="x86-64-cpu", job_name="w-x-v3-1", status="STARTED").to_json()),
        ("announcement-job", JobNews(**ANNOUNCED, platform="x86-64-cpu", job_name="w-x-v3-1", status="FAILED",
                                     reason="compilation failed").to_json()),
        ("announcement-ready", Ready(**ANNOUNCED, platform="x86-64-cpu", component_name="widgets.x86-64-cpu",
                                     component_version="3.0.0").to_json()),
        ("announcement-deployed", Deployed(**ANNOUNCED, platform="x86-64-cpu", wave=1, target_arn=arn,
                                           deployment_id="d-1").to_json()),
        ("announcement-failed", Failed(**ANNOUNCED, platform="x86-64-cpu").to_json()),
    ]


@pytest.mark.parametrize(("name", "payload"), examples())
def test_example_messages_validate_against_their_schema(name: str, payload: bytes) -> None:
    """Messages as the agent serializes them (and commands as an operator sends them)
    are valid under the committed JSON Schema, and round-trip through the model."""
    document = json.loads(payload)
    validator(name).validate(document)
    assert MESSAGE_SCHEMAS[name].model_validate(document) is not None


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("command", {"id": "c-1", "command": "reboot"}),
        ("command", {"id": "c 1", "command": "check-now"}),
        ("command", {"id": "c-1", "command": "check-now", "force": True}),
        ("command", {"id": "c-1", "command": "deploy-version", "modelVersion": 0}),
        (
            "command-response",
            {
                **json.loads(
                    CommandResponse(**BASE, id="x", outcome="FAILED", detail="d").to_json()
                ),
                "outcome": "MAYBE",
            },
        ),
        ("health", {**json.loads(examples()[4][1]), "status": "FINE"}),
        ("announcement-released", {k: v for k, v in json.loads(announcement_examples()[0][1]).items() if k != "kind"}),
        ("announcement-released", {**json.loads(announcement_examples()[0][1]), "schemaVersion": 2}),
        ("announcement-job", {**json.loads(announcement_examples()[1][1]), "status": "SUCCEEDED"}),
        ("announcement-ready", {**json.loads(announcement_examples()[3][1]), "componentVersion": "3.0"}),
        ("announcement-failed", {**json.loads(announcement_examples()[5][1]), "thingName": "a/b"}),
        ("status", {k: v for k, v in json.loads(examples()[0][1]).items() if k != "sequence"}),
    ],
)
def test_invalid_messages_fail_their_schema(name: str, document: dict[str, Any]) -> None:
    """The schemas are strict: unknown commands, bad ids, extra fields, out-of-range
    versions, unknown outcomes/statuses, missing fields (an announcement's kind too),
    another schema version and names that would break a topic are invalid."""
    with pytest.raises(jsonschema.ValidationError):
        validator(name).validate(document)

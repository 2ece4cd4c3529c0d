"""scripts/publish against the local world over HTTP, run as the user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent
from localcloud.server import WorldServer
from localcloud.world import World

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "publish"
BUCKET = "l4v-agent-artifacts"
COMPONENT = "l4v.edge.Agent"
VERSION = agent.__version__
WHEEL = f"l4v_edge_agent-{VERSION}-py3-none-any.whl"
KEY = f"l4v-edge-agent/{VERSION}/{WHEEL}"
PUBLISHER_KEY = "AKIDPUBLISHERTEST"


@pytest.fixture
def server(world: World) -> Iterator[WorldServer]:
    """The world on http://127.0.0.1:PORT, with the artifact bucket created."""
    world.client("s3").create_bucket(Bucket=BUCKET)
    with WorldServer(world) as running:
        yield running


def run_publish(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The script in a child process with test credentials and no AWS configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=PUBLISHER_KEY,
        AWS_SECRET_ACCESS_KEY="publisher-secret",
        AWS_CONFIG_FILE=str(cwd / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(cwd / "no-aws-credentials"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def published_recipe(world: World, arn: str) -> dict[str, Any]:
    answer = world.client("greengrassv2").get_component(arn=arn, recipeOutputFormat="JSON")
    recipe = json.loads(answer["recipe"])  # boto3 has already decoded the blob
    assert isinstance(recipe, dict)
    return recipe


def test_publish_uploads_the_wheel_and_registers_the_component_once(
    world: World, server: WorldServer, tmp_path: Path
) -> None:
    """A first publish builds the wheel, puts it at s3://BUCKET/l4v-edge-agent/<version>/,
    registers l4v.edge.Agent with the bucket filled into every manifest and prints the
    ARN; a second publish of the same version fails with a clear "already exists"
    (ConflictException) error and leaves the uploaded wheel untouched."""
    first = run_publish(
        "--bucket", BUCKET, "--region", "us-east-1", "--endpoint-url", server.url, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    arn = first.stdout.strip().splitlines()[-1]
    assert arn == world.arn("greengrass", f"components:{COMPONENT}:versions:{VERSION}")

    s3 = world.client("s3")
    stored = s3.get_object(Bucket=BUCKET, Key=KEY)
    wheel_path = tmp_path / WHEEL
    wheel_path.write_bytes(stored["Body"].read())
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
    assert "agent/__init__.py" in names
    assert "agent/aws/data/lookoutvision/2020-11-20/service-2.json" in names

    recipe = published_recipe(world, arn)
    assert recipe["ComponentVersion"] == VERSION
    uris = [a["URI"] for m in recipe["Manifests"] for a in m["Artifacts"]]
    assert uris and set(uris) == {f"s3://{BUCKET}/{KEY}"}
    assert all(WHEEL in m["Lifecycle"]["Install"]["Script"] for m in recipe["Manifests"])
    assert "ARTIFACT_BUCKET" not in json.dumps(recipe)

    signed = {
        f"{c.service}:{c.operation}" for c in world.calls.calls if c.access_key == PUBLISHER_KEY
    }
    assert {"s3:PutObject", "greengrass:CreateComponentVersion"} <= signed

    etag = stored["ETag"]
    second = run_publish(
        "--bucket", BUCKET, "--region", "us-east-1", "--endpoint-url", server.url, cwd=tmp_path
    )
    assert second.returncode == 1
    assert second.stdout == ""
    assert "already exists" in second.stderr
    assert "ConflictException" in second.stderr
    assert f"{COMPONENT} {VERSION}" in second.stderr
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"] == etag
    creates = [c for c in world.calls.calls if c.operation == "CreateComponentVersion"]
    assert len(creates) == 1


def test_build_only_writes_the_gdk_layout_without_calling_aws(world: World, tmp_path: Path) -> None:
    """--build-only --gdk (what gdk-config.json runs) writes the wheel under
    artifacts/l4v.edge.Agent/<version>/ and the recipe under recipes/, with the artifact
    URI in the GDK's BUCKET_NAME form, and makes no AWS call."""
    build_dir = tmp_path / "greengrass-build"
    done = run_publish("--build-only", "--gdk", "--build-dir", str(build_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    artifacts = build_dir / "artifacts" / COMPONENT / VERSION
    assert [p.name for p in artifacts.iterdir()] == [WHEEL]
    recipe = json.loads((build_dir / "recipes" / f"{COMPONENT}.json").read_text())
    uris = {a["URI"] for m in recipe["Manifests"] for a in m["Artifacts"]}
    assert uris == {f"s3://BUCKET_NAME/{COMPONENT}/{VERSION}/{WHEEL}"}
    assert world.calls.calls == []


def test_dry_run_and_bad_usage_call_nothing(world: World, tmp_path: Path) -> None:
    """--dry-run prints the plan and the filled-in recipe without building or calling;
    publishing without a bucket is a usage error (exit 2)."""
    dry = run_publish("--dry-run", "--bucket", BUCKET, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"s3://{BUCKET}/{KEY}" in dry.stdout
    assert f'"URI": "s3://{BUCKET}/{KEY}"' in dry.stdout
    missing = run_publish("--region", "us-east-1", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--bucket is required" in missing.stderr
    assert world.calls.calls == []
    assert not any(tmp_path.iterdir())

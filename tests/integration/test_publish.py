"""scripts/publish against the local world over HTTP, run as the user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

import agent
from localcloud.server import WorldServer
from localcloud.world import World

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "publish"
BUCKET = "l4v-agent-artifacts"
COMPONENT = "l4v.edge.Agent"
VERSION = agent.__version__
WHEEL = f"l4v_edge_agent-{VERSION}-py3-none-any.whl"
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
AGENT_LOCK = ROOT / "requirements" / "agent.lock"
GREENGRASS_ARCH = {"aarch64": "aarch64", "x86_64": "amd64"}


def wheelhouse(arch: str) -> str:
    return f"l4v-edge-agent-{VERSION}-linux-{arch}.zip"


def key(arch: str) -> str:
    return f"l4v-edge-agent/{VERSION}/{wheelhouse(arch)}"


PUBLISHER_KEY = "AKIDPUBLISHERTEST"
#: Building wheelhouses downloads (or takes from pip's cache) every locked wheel for each
#: platform and Python: minutes on a busy machine, not seconds.
BUILD_TIMEOUT = 540


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
        timeout=BUILD_TIMEOUT,
        check=False,
    )


def published_recipe(world: World, arn: str) -> dict[str, Any]:
    answer = world.client("greengrassv2").get_component(arn=arn, recipeOutputFormat="JSON")
    recipe = json.loads(answer["recipe"])  # boto3 has already decoded the blob
    assert isinstance(recipe, dict)
    return recipe


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", AGENT_LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def check_wheelhouse(path: Path, arch: str, pythons: tuple[str, ...]) -> None:
    """The zip holds install.py, a manifest for ``arch``/``pythons``, the agent's wheel and,
    for every Python, one installable wheel of every locked package at its locked
    version, and requirements.txt lists a sha256 for every wheel in it."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("wheelhouse.json"))
        requirements = archive.read("requirements.txt").decode()
        digests = {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in names
            if name.endswith(".whl")
        }
    assert {"install.py", "wheelhouse.json", "requirements.txt", f"wheels/{WHEEL}"} <= names
    assert manifest == {
        "component": COMPONENT,
        "version": VERSION,
        "architecture": arch,
        "pythons": list(pythons),
        "lockSha256": hashlib.sha256(AGENT_LOCK.read_bytes()).hexdigest(),
    }
    assert requirements.startswith(AGENT_LOCK.read_text().rstrip())
    assert f"l4v-edge-agent=={VERSION}" in requirements
    for name, digest in digests.items():
        assert f"--hash=sha256:{digest}" in requirements, f"{name} is not in requirements.txt"
    wheels = [parse_wheel_filename(Path(name).name) for name in digests]
    platforms = [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}"]
    for python in pythons:
        version = tuple(int(part) for part in python.split("."))
        supported = {
            *cpython_tags(version, platforms=platforms),
            *compatible_tags(version, platforms=platforms),
        }
        for package, locked in _locked().items():
            fitting = [
                w for w in wheels if w[0] == package and str(w[1]) == locked and w[3] & supported
            ]
            assert fitting, f"no {package}=={locked} wheel for Python {python} on {arch}"


@pytest.mark.slow
@pytest.mark.timeout(2 * BUILD_TIMEOUT)
def test_publish_uploads_the_wheelhouse_and_registers_the_component_once(
    world: World, server: WorldServer, tmp_path: Path
) -> None:
    """A first publish for aarch64 and Python 3.12 (built on this machine whatever its
    own platform) puts the wheelhouse at s3://BUCKET/l4v-edge-agent/<version>/, registers
    l4v.edge.Agent with only the aarch64 manifest, pointing at it, and prints the ARN; a
    second publish of the same version fails with a clear "already exists"
    (ConflictException) error and leaves the uploaded wheelhouse untouched."""
    limits = ("--arch", "aarch64", "--python", "3.12")
    first = run_publish(
        "--bucket", BUCKET, "--region", "us-east-1", "--endpoint-url", server.url, *limits,
        cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    arn = first.stdout.strip().splitlines()[-1]
    assert arn == world.arn("greengrass", f"components:{COMPONENT}:versions:{VERSION}")

    s3 = world.client("s3")
    stored = s3.get_object(Bucket=BUCKET, Key=key("aarch64"))
    zip_path = tmp_path / wheelhouse("aarch64")
    zip_path.write_bytes(stored["Body"].read())
    check_wheelhouse(zip_path, "aarch64", ("3.12",))
    with zipfile.ZipFile(zip_path) as archive:
        (tmp_path / WHEEL).write_bytes(archive.read(f"wheels/{WHEEL}"))
    with zipfile.ZipFile(tmp_path / WHEEL) as wheel:
        names = wheel.namelist()
    assert "agent/__init__.py" in names
    assert "agent/aws/data/lookoutvision/2020-11-20/service-2.json" in names

    recipe = published_recipe(world, arn)
    assert recipe["ComponentVersion"] == VERSION
    [manifest] = recipe["Manifests"]
    assert manifest["Platform"] == {"os": "linux", "architecture": "aarch64"}
    assert manifest["Artifacts"] == [{"URI": f"s3://{BUCKET}/{key('aarch64')}", "Unarchive": "ZIP"}]
    stem = wheelhouse("aarch64").removesuffix(".zip")
    assert (
        f"{{artifacts:decompressedPath}}/{stem}/install.py"
        in (manifest["Lifecycle"]["Install"]["Script"])
    )
    assert "ARTIFACT_BUCKET" not in json.dumps(recipe)

    signed = {
        f"{c.service}:{c.operation}" for c in world.calls.calls if c.access_key == PUBLISHER_KEY
    }
    assert {"s3:PutObject", "greengrass:CreateComponentVersion"} <= signed

    etag = stored["ETag"]
    second = run_publish(
        "--bucket", BUCKET, "--region", "us-east-1", "--endpoint-url", server.url, *limits,
        cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 1
    assert second.stdout == ""
    assert "already exists" in second.stderr
    assert "ConflictException" in second.stderr
    assert f"{COMPONENT} {VERSION}" in second.stderr
    assert s3.head_object(Bucket=BUCKET, Key=key("aarch64"))["ETag"] == etag
    creates = [c for c in world.calls.calls if c.operation == "CreateComponentVersion"]
    assert len(creates) == 1


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_build_only_writes_the_gdk_layout_without_calling_aws(world: World, tmp_path: Path) -> None:
    """--build-only --gdk (what gdk-config.json runs) writes a complete wheelhouse for
    linux aarch64 and x86_64 (every locked package for Python 3.10 to 3.14) under
    artifacts/l4v.edge.Agent/<version>/ and the recipe under recipes/, each manifest's
    artifact URI its own wheelhouse in the GDK's BUCKET_NAME form, and makes no AWS call."""
    build_dir = tmp_path / "greengrass-build"
    done = run_publish("--build-only", "--gdk", "--build-dir", str(build_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    artifacts = build_dir / "artifacts" / COMPONENT / VERSION
    assert sorted(p.name for p in artifacts.iterdir()) == [
        wheelhouse("aarch64"),
        wheelhouse("x86_64"),
    ]
    for arch in GREENGRASS_ARCH:
        check_wheelhouse(artifacts / wheelhouse(arch), arch, PYTHONS)
    recipe = json.loads((build_dir / "recipes" / f"{COMPONENT}.json").read_text())
    uris = {
        m["Platform"]["architecture"]: [a["URI"] for a in m["Artifacts"]]
        for m in recipe["Manifests"]
    }
    assert uris == {
        GREENGRASS_ARCH[arch]: [f"s3://BUCKET_NAME/{COMPONENT}/{VERSION}/{wheelhouse(arch)}"]
        for arch in GREENGRASS_ARCH
    }
    assert world.calls.calls == []


def test_dry_run_and_bad_usage_call_nothing(world: World, tmp_path: Path) -> None:
    """--dry-run prints the plan and the filled-in recipe without building or calling;
    publishing without a bucket is a usage error (exit 2), and so is a platform or a
    Python version there are no wheelhouses for."""
    dry = run_publish("--dry-run", "--bucket", BUCKET, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    for arch in GREENGRASS_ARCH:
        assert f"s3://{BUCKET}/{key(arch)}" in dry.stdout
        assert f'"URI": "s3://{BUCKET}/{key(arch)}"' in dry.stdout
    assert "Python 3.10, 3.11, 3.12, 3.13, 3.14" in dry.stdout
    for bad in (["--arch", "armv7l"], ["--python", "3.9"]):
        refused = run_publish("--dry-run", "--bucket", BUCKET, *bad, cwd=tmp_path)
        assert refused.returncode == 2
        assert f"invalid choice: '{bad[1]}'" in refused.stderr
    missing = run_publish("--region", "us-east-1", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--bucket is required" in missing.stderr
    assert world.calls.calls == []
    assert not any(tmp_path.iterdir())

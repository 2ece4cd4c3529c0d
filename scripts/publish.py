"""Build the agent's wheel and publish it as the Greengrass component ``l4v.edge.Agent``.

    scripts/publish --bucket BUCKET [--region R] [--endpoint-url URL]
    scripts/publish --build-only [--gdk] [--bucket BUCKET] [--build-dir DIR]
    scripts/publish --dry-run --bucket BUCKET

Publishing builds the wheel (``pip wheel --no-deps`` of a clean copy of the sources),
uploads it to ``s3://BUCKET/l4v-edge-agent/<version>/<wheel>``, fills the bucket and
version into ``recipes/l4v.edge.Agent.json`` and calls CreateComponentVersion with the
inline recipe; the component version ARN is printed on stdout. Component versions are
immutable: an existing version is reported before anything is uploaded, so an artifact
that a published version points at is never overwritten.

``--build-only`` writes what the Greengrass Development Kit expects from a custom
build: ``greengrass-build/artifacts/l4v.edge.Agent/<version>/<wheel>`` and
``greengrass-build/recipes/l4v.edge.Agent.json``. With ``--gdk`` the artifact URI is
``s3://BUCKET_NAME/l4v.edge.Agent/<version>/<wheel>``, where ``gdk component publish``
uploads the artifact and whose ``BUCKET_NAME`` it fills in.

``--endpoint-url`` applies to S3, Greengrass V2 and STS; without it botocore's own
resolution applies (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ...). Exit codes:
0 done, 1 an AWS call or the build failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE_PATH = ROOT / "recipes" / "l4v.edge.Agent.json"
COMPONENT = "l4v.edge.Agent"
DISTRIBUTION = "l4v_edge_agent"
KEY_PREFIX = "l4v-edge-agent"
PLACEHOLDER_BUCKET = "ARTIFACT_BUCKET"
GDK_BUCKET = "BUCKET_NAME"
#: Top-level entries of the repository that never go into the build copy.
_NOT_SOURCES = {"build", "dist", "greengrass-build", "bench-results", "state"}
_WHEEL_IN_SCRIPT = re.compile(rf"{DISTRIBUTION}-[^/\s]+\.whl")


class PublishError(Exception):
    """A failure with a message meant for the person running the script."""


@dataclass(frozen=True)
class Plan:
    version: str
    wheel_name: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


# -- version and recipe -------------------------------------------------------------------
def package_version(root: Path = ROOT) -> str:
    """The version from pyproject.toml, which must equal ``agent.__version__``."""
    pyproject = (root / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[-1].split("\n[", 1)[0]
    found = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
    declared = re.search(
        r'^__version__\s*=\s*"([^"]+)"', (root / "agent" / "__init__.py").read_text(), re.MULTILINE
    )
    if found is None or declared is None:
        raise PublishError("cannot read the version from pyproject.toml and agent/__init__.py")
    if found.group(1) != declared.group(1):
        raise PublishError(
            f"pyproject.toml says {found.group(1)} but agent/__init__.py says "
            f"{declared.group(1)}; make them equal"
        )
    return found.group(1)


def wheel_name(version: str) -> str:
    return f"{DISTRIBUTION}-{version}-py3-none-any.whl"


def render_recipe(recipe: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """A copy of ``recipe`` for this version whose artifacts point at ``plan.uri``."""
    rendered: dict[str, Any] = json.loads(json.dumps(recipe))
    if rendered.get("ComponentName") != COMPONENT:
        raise PublishError(f"{RECIPE_PATH.name}: ComponentName must be {COMPONENT}")
    rendered["ComponentVersion"] = plan.version
    for manifest in rendered.get("Manifests", []):
        artifacts = manifest.get("Artifacts") or []
        if len(artifacts) != 1:
            raise PublishError("every manifest must have exactly one artifact (the wheel)")
        artifacts[0]["URI"] = plan.uri
        for step in (manifest.get("Lifecycle") or {}).values():
            if isinstance(step, dict) and isinstance(step.get("Script"), str):
                step["Script"] = _WHEEL_IN_SCRIPT.sub(plan.wheel_name, step["Script"])
    return rendered


# -- building -----------------------------------------------------------------------------
def _ignore_for_copy(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(directory) == ROOT:
        skipped |= {n for n in names if n.startswith(".") or n in _NOT_SOURCES}
    return skipped


def build_wheel(out_dir: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the sources (no stale build/ in the tree)."""
    with tempfile.TemporaryDirectory(prefix="l4v-publish-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(ROOT, source, symlinks=True, ignore=_ignore_for_copy)
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(out_dir),
            ".",
        ]
        done = subprocess.run(command, cwd=source, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PublishError(f"building the wheel failed:\n{done.stderr.strip()}")
    wheels = sorted(out_dir.glob(f"{DISTRIBUTION}-*.whl"))
    if len(wheels) != 1:
        raise PublishError(f"expected one {DISTRIBUTION} wheel in {out_dir}, found {len(wheels)}")
    return wheels[0]


def _checked_wheel(path: Path, expected_name: str) -> Path:
    if not path.is_file():
        raise PublishError(f"--wheel {path}: no such file")
    if path.name != expected_name:
        raise PublishError(f"--wheel {path.name}: expected {expected_name} for this version")
    return path


# -- AWS ----------------------------------------------------------------------------------
class Cloud:
    """The three clients publishing needs, sharing one session and endpoint choice."""

    def __init__(self, region: str, endpoint_url: str | None) -> None:
        import boto3
        from botocore.config import Config

        self._session = boto3.Session(region_name=region)
        self._endpoint_url = endpoint_url
        custom_s3 = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        # A custom endpoint (an S3-compatible store, a local emulator) rarely serves
        # virtual-hosted bucket names.
        s3_config = Config(s3={"addressing_style": "path"}) if custom_s3 else None
        self.s3 = self._client("s3", config=s3_config)
        self.greengrass = self._client("greengrassv2")
        self.sts = self._client("sts")

    def partition(self, region: str) -> str:
        return str(self._session.get_partition_for_region(region))

    def _client(self, service: str, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return self._session.client(service, endpoint_url=self._endpoint_url, **kwargs)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or type(exc).__name__)


def _already_exists(version_arn: str, plan: Plan, *, uploaded: bool) -> PublishError:
    upload = (
        f"{plan.uri} was uploaded by this run (someone published concurrently)"
        if uploaded
        else "Nothing was uploaded"
    )
    return PublishError(
        f"{COMPONENT} {plan.version} already exists ({version_arn}); component versions are "
        f"immutable and Greengrass answers ConflictException. {upload}: raise the version in "
        "pyproject.toml, agent/__init__.py and the recipe, then publish again"
    )


def publish(cloud: Cloud, plan: Plan, recipe: dict[str, Any], wheel: Path | None) -> str:
    """Upload and register; returns the component version ARN."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        account = cloud.sts.get_caller_identity()["Account"]
        region = cloud.greengrass.meta.region_name
        partition = cloud.partition(region)
        version_arn = (
            f"arn:{partition}:greengrass:{region}:{account}:components:{COMPONENT}"
            f":versions:{plan.version}"
        )
        try:
            cloud.greengrass.describe_component(arn=version_arn)
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
        else:
            raise _already_exists(version_arn, plan, uploaded=False)

        with tempfile.TemporaryDirectory(prefix="l4v-wheel-") as out:
            built = wheel or build_wheel(Path(out))
            if built.name != plan.wheel_name:
                raise PublishError(f"built {built.name}, expected {plan.wheel_name}")
            cloud.s3.upload_file(str(built), plan.bucket, plan.key)

        try:
            answer = cloud.greengrass.create_component_version(
                inlineRecipe=json.dumps(recipe, indent=2).encode()
            )
        except ClientError as exc:
            if _error_code(exc) == "ConflictException":
                raise _already_exists(version_arn, plan, uploaded=True) from exc
            raise
    except (ClientError, BotoCoreError) as exc:
        raise PublishError(f"{_error_code(exc)}: {exc}") from exc
    return str(answer["arn"])


def build_only(plan: Plan, recipe: dict[str, Any], wheel: Path | None, build_dir: Path) -> Path:
    """Write the GDK layout; returns the recipe path."""
    artifacts = build_dir / "artifacts" / COMPONENT / plan.version
    recipes = build_dir / "recipes"
    artifacts.mkdir(parents=True, exist_ok=True)
    recipes.mkdir(parents=True, exist_ok=True)
    for stale in artifacts.glob(f"{DISTRIBUTION}-*.whl"):
        stale.unlink()
    if wheel is not None:
        shutil.copy2(wheel, artifacts / wheel.name)
    else:
        build_wheel(artifacts)
    target = recipes / f"{COMPONENT}.json"
    target.write_text(json.dumps(recipe, indent=2) + "\n")
    return target


# -- command line -------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/publish",
        description="Build the agent wheel and publish the l4v.edge.Agent Greengrass component.",
    )
    parser.add_argument("--bucket", help="S3 bucket for the wheel (same Region as Greengrass)")
    parser.add_argument("--region", help="AWS Region (default: $AWS_REGION or $AWS_DEFAULT_REGION)")
    parser.add_argument(
        "--endpoint-url", help="endpoint for S3, Greengrass V2 and STS (e.g. a local emulator)"
    )
    parser.add_argument(
        "--build-only", action="store_true", help="write greengrass-build/ and call nothing"
    )
    parser.add_argument(
        "--gdk",
        action="store_true",
        help="with --build-only: artifact URI in the GDK's BUCKET_NAME form",
    )
    parser.add_argument(
        "--build-dir", type=Path, default=ROOT / "greengrass-build", help="for --build-only"
    )
    parser.add_argument("--wheel", type=Path, help="use this wheel instead of building one")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be done; build and call nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.gdk and not args.build_only:
        parser.error("--gdk only applies to --build-only")
    if args.gdk and args.bucket:
        parser.error("--gdk leaves the bucket to `gdk component publish`; drop --bucket")
    region: str = (
        args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    )
    if not args.build_only and not args.bucket:
        parser.error("--bucket is required (or use --build-only)")
    if not args.build_only and not args.dry_run and not region:
        parser.error("--region is required (or set AWS_REGION)")
    try:
        version = package_version()
        name = wheel_name(version)
        wheel = _checked_wheel(args.wheel, name) if args.wheel else None
        if args.gdk:
            plan = Plan(version, name, GDK_BUCKET, f"{COMPONENT}/{version}/{name}")
        else:
            bucket = args.bucket or PLACEHOLDER_BUCKET
            plan = Plan(version, name, bucket, f"{KEY_PREFIX}/{version}/{name}")
        recipe = render_recipe(json.loads(RECIPE_PATH.read_text()), plan)

        if args.dry_run:
            action = f"write {args.build_dir}" if args.build_only else "upload and register"
            print(f"dry run: would {action}: {COMPONENT} {version}, artifact {plan.uri}")
            print(json.dumps(recipe, indent=2))
            return 0
        if args.build_only:
            target = build_only(plan, recipe, wheel, args.build_dir)
            print(f"wrote {target} and {target.parent.parent / 'artifacts' / COMPONENT / version}")
            return 0
        arn = publish(Cloud(region, args.endpoint_url), plan, recipe, wheel)
    except PublishError as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 1
    print(arn)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

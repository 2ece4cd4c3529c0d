"""Build the agent's wheelhouses and publish them as the Greengrass component ``l4v.edge.Agent``.

    scripts/publish --bucket BUCKET [--region R] [--endpoint-url URL] [--arch A] [--python X.Y]
    scripts/publish --build-only [--gdk] [--bucket BUCKET] [--build-dir DIR]
    scripts/publish --dry-run --bucket BUCKET

The artifact of each platform (linux ``aarch64`` and ``x86_64``) is a **wheelhouse**, a
zip ``l4v-edge-agent-<version>-linux-<arch>.zip`` holding the agent's wheel (``pip wheel
--no-deps`` of a clean copy of the sources), the wheel of every dependency at exactly the
versions of ``requirements/agent.lock`` for every supported Python (``pip download
--only-binary=:all: --require-hashes`` for that platform), ``requirements.txt`` (the lock
plus the agent's wheel, each with its sha256), ``wheelhouse.json`` and ``install.py``
(scripts/device_install.py), which the recipe's Install step runs: the device installs
offline. ``--arch``/``--python`` (repeatable) limit what is built; a recipe then only
has the manifests of the architectures built.

Publishing uploads the wheelhouses to ``s3://BUCKET/l4v-edge-agent/<version>/``, fills
the bucket and version into ``recipes/l4v.edge.Agent.json`` and calls
CreateComponentVersion with the inline recipe; the component version ARN is printed on
stdout. Component versions are immutable: an existing version is reported before
anything is uploaded, so an artifact that a published version points at is never
overwritten.

``--build-only`` writes what the Greengrass Development Kit expects from a custom
build: ``greengrass-build/artifacts/l4v.edge.Agent/<version>/<wheelhouse>.zip`` and
``greengrass-build/recipes/l4v.edge.Agent.json``. With ``--gdk`` the artifact URIs are
``s3://BUCKET_NAME/l4v.edge.Agent/<version>/<wheelhouse>.zip``, where ``gdk component
publish`` uploads the artifacts and whose ``BUCKET_NAME`` it fills in.

``--endpoint-url`` applies to S3, Greengrass V2 and STS; without it botocore's own
resolution applies (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ...). Exit codes:
0 done, 1 an AWS call or the build failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE_PATH = ROOT / "recipes" / "l4v.edge.Agent.json"
LOCK_PATH = ROOT / "requirements" / "agent.lock"
INSTALLER_PATH = ROOT / "scripts" / "device_install.py"
COMPONENT = "l4v.edge.Agent"
DISTRIBUTION = "l4v_edge_agent"
PROJECT_NAME = "l4v-edge-agent"
KEY_PREFIX = "l4v-edge-agent"
PLACEHOLDER_BUCKET = "ARTIFACT_BUCKET"
GDK_BUCKET = "BUCKET_NAME"
#: Top-level entries of the repository that never go into the build copy.
_NOT_SOURCES = {"build", "dist", "greengrass-build", "bench-results", "state"}
#: Python versions every wheelhouse has wheels for (the recipe refuses any other).
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
#: Wheelhouse architecture -> Greengrass' name in a manifest's Platform.
ARCHITECTURES = {"aarch64": "aarch64", "x86_64": "amd64"}
#: The glibc a device needs: manylinux wheels up to manylinux_2_17 (glibc 2.17, 2012).
_PIP_PLATFORMS = ("manylinux2014_{arch}", "manylinux_2_17_{arch}")
_WHEELHOUSE_IN_SCRIPT = re.compile(
    rf"{KEY_PREFIX}-[0-9][^/\s]*-linux-(?P<arch>{'|'.join(ARCHITECTURES)})"
)


class PublishError(Exception):
    """A failure with a message meant for the person running the script."""


@dataclass(frozen=True)
class Plan:
    version: str
    bucket: str
    #: S3 key prefix (no trailing slash) of the version's artifacts.
    prefix: str
    architectures: tuple[str, ...] = tuple(ARCHITECTURES)
    pythons: tuple[str, ...] = SUPPORTED_PYTHONS

    def artifact(self, arch: str) -> str:
        """The wheelhouse's file name for ``arch``."""
        return f"{wheelhouse_stem(self.version, arch)}.zip"

    def key(self, arch: str) -> str:
        return f"{self.prefix}/{self.artifact(arch)}"

    def uri(self, arch: str) -> str:
        return f"s3://{self.bucket}/{self.key(arch)}"


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


def wheelhouse_stem(version: str, arch: str) -> str:
    """The wheelhouse's name without ``.zip``: the folder Greengrass unpacks it into."""
    return f"{KEY_PREFIX}-{version}-linux-{arch}"


def _manifest_arch(manifest: dict[str, Any]) -> str:
    platform = manifest.get("Platform") or {}
    for arch, greengrass_arch in ARCHITECTURES.items():
        if platform == {"os": "linux", "architecture": greengrass_arch}:
            return arch
    raise PublishError(f"{RECIPE_PATH.name}: no wheelhouse for the manifest platform {platform}")


def render_recipe(recipe: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """A copy of ``recipe`` for this version with the manifests of ``plan.architectures``,
    each pointing at its wheelhouse."""
    rendered: dict[str, Any] = json.loads(json.dumps(recipe))
    if rendered.get("ComponentName") != COMPONENT:
        raise PublishError(f"{RECIPE_PATH.name}: ComponentName must be {COMPONENT}")
    rendered["ComponentVersion"] = plan.version
    manifests = []
    for manifest in rendered.get("Manifests", []):
        arch = _manifest_arch(manifest)
        if arch not in plan.architectures:
            continue
        artifacts = manifest.get("Artifacts") or []
        if len(artifacts) != 1:
            raise PublishError("every manifest must have exactly one artifact (its wheelhouse)")
        artifacts[0]["URI"] = plan.uri(arch)
        artifacts[0]["Unarchive"] = "ZIP"
        stem = wheelhouse_stem(plan.version, arch)
        for step in (manifest.get("Lifecycle") or {}).values():
            if isinstance(step, dict) and isinstance(step.get("Script"), str):
                if any(m["arch"] != arch for m in _WHEELHOUSE_IN_SCRIPT.finditer(step["Script"])):
                    raise PublishError(f"the {arch} manifest names another platform's wheelhouse")
                step["Script"] = _WHEELHOUSE_IN_SCRIPT.sub(stem, step["Script"])
        manifests.append(manifest)
    if not manifests:
        raise PublishError(
            f"{RECIPE_PATH.name} has no manifest for {', '.join(plan.architectures)}"
        )
    rendered["Manifests"] = manifests
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


def locked_requirements(lock: Path = LOCK_PATH) -> str:
    """The device lock's text; it must pin one version of everything, with hashes."""
    text = lock.read_text()
    entries = [line for line in text.splitlines() if line and not line[0].isspace()]
    entries = [line for line in entries if not line.startswith("#")]
    if not entries:
        raise PublishError(f"{lock.name}: no requirements; run scripts/lock")
    for line in entries:
        requirement = line.rstrip(" \\")
        if ";" in line or "==" not in line:
            raise PublishError(
                f"{lock.name}: {requirement!r}: a device lock pins one version for every "
                "platform and Python (no environment markers); see scripts/lock"
            )
    if "--hash=sha256:" not in text:
        raise PublishError(f"{lock.name}: no hashes; run scripts/lock")
    return text


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pip_download(arch: str, python: str, lock: Path, wheels: Path) -> None:
    platforms = [arg for tag in _PIP_PLATFORMS for arg in ("--platform", tag.format(arch=arch))]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--require-hashes", *platforms,
        "--implementation", "cp", "--python-version", python,
        "-d", str(wheels), "-r", str(lock),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = "\n".join(
            line for line in done.stderr.splitlines() if not line.startswith("WARNING:")
        )
        raise PublishError(
            f"downloading the linux/{arch} wheels for Python {python} failed:\n{errors.strip()}"
        )


def build_wheelhouse(plan: Plan, arch: str, agent_wheel: Path, out_dir: Path) -> Path:
    """The zip of the agent's wheel, every locked dependency's wheels for ``arch`` and
    ``plan.pythons``, ``requirements.txt``, ``wheelhouse.json`` and ``install.py``."""
    lock_text = locked_requirements()
    with tempfile.TemporaryDirectory(prefix="l4v-wheelhouse-") as scratch:
        staging = Path(scratch)
        wheels = staging / "wheels"
        wheels.mkdir()
        lock = staging / "agent.lock"
        lock.write_text(lock_text)
        for python in plan.pythons:
            _pip_download(arch, python, lock, wheels)
        shutil.copy2(agent_wheel, wheels / agent_wheel.name)
        agent_line = (
            f"{PROJECT_NAME}=={plan.version} \\\n    --hash=sha256:{_sha256(agent_wheel)}\n"
        )
        (staging / "requirements.txt").write_text(
            f"{lock_text.rstrip()}\n# The agent itself, built by scripts/publish.\n{agent_line}"
        )
        manifest = {
            "component": COMPONENT,
            "version": plan.version,
            "architecture": arch,
            "pythons": list(plan.pythons),
            "lockSha256": _sha256(LOCK_PATH),
        }
        (staging / "wheelhouse.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.copy2(INSTALLER_PATH, staging / "install.py")
        lock.unlink()
        target = out_dir / plan.artifact(arch)
        with zipfile.ZipFile(target, "w") as archive:
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    # Wheels are zips already: store them, deflate the text files.
                    kind = zipfile.ZIP_STORED if path.suffix == ".whl" else zipfile.ZIP_DEFLATED
                    archive.write(path, path.relative_to(staging).as_posix(), compress_type=kind)
    return target


def build_wheelhouses(plan: Plan, wheel: Path | None, out_dir: Path) -> list[Path]:
    """One wheelhouse per architecture of ``plan`` in ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="l4v-wheel-") as scratch:
        agent_wheel = wheel or build_wheel(Path(scratch))
        if agent_wheel.name != wheel_name(plan.version):
            raise PublishError(f"built {agent_wheel.name}, expected {wheel_name(plan.version)}")
        return [build_wheelhouse(plan, arch, agent_wheel, out_dir) for arch in plan.architectures]


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
        f"s3://{plan.bucket}/{plan.prefix}/ was uploaded by this run (someone published "
        "concurrently)"
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

        with tempfile.TemporaryDirectory(prefix="l4v-wheelhouses-") as out:
            for arch, built in zip(
                plan.architectures, build_wheelhouses(plan, wheel, Path(out)), strict=True
            ):
                cloud.s3.upload_file(str(built), plan.bucket, plan.key(arch))

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
    for stale in [*artifacts.glob(f"{KEY_PREFIX}-*.zip"), *artifacts.glob(f"{DISTRIBUTION}-*.whl")]:
        stale.unlink()
    build_wheelhouses(plan, wheel, artifacts)
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
    parser.add_argument("--wheel", type=Path, help="use this agent wheel instead of building one")
    parser.add_argument(
        "--arch",
        action="append",
        choices=sorted(ARCHITECTURES),
        help="build only this architecture's wheelhouse (repeatable; default: all)",
    )
    parser.add_argument(
        "--python",
        action="append",
        choices=SUPPORTED_PYTHONS,
        help="wheels only for this Python version (repeatable; default: all supported)",
    )
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
        wheel = _checked_wheel(args.wheel, wheel_name(version)) if args.wheel else None
        chosen = {
            "architectures": tuple(a for a in ARCHITECTURES if a in (args.arch or ARCHITECTURES)),
            "pythons": tuple(
                p for p in SUPPORTED_PYTHONS if p in (args.python or SUPPORTED_PYTHONS)
            ),
        }
        if args.gdk:
            plan = Plan(version, GDK_BUCKET, f"{COMPONENT}/{version}", **chosen)
        else:
            plan = Plan(
                version, args.bucket or PLACEHOLDER_BUCKET, f"{KEY_PREFIX}/{version}", **chosen
            )
        recipe = render_recipe(json.loads(RECIPE_PATH.read_text()), plan)

        if args.dry_run:
            action = f"write {args.build_dir}" if args.build_only else "upload and register"
            uris = ", ".join(plan.uri(arch) for arch in plan.architectures)
            print(f"dry run: would {action}: {COMPONENT} {version}, artifacts {uris}")
            print(f"wheels for Python {', '.join(plan.pythons)}")
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

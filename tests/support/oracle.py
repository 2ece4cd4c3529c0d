"""The official Lookout for Vision service model, used as a test oracle.

botocore 1.40.60 is the last release that ships ``lookoutvision/2020-11-20``. Tests
install it (without dependencies) into ``<repo>/.cache`` once and read only its data
directory; nothing from that package is copied into the project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

ORACLE_BOTOCORE_VERSION = "1.40.60"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache"
ORACLE_TARGET = CACHE_DIR / f"oracle-botocore-{ORACLE_BOTOCORE_VERSION}"
#: The project's own model directory (what the agent loads).
PROJECT_DATA_PATH = REPO_ROOT / "agent" / "aws" / "data"

_MODEL_RELATIVE = Path("lookoutvision") / "2020-11-20" / "service-2.json"


def _data_dir(target: Path) -> Path:
    return target / "botocore" / "data"


def _installed(target: Path) -> bool:
    # botocore ships its models gzip-compressed; its loader reads either form.
    model = _data_dir(target) / _MODEL_RELATIVE
    return model.is_file() or model.with_name(model.name + ".gz").is_file()


def official_data_path() -> Path:
    """Return the ``botocore/data`` directory of botocore 1.40.60, installing it if needed.

    The directory holds ``lookoutvision/2020-11-20/service-2.json`` (stored as
    ``service-2.json.gz``, which botocore's loader reads transparently).

    The install goes to a private temporary directory next to the target and is then
    renamed into place, so parallel test processes never see a half-written tree; the
    loser of a rename race simply uses the winner's copy.
    """
    if _installed(ORACLE_TARGET):
        return _data_dir(ORACLE_TARGET)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".oracle-{uuid.uuid4().hex[:8]}-", dir=CACHE_DIR))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-compile",
                "--target",
                str(staging),
                f"botocore=={ORACLE_BOTOCORE_VERSION}",
            ],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pip could not install botocore=={ORACLE_BOTOCORE_VERSION} (PyPI needed once):\n"
                + result.stdout
            )
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is shared
        if not _installed(staging):
            raise RuntimeError(
                f"botocore=={ORACLE_BOTOCORE_VERSION} has no {_MODEL_RELATIVE} after install"
            )
        try:
            os.rename(staging, ORACLE_TARGET)
        except OSError:
            # Another process renamed its copy first (target exists and is non-empty).
            if not _installed(ORACLE_TARGET):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _data_dir(ORACLE_TARGET)


_SESSIONS: dict[Path, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _botocore_session(data_path: Path) -> Any:
    """One botocore session per data path: its loader caches the parsed models, which
    makes every further client ~10x cheaper to create."""
    import botocore.session

    with _SESSIONS_LOCK:
        session = _SESSIONS.get(data_path)
        if session is None:
            session = botocore.session.get_session()
            session.set_config_variable("data_path", str(data_path))
            _SESSIONS[data_path] = session
        return session


def _client_from(data_path: Path, world: Any, **client_kwargs: Any) -> Any:
    from localcloud.transport import world_client

    session = _botocore_session(data_path)
    return world_client(world, "lookoutvision", botocore_session=session, **client_kwargs)


def official_lookoutvision_only_path() -> Path:
    """A data directory holding only the official ``lookoutvision`` model (a symlink into
    the oracle install, inside ``.cache``).

    botocore searches ``data_path`` before its own data, so pointing it at the whole
    1.40.60 ``botocore/data`` would also swap in that release's endpoints, partitions
    and retry rules; this directory keeps everything else from the current botocore.
    """
    source = official_data_path() / "lookoutvision"
    target = CACHE_DIR / f"oracle-lookoutvision-{ORACLE_BOTOCORE_VERSION}"
    link = target / "lookoutvision"
    if not link.exists():
        target.mkdir(parents=True, exist_ok=True)
        temporary = target / f".link-{uuid.uuid4().hex}"
        os.symlink(os.path.relpath(source, target), temporary, target_is_directory=True)
        os.replace(temporary, link)  # atomic; a concurrent winner's link is equivalent
    return target


def official_lookoutvision_client(world: Any, **client_kwargs: Any) -> Any:
    """A current-botocore ``lookoutvision`` client built from the official 2020-11-20 model,
    answered in-process by ``world``. ``client_kwargs`` go to ``Session.client`` (e.g. config).
    """
    return _client_from(official_lookoutvision_only_path(), world, **client_kwargs)


def project_lookoutvision_client(world: Any, **client_kwargs: Any) -> Any:
    """The same, built from the project's own model in ``agent/aws/data``."""
    return _client_from(PROJECT_DATA_PATH, world, **client_kwargs)

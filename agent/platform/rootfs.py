"""Read files of a Linux system that may be mounted somewhere other than ``/``.

Detection reads a handful of small files (``/proc``, ``/etc``, ``/usr``). Tests and the
``detect --root`` command point it at a directory holding a copy of those files. Every
path is then resolved *inside* that directory, symbolic links included: an absolute
link target such as ``/usr/local/cuda -> /usr/local/cuda-11.2`` is re-anchored at the
root, and ``..`` never climbs above it, so nothing outside the root is ever read.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Same limit as the Linux kernel's path resolution.
_MAX_SYMLINKS = 40
#: Upper bound on what one read returns (``/var/lib/dpkg/status`` is a few MiB).
_READ_LIMIT = 16 * 1024 * 1024


class RootFS:
    """A read-only view of a file system tree rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        #: True when ``root`` is the real ``/`` of this machine.
        self.is_host = self.root == Path("/")

    def resolve(self, path: str) -> Path | None:
        """The real path of ``path`` (a path as seen from inside the root).

        None when symbolic links loop. The result may not exist.
        """
        if self.is_host:
            return Path("/") / path.lstrip("/")
        pending = [part for part in path.split("/") if part not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink():
                hops += 1
                if hops > _MAX_SYMLINKS:
                    return None
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(part)
        return self.root.joinpath(*resolved)

    def read_text(self, path: str) -> str | None:
        """The text of a file (undecodable bytes replaced), or None if unreadable."""
        real = self.resolve(path)
        if real is None:
            return None
        try:
            with real.open("rb") as handle:
                data = handle.read(_READ_LIMIT)
        except OSError:
            return None
        return data.decode("utf-8", errors="replace")

    def read_bytes(self, path: str, limit: int) -> bytes | None:
        """The first ``limit`` bytes of a file, or None if unreadable."""
        real = self.resolve(path)
        if real is None:
            return None
        try:
            with real.open("rb") as handle:
                return handle.read(limit)
        except OSError:
            return None

    def list_dir(self, path: str) -> list[str]:
        """Sorted entry names of a directory ([] if it is missing or unreadable)."""
        real = self.resolve(path)
        if real is None:
            return []
        try:
            return sorted(os.listdir(real))
        except OSError:
            return []

    def executable(self, path: str) -> Path | None:
        """The real path of ``path`` if it is an executable regular file."""
        real = self.resolve(path)
        if real is not None and real.is_file() and os.access(real, os.X_OK):
            return real
        return None

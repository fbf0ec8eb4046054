"""The one way m365guard writes a file: a temp file beside it, flushed, renamed; owner-only.

Why: a reader (or a crash) must never see a half-written report, and reports name staff, so
every file and folder m365guard makes is readable by its owner only. `StagedFiles` splits the
write from the rename, so the nightly job can put its reports in place only once the state
that they describe is committed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def ensure_private_dir(folder: Path) -> Path:
    """Create folder (owner-only) if missing; an existing folder keeps its permissions."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)
    return folder


def _write_temp(path: Path, data: bytes) -> Path:
    """`data` in an owner-only temp file beside `path`, on disk; the temp file's path."""
    ensure_private_dir(path.parent)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                     suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o600)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return Path(temp_name)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to a temp file beside path, flush to disk, then rename over path (0600)."""
    temp = _write_temp(Path(path), data)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 text atomically, owner-only."""
    return write_bytes_atomic(path, text.encode("utf-8"))


class StagedFiles:
    """Files written to temp files now and renamed into place later (or thrown away)."""

    def __init__(self) -> None:
        self._pending: dict[Path, Path] = {}

    def write(self, files: Mapping[Path, bytes]) -> None:
        """Write each file's bytes to a temp file beside it; nothing appears at the paths yet."""
        for path, data in files.items():
            self._pending[Path(path)] = _write_temp(Path(path), data)

    def publish(self) -> list[Path]:
        """Rename every staged file into place; the paths, in the order they were written."""
        published = []
        for path, temp in list(self._pending.items()):
            os.replace(temp, path)
            del self._pending[path]
            published.append(path)
        return published

    def discard(self) -> None:
        """Remove the temp files not yet published."""
        for temp in self._pending.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        self._pending.clear()

"""The run lock: an OS file lock beside the state file, released by the OS when its holder dies.

So there is never a stale lock for a technician to clear by hand, and two scheduled runs (or a
run and a technician's second run) never work on one state file at once. The holder writes its
pid into the file, so the run that is refused can name it. A lock file removed (or replaced)
while a run holds it no longer keeps others out: the holder checks `HeldLock.intact()` before
it writes and stops instead. `sqlite_lock_holders` names who holds SQLite's own locks (Linux).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class HeldLock:
    """A lock this process holds on the file at `path` (open as `fd`)."""

    path: Path
    fd: int

    def intact(self) -> bool:
        """Whether `path` is still the file this process locked (not removed or replaced)."""
        try:
            now, held = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


@contextlib.contextmanager
def lock_if_free(path: Path) -> Iterator[HeldLock | None]:
    """Try the lock at `path` once: a HeldLock (until the block ends), or None if another
    process holds it. A lock file removed between opening and locking is opened again."""
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            yield None
            return
        held = HeldLock(path, fd)
        if held.intact():
            break
        _unlock(fd)
        os.close(fd)
    else:  # pragma: no cover - the file kept vanishing under us
        yield None
        return
    try:
        if sys.platform != "win32":  # the pid names the holder to a run refused (on Windows
            with contextlib.suppress(OSError):  # the file's first byte is the lock itself)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield held
    finally:
        _unlock(fd)
        os.close(fd)


def holder_pid(path: Path) -> int | None:
    """The pid the lock's holder wrote into the lock file, if any."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def sqlite_lock_holders(path: Path) -> list[int]:
    """Other processes holding a write lock on the SQLite file or its WAL index (-shm), from
    /proc/locks (Linux); empty where that cannot be known."""
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii").splitlines()
    except OSError:  # not Linux
        return []
    inodes = set()
    for candidate in (path, path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            info = os.stat(candidate)
            inodes.add(f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}")
    pids = set()
    for line in lines:
        fields = line.split()  # "1: POSIX ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if "->" in fields:  # a process waiting for the lock, not holding it
            continue
        if len(fields) >= 6 and fields[3] == "WRITE" and fields[5] in inodes:
            pid = int(fields[4]) if fields[4].isdigit() else 0
            if pid and pid != os.getpid():
                pids.add(pid)
    return sorted(pids)

"""The folders a run writes to, checked before it writes anything; OS errors as one line.

Why: an output folder that is a file, read-only, under /proc, a symbolic link or writable by
every user would otherwise surface as a traceback half-way through a night (with the log, which
lives there by default, unwritable too). Each problem is one line naming the path and the fix,
exit code 6. Temp files left by a write that was killed are removed by the next run.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from m365guard.errors import ExitCode, GuardError

TEMP_SUFFIX = ".tmp"  # files.py / csvfile.py write ".<name>.<random>.tmp" beside each file
_VIRTUAL = ("/proc", "/sys", "/dev")
_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it or point the setting at another disk",
    errno.EDQUOT: "the account's disk quota is used up: free space or raise the quota",
    errno.EROFS: "it is on a read-only file system (under systemd's ProtectSystem=strict only "
                 "StateDirectory=/LogsDirectory= are writable): choose a folder there",
    errno.EACCES: "give the job's account write access to it, or choose another folder",
    errno.EPERM: "give the job's account write access to it, or choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "it is a folder, not a file: fix the path",
    errno.ENOENT: "a folder on the way does not exist: create it or fix the path",
    errno.ELOOP: "it is a symbolic link: point the setting at the real file or folder",
}


def os_error_line(exc: OSError, what: str = "") -> str:
    """An OSError as one line: what, the path, what went wrong, the fix."""
    where = f" {exc.filename}" if exc.filename else ""
    fix = _FIXES.get(exc.errno or 0, "check the path and the account's permissions")
    return f"cannot write {what or 'a file'}{where}: {exc.strerror or exc}; {fix}"


def usable_folder(folder: Path, setting: str) -> Path:
    """folder, made owner-only if missing; refused (one line, exit 6) if a run cannot write
    its files there or should not trust it."""
    text = f"{setting} {folder}"
    real = os.path.realpath(folder)
    for root in _VIRTUAL:
        if real == root or real.startswith(root + "/"):
            raise _refuse(f"{text} is under {root}, which holds no files; choose a real folder")
    if folder.is_symlink():
        raise _refuse(f"{text} is a symbolic link (to {real}); name the real folder, so a link "
                      "cannot redirect the reports")
    if folder.exists() and not folder.is_dir():
        raise _refuse(f"{text} is a file, not a folder; choose a folder")
    try:
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)
            os.chmod(folder, 0o700)
        mode = folder.stat().st_mode
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise _refuse(f"{text} is writable by every user, who could replace the reports; "
                          f"chmod o-w {folder} (or choose an owner-only folder)")
        probe = folder / f".m365guard-probe-{os.getpid()}{TEMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GuardError(os_error_line(exc, setting), ExitCode.CONFIG_ERROR) from None
    return folder


def remove_stale_temp_files(folder: Path, before: float) -> list[Path]:
    """Temp files beside reports, last written before `before` (a run's start): what a killed
    write left behind. Newer ones may belong to a write still going on (weekly), so they stay."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_mtime < before:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def _refuse(message: str) -> GuardError:
    return GuardError(message, ExitCode.CONFIG_ERROR)

"""The state file itself: created whole or not at all, refused when it cannot be trusted.

Why: a state file that is empty, damaged or missing tables must never be silently replaced by a
fresh one, which would bring every acknowledged finding back as new; it is refused with one
line and the way out (restore a backup, backups.py). A missing file is a first night, unless
its backups or its WAL show that it existed. A fresh file is built under a temp name and linked
into place, so two processes starting on a new install never see (or both migrate) a half-made
one. A write lock another program holds is waited for, within bounds, then named (exit 5).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

from m365guard.backups import backup_folder, backups_of
from m365guard.errors import ExitCode, GuardError
from m365guard.runlock import sqlite_lock_holders

HEADER = b"SQLite format 3\x00"
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
RESTORING = 'docs/reliability.md, "Restoring the state"'


def refused(path: Path, why: str) -> GuardError:
    """The one line for a state file that cannot be trusted, with the way out."""
    newest = backups_of(path)
    way_out = (f"restore the newest backup, {newest[0]} ({RESTORING})" if newest else
               f"restore it from a backup ({RESTORING}), or move it away to start afresh"
               " (acknowledged findings would then return as new)")
    return GuardError(f"the state file {path} ([state] path) {why}; it is not replaced by a"
                      f" fresh one; {way_out}", ExitCode.STATE_REFUSED)


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLite gave up waiting for a lock another connection holds."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY


def busy(path: Path, wait_seconds: float) -> GuardError:
    """The one line for a write lock that outlasted [state] lock_wait_seconds."""
    pids = sqlite_lock_holders(path)
    holder = f"pid {', '.join(map(str, pids))}" if pids else "holder unknown"
    return GuardError(
        f"another program holds a write lock on the state file {path} ({holder}) for longer"
        f" than [state] lock_wait_seconds ({wait_seconds:g} s); let it finish (an open"
        " sqlite3 or DB Browser session, a backup tool) and run again", ExitCode.ALREADY_RUNNING)


@contextlib.contextmanager
def waiting(path: Path, wait_seconds: float) -> Iterator[None]:
    """Run a write; a lock held past the busy timeout becomes the one-line refusal (exit 5)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise busy(path, wait_seconds) from None
        raise


def statements(script: str) -> Iterator[str]:
    """The statements of a migration script, one at a time (executescript would COMMIT the
    transaction a migration runs in)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> None:
    """Bring the file to the newest schema in one transaction; the version is read again
    inside it, so a process that waited for another's migration does not repeat it."""
    def version() -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    if version() > len(migrations):
        raise GuardError(f"{path} was written by a newer m365guard (schema {version()});"
                         " upgrade m365guard", ExitCode.CONFIG_ERROR)
    if version() == len(migrations):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = version()
        for number, script in enumerate(migrations[start:], start=start + 1):
            for statement in statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@cache
def expected_tables(migrations: tuple[str, ...]) -> frozenset[str]:
    """The tables the migrations create (built once in memory)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn, Path(":memory:"), migrations)
        return frozenset(row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


def check_tables(conn: sqlite3.Connection, path: Path, migrations: tuple[str, ...]) -> None:
    """Refuse a file whose schema version promises tables it does not have."""
    present = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = sorted(expected_tables(migrations) - present)
    if missing:
        raise refused(path, f"is missing tables ({', '.join(missing)})")


def _check_existing(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(100)
    except OSError as exc:
        raise GuardError(f"cannot read the state file {path} ({exc.strerror}); check"
                         " [state] path and the account's permissions",
                         ExitCode.CONFIG_ERROR) from None
    if not head:
        raise refused(path, "is empty (0 bytes)")
    if not head.startswith(HEADER) or len(head) < 100:
        raise refused(path, "is damaged (not an SQLite database)")


def _create(path: Path, migrations: tuple[str, ...]) -> None:
    """A complete, migrated state file at `path`, unless another process made one first."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    os.close(os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            migrate(conn, temp, migrations)
        finally:
            conn.close()
        try:
            os.link(temp, path)  # fails if another process linked its file first
        except FileExistsError:
            pass
        except OSError:  # no hard links here (FAT, some shares): rename, if still missing
            if not path.exists():
                os.rename(temp, path)
    finally:
        for leftover in (temp, temp.with_name(temp.name + "-wal"),
                         temp.with_name(temp.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def check_missing(path: Path) -> None:
    """A missing state file is a first night, unless its backups (or its WAL) show it existed."""
    if backups_of(path) or path.with_name(path.name + "-wal").exists():
        raise refused(path, f"is missing, but it existed (its backups are in"
                            f" {backup_folder(path)})")


def connect(path: Path, migrations: tuple[str, ...], wait_seconds: float) -> sqlite3.Connection:
    """An open, migrated, checked connection to the state file at `path` (created if it is a
    first night). GuardError for a file that cannot be trusted or used."""
    if not path.exists():
        check_missing(path)
        try:
            _create(path, migrations)
        except OSError as exc:
            raise GuardError(f"cannot create the state file {path} ({exc.strerror}); check"
                             " [state] path", ExitCode.CONFIG_ERROR) from None
    _check_existing(path)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    conn = sqlite3.connect(path, timeout=wait_seconds, isolation_level=None,
                           check_same_thread=False)
    try:
        with waiting(path, wait_seconds):
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn, path, migrations)
            check_tables(conn, path, migrations)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGED:
            raise refused(path, f"is damaged ({exc})") from None
        raise
    except GuardError:
        conn.close()
        raise
    return conn


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """PRAGMA quick_check's first complaint, or None for a sound file."""
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    first = str(rows[0][0]) if rows else "no answer"
    return None if first == "ok" else first

"""SQLite state: runs, coverage, delta links, findings history, inventory, and the run lock.

Why SQLite: one owner-only file, transactions, and no server for a school technician to run.
A run's results (findings, coverage, delta links, inventory) are written in ONE transaction by
`commit_run`, so a run killed half-way loses only its own work; its row, left 'running', is marked
'failed' by the next process that takes the lock. The lock is an OS file lock next to the
database, released by the OS when the holder dies, so there are no stale locks to clear by hand.

Resolution: snapshot findings (inbox rules, mailbox forwarding, chats) describe something that
exists now; when a run read the place they live in full and they are gone, they are resolved
(and reopened if they come back). Message findings are events: they stay open until someone
acknowledges them. Nothing is resolved from a mailbox the run did not cover. Every timestamp is
ISO 8601 UTC, and every method takes `now`, so the demo can simulate weeks of nights in minutes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pandas as pd
from pandas.api.types import pandas_dtype

from m365guard.errors import ExitCode, GuardError
from m365guard.tables import BOOL, INT, NOT_ASKED, READ_IN_FULL, SCHEMAS, STR, TS, conform

RunOutcome = Literal["running", "complete", "partial", "failed"]
FindingStatus = Literal["open", "resolved", "acknowledged"]

FINDING_COLUMNS = tuple(SCHEMAS["findings"])
# The history columns state keeps beside every finding.
FINDING_STATE_SCHEMA: dict[str, str] = {
    "first_seen": TS,
    "last_seen": TS,
    "times_seen": INT,
    "status": STR,
    "status_at": TS,
    "status_by": STR,
    "status_reason": STR,
}
INVENTORY_SCHEMA: dict[str, str] = {
    "kind": STR,  # inbox_rule | mailbox_forwarding
    "mailbox": STR,
    "object_id": STR,
    "target": STR,
    "is_enabled": BOOL,
    "detail": STR,
}
EVENT_SCHEMA: dict[str, str] = {
    "finding_id": STR,
    "run_id": INT,
    "at": TS,
    "event": STR,  # opened | seen | resolved | reopened | acknowledged
    "by": STR,
    "reason": STR,
}
RUN_SCHEMA: dict[str, str] = {
    "run_id": INT,
    "started_at": TS,
    "finished_at": TS,
    "outcome": STR,
    "window_start": TS,
    "window_end": TS,
    "granted_permissions": STR,  # ";"-joined
    "error": STR,
}

# Where a snapshot finding lives: the coverage folder that must read "ok" before its absence
# means it is gone. Inbox rules are judged per mailbox; chats (which belong to no single
# mailbox) and mailbox forwarding (read from the tenant-wide audit log) on every coverage row
# of their source.
SNAPSHOT_FOLDERS: dict[str, str] = {
    "inbox_rule": "messageRules",
    "mailbox_forwarding": "auditLog",
    "chat": "chats",
    # the tenant's forwarding posture, from the Exchange export (enforce/exchange_export.py)
    "outbound_spam_policy": "exchangeExport",
    "remote_domain": "exchangeExport",
    "transport_rule": "exchangeExport",
}
TENANT_WIDE_SNAPSHOTS = frozenset({"chat", "mailbox_forwarding", "outbound_spam_policy",
                                   "remote_domain", "transport_rule"})
SYSTEM_ACTOR = "m365guard"

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('running', 'complete', 'partial', 'failed')),
        window_start TEXT,
        window_end TEXT,
        granted_permissions TEXT NOT NULL DEFAULT '[]',
        counts TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE coverage (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        items INTEGER
    );
    CREATE INDEX coverage_run ON coverage (run_id);
    CREATE TABLE delta_links (
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        link TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (mailbox, folder)
    );
    CREATE TABLE findings (
        finding_id TEXT PRIMARY KEY,
        rule_id TEXT NOT NULL,
        severity TEXT NOT NULL,
        policy_clause TEXT NOT NULL,
        occurred_at TEXT,
        actor TEXT NOT NULL,
        actor_role TEXT NOT NULL,
        counterparts TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        summary TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        times_seen INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'resolved', 'acknowledged')),
        status_at TEXT NOT NULL,
        status_by TEXT NOT NULL,
        status_reason TEXT NOT NULL,
        last_run_id INTEGER
    );
    CREATE INDEX findings_status ON findings (status, object_type);
    CREATE TABLE finding_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finding_id TEXT NOT NULL,
        run_id INTEGER,
        at TEXT NOT NULL,
        event TEXT NOT NULL
            CHECK (event IN ('opened', 'seen', 'resolved', 'reopened', 'acknowledged')),
        by TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX finding_events_finding ON finding_events (finding_id, at);
    CREATE INDEX finding_events_at ON finding_events (at);
    CREATE TABLE inventory (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('inbox_rule', 'mailbox_forwarding')),
        mailbox TEXT NOT NULL,
        object_id TEXT NOT NULL,
        target TEXT NOT NULL,
        is_enabled INTEGER NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX inventory_run ON inventory (run_id);
    """,
    # 2: the enforcement journal (m365guard/enforce/journal.py): plans, actions, their events
    """
    CREATE TABLE enforcement_plans (
        plan_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        author TEXT NOT NULL,
        digest TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE enforcement_actions (
        action_id TEXT PRIMARY KEY,
        plan_id TEXT NOT NULL REFERENCES enforcement_plans (plan_id),
        finding_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        object_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('started', 'done', 'skipped', 'failed', 'manual',
                                               'undo_started', 'undone')),
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        planned_by TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE enforcement_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        action_id TEXT NOT NULL,
        plan_id TEXT NOT NULL,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        by TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX enforcement_events_at ON enforcement_events (at);
    """,
    # 3: alerts and weekly pages sent, or not (m365guard/notify/log.py)
    """
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('alert', 'weekly')),
        period TEXT NOT NULL,
        role TEXT NOT NULL,
        channel TEXT NOT NULL CHECK (channel IN ('mail', 'teams')),
        run_id INTEGER,
        at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sent', 'failed')),
        recipients INTEGER NOT NULL,
        finding_ids TEXT NOT NULL,
        error TEXT NOT NULL
    );
    CREATE INDEX notifications_period ON notifications (kind, period, role, channel);
    CREATE INDEX notifications_at ON notifications (at);
    """,
    # 4: accepted exceptions and the breach log (m365guard/notify/exceptions.py, breaches.py)
    """
    CREATE TABLE finding_exceptions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL CHECK (scope IN ('finding', 'mailbox', 'address', 'rule')),
        value TEXT NOT NULL,
        by TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_day TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE breaches (
        finding_id TEXT PRIMARY KEY,
        actor TEXT NOT NULL,
        summary TEXT NOT NULL,
        addresses_shown INTEGER NOT NULL,
        parents_or_personal INTEGER NOT NULL,
        sent_at TEXT,
        found_at TEXT NOT NULL,
        decide_by TEXT NOT NULL,
        decision TEXT NOT NULL DEFAULT ''
            CHECK (decision IN ('', 'reported', 'not-reportable')),
        decided_by TEXT NOT NULL DEFAULT '',
        decided_at TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    """,
)


def iso(moment: datetime) -> str:
    """The one timestamp format in state: ISO 8601 UTC to the second (sorts as text)."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _iso_or_none(value: Any) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return None
    return iso(pd.Timestamp(value).to_pydatetime())


@dataclass(frozen=True)
class RunRecord:
    """One row of the run history."""

    run_id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: RunOutcome
    window_start: datetime | None
    window_end: datetime | None
    granted_permissions: tuple[str, ...]
    counts: dict[str, Any]
    error: str


@dataclass(frozen=True)
class FindingsUpdate:
    """What one run changed: findings first seen, back after being resolved, still open, gone.

    Every frame has the findings columns plus FINDING_STATE_SCHEMA. `still_open` holds every
    open finding that is not new or reopened, whether or not this run saw it again.
    """

    new: pd.DataFrame
    reopened: pd.DataFrame
    still_open: pd.DataFrame
    resolved: pd.DataFrame


@dataclass
class _Tally:
    new: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


def _parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _frame(rows: Sequence[Any], schema: Mapping[str, str]) -> pd.DataFrame:
    """Rows from SQLite -> a frame with the schema's dtypes (timestamps parsed, ints kept)."""
    if not rows:
        return pd.DataFrame({col: pd.Series([], dtype=dtype) for col, dtype in schema.items()})
    data: dict[str, pd.Series] = {}
    for col, name in schema.items():
        values = [row[col] for row in rows]
        dtype = pandas_dtype(name)
        if name == TS:
            data[col] = pd.Series(pd.to_datetime(values, utc=True, format="ISO8601")).astype(dtype)
        elif name == BOOL:
            data[col] = pd.Series([bool(v) for v in values]).astype(dtype)
        else:
            data[col] = pd.Series(values).astype(dtype)
    return pd.DataFrame(data)


FINDING_FRAME_SCHEMA: dict[str, str] = {**SCHEMAS["findings"], **FINDING_STATE_SCHEMA}


def _json_list(items: Iterable[Any]) -> str:
    """A list bound as one parameter and read with json_each: no SQL built from strings."""
    return orjson.dumps(list(items)).decode()


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


class StateDB:
    """The state file. Open with `StateDB.open(path)`; close it (or use it as a context)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # -- opening, schema, lock ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> StateDB:
        """Open (creating owner-only if needed) and migrate the state file at `path`."""
        path = Path(path).expanduser()
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
            os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise GuardError(
                f"cannot open the state file {path} ({exc.strerror}); check state.path",
                ExitCode.CONFIG_ERROR,
            ) from exc
        os.close(fd)
        os.chmod(path, 0o600)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        db = cls(path, conn)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            db._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise GuardError(
                f"{path} is not an m365guard state file ({exc}); point state.path elsewhere",
                ExitCode.CONFIG_ERROR,
            ) from exc
        except GuardError:
            conn.close()
            raise
        with db._lock_if_free() as free:
            if free:
                db._fail_abandoned_runs()
        return db

    def close(self) -> None:
        """Close the connection (the lock, if held, is released by its context manager)."""
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The migration the file is at (SQLite user_version)."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(_MIGRATIONS):
            raise GuardError(
                f"{self.path} was written by a newer m365guard (schema {version}); upgrade",
                ExitCode.CONFIG_ERROR,
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    @property
    def lock_path(self) -> Path:
        """The lock file next to the database."""
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _lock_if_free(self) -> Iterator[bool]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            locked = _try_lock(fd)
            try:
                yield locked
            finally:
                if locked:
                    _unlock(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run lock; GuardError(ALREADY_RUNNING) at once if another process holds it."""
        with self._lock_if_free() as locked:
            if not locked:
                raise GuardError(
                    f"another m365guard run holds {self.lock_path}; wait for it to finish",
                    ExitCode.ALREADY_RUNNING,
                )
            self._fail_abandoned_runs()
            yield

    def _fail_abandoned_runs(self) -> None:
        """Runs left 'running' while nobody holds the lock were killed: mark them failed."""
        self._conn.execute(
            "UPDATE runs SET outcome = 'failed', error = ? WHERE outcome = 'running'",
            ("the process stopped before the run finished (killed or crashed)",),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------------

    def start_run(
        self,
        window_start: datetime | None,
        window_end: datetime | None,
        now: datetime,
        *,
        granted_permissions: Iterable[str] = (),
    ) -> int:
        """Record a run as 'running' and return its id (it is committed at once)."""
        cursor = self._conn.execute(
            "INSERT INTO runs (started_at, outcome, window_start, window_end, granted_permissions)"
            " VALUES (?, 'running', ?, ?, ?)",
            (
                iso(now),
                _iso_or_none(window_start),
                _iso_or_none(window_end),
                orjson.dumps(sorted(set(granted_permissions))).decode(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def fail_run(self, run_id: int, error: str, now: datetime) -> None:
        """Mark a run failed without keeping any of its results."""
        self._conn.execute(
            "UPDATE runs SET outcome = 'failed', finished_at = ?, error = ? WHERE id = ?",
            (iso(now), error, run_id),
        )

    def run(self, run_id: int) -> RunRecord:
        """One run by id."""
        row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id}")
        return _run_record(row)

    def last_successful_run(self, *, include_partial: bool = False) -> RunRecord | None:
        """The latest complete run (or partial too), whose window end starts the next window."""
        outcomes = ("complete", "partial") if include_partial else ("complete",)
        row = self._conn.execute(
            "SELECT * FROM runs WHERE outcome IN (SELECT value FROM json_each(?))"
            " ORDER BY started_at DESC, id DESC LIMIT 1",
            (_json_list(outcomes),),
        ).fetchone()
        return None if row is None else _run_record(row)

    def runs_between(self, start: datetime, end: datetime) -> list[RunRecord]:
        """Runs started in [start, end), oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM runs WHERE started_at >= ? AND started_at < ? ORDER BY started_at, id",
            (iso(start), iso(end)),
        ).fetchall()
        return [_run_record(row) for row in rows]

    def coverage(self, run_ids: Iterable[int]) -> pd.DataFrame:
        """Coverage rows of the given runs (the coverage schema plus run_id)."""
        rows = self._conn.execute(
            "SELECT * FROM coverage WHERE run_id IN (SELECT value FROM json_each(?))"
            " ORDER BY run_id, mailbox, folder",
            (_json_list(sorted(set(run_ids))),),
        ).fetchall()
        return _frame(rows, {"run_id": INT, **SCHEMAS["coverage"]})

    def without_mailbox(self, since: datetime) -> dict[str, datetime]:
        """Users whose latest check of their mail (in runs started since `since`) found no
        Exchange mailbox, with when that run started."""
        rows = self._conn.execute(
            "SELECT c.mailbox, c.status, r.started_at FROM coverage c"
            " JOIN runs r ON r.id = c.run_id"
            " WHERE r.started_at >= ? AND c.folder IN ('sentitems', 'inbox')"
            " AND c.status IN ('ok', 'resynced', 'no_mailbox') AND c.reason NOT LIKE ?"
            " ORDER BY r.started_at, r.id",
            (iso(since), NOT_ASKED + "%"),
        ).fetchall()
        latest = {row["mailbox"]: row for row in rows}
        return {mailbox: datetime.fromisoformat(row["started_at"])
                for mailbox, row in latest.items() if row["status"] == "no_mailbox"}

    # -- delta links --------------------------------------------------------------------------

    def delta_links(self) -> dict[tuple[str, str], str]:
        """The saved delta link per (mailbox, folder)."""
        rows = self._conn.execute("SELECT mailbox, folder, link FROM delta_links").fetchall()
        return {(row["mailbox"], row["folder"]): row["link"] for row in rows}

    # -- the end of a run ---------------------------------------------------------------------

    def commit_run(
        self,
        run_id: int,
        findings_df: pd.DataFrame,
        coverage_df: pd.DataFrame,
        delta_links: Mapping[tuple[str, str], str],
        inventory_df: pd.DataFrame,
        outcome: RunOutcome,
        counts: Mapping[str, Any],
        now: datetime,
        *,
        error: str = "",
        finished_at: datetime | None = None,
        before_commit: Callable[[FindingsUpdate, RunRecord], None] | None = None,
    ) -> FindingsUpdate:
        """Store everything a run produced in one transaction and update findings history.

        `before_commit(update, run)` runs inside the transaction, after everything is written
        and before COMMIT (the nightly job writes its reports there): if it raises, or the
        process dies in it, nothing of the run is kept and the next run repeats it, so the
        findings it reported as new are reported as new again rather than lost. `now` is the
        run's time (first_seen/last_seen); `finished_at` (default `now`) when its work ended.
        """
        if outcome == "running":
            raise ValueError("commit_run needs a final outcome, not 'running'")
        findings = conform("findings", findings_df).drop_duplicates("finding_id")
        coverage = conform("coverage", coverage_df)
        inventory = _conform_inventory(inventory_df)
        stamp = iso(now)
        with self._transaction() as conn:
            row = conn.execute("SELECT outcome FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row["outcome"] != "running":
                raise ValueError(f"run {run_id} is not running; it cannot be committed")
            conn.executemany(
                "INSERT INTO coverage (run_id, mailbox, folder, status, reason, items)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run_id, r["mailbox"], r["folder"], r["status"], r["reason"],
                     None if pd.isna(r["items"]) else int(r["items"]))
                    for r in coverage.to_dict("records")
                ],
            )
            conn.executemany(
                "INSERT INTO delta_links (mailbox, folder, link, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (mailbox, folder) DO UPDATE SET link = excluded.link,"
                " updated_at = excluded.updated_at",
                [(mailbox, folder, link, stamp) for (mailbox, folder), link in delta_links.items()],
            )
            conn.executemany(
                "INSERT INTO inventory (run_id, kind, mailbox, object_id, target, is_enabled,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, r["kind"], r["mailbox"], r["object_id"], r["target"],
                     int(bool(r["is_enabled"])), r["detail"])
                    for r in inventory.to_dict("records")
                ],
            )
            tally = self._record_findings(conn, run_id, findings, stamp)
            tally.resolved = self._resolve_absent(
                conn, run_id, set(findings["finding_id"]), coverage, stamp
            )
            conn.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, error = ? WHERE id = ?",
                (iso(finished_at or now), outcome, orjson.dumps(dict(counts)).decode(), error,
                 run_id),
            )
            # read inside the transaction: this connection sees its own uncommitted rows
            changed = set(tally.new) | set(tally.reopened)
            still_open = self.findings(status="open")
            update = FindingsUpdate(
                new=self.findings(ids=tally.new),
                reopened=self.findings(ids=tally.reopened),
                still_open=still_open[~still_open["finding_id"].isin(changed)]
                .reset_index(drop=True),
                resolved=self.findings(ids=tally.resolved),
            )
            if before_commit is not None:
                before_commit(update, self.run(run_id))
        return update

    def _record_findings(
        self, conn: sqlite3.Connection, run_id: int, findings: pd.DataFrame, stamp: str
    ) -> _Tally:
        """Insert new findings, count sightings of known ones, reopen resolved ones."""
        known = {
            row["finding_id"]: row["status"]
            for row in conn.execute("SELECT finding_id, status FROM findings")
        }
        tally = _Tally()
        events: list[tuple[str, int, str, str, str, str]] = []
        for record in findings.to_dict("records"):
            finding_id = str(record["finding_id"])
            status = known.get(finding_id)
            if status is None:
                values = [
                    _iso_or_none(record[col]) if col == "occurred_at" else str(record[col])
                    for col in FINDING_COLUMNS
                ]
                conn.execute(
                    f"INSERT INTO findings ({', '.join(FINDING_COLUMNS)}, first_seen, last_seen,"  # noqa: S608
                    " times_seen, status, status_at, status_by, status_reason, last_run_id)"
                    f" VALUES ({', '.join('?' * len(FINDING_COLUMNS))},"
                    " ?, ?, 1, 'open', ?, ?, ?, ?)",
                    [*values, stamp, stamp, stamp, SYSTEM_ACTOR, "found", run_id],
                )
                tally.new.append(finding_id)
                events.append((finding_id, run_id, stamp, "opened", SYSTEM_ACTOR, "found"))
                continue
            conn.execute(
                "UPDATE findings SET last_seen = ?, times_seen = times_seen + 1, last_run_id = ?"
                " WHERE finding_id = ?",
                (stamp, run_id, finding_id),
            )
            if status == "resolved":
                reason = f"seen again in run {run_id}"
                conn.execute(
                    "UPDATE findings SET status = 'open', status_at = ?, status_by = ?,"
                    " status_reason = ? WHERE finding_id = ?",
                    (stamp, SYSTEM_ACTOR, reason, finding_id),
                )
                tally.reopened.append(finding_id)
                events.append((finding_id, run_id, stamp, "reopened", SYSTEM_ACTOR, reason))
            else:
                events.append((finding_id, run_id, stamp, "seen", SYSTEM_ACTOR, ""))
        self._add_events(conn, events)
        return tally

    def _resolve_absent(
        self,
        conn: sqlite3.Connection,
        run_id: int,
        seen: set[str],
        coverage: pd.DataFrame,
        stamp: str,
    ) -> list[str]:
        """Resolve open snapshot findings this run did not see where it read their source."""
        covered = coverage[coverage["status"].isin(READ_IN_FULL)]
        covered_keys = {
            (str(mailbox).lower(), str(folder))
            for mailbox, folder in zip(covered["mailbox"], covered["folder"], strict=True)
        }
        tenant_wide_covered = {
            object_type: bool(len(rows)) and bool(rows["status"].isin(READ_IN_FULL).all())
            for object_type in TENANT_WIDE_SNAPSHOTS
            for rows in [coverage[coverage["folder"] == SNAPSHOT_FOLDERS[object_type]]]
        }
        candidates = conn.execute(
            "SELECT finding_id, object_type, object_id, actor FROM findings WHERE status = 'open'"
            " AND object_type IN (SELECT value FROM json_each(?))",
            (_json_list(SNAPSHOT_FOLDERS),),
        ).fetchall()
        resolved: list[str] = []
        for row in candidates:
            if row["finding_id"] in seen:
                continue
            if row["object_type"] in TENANT_WIDE_SNAPSHOTS:
                if not tenant_wide_covered[row["object_type"]]:
                    continue
            else:
                mailbox = snapshot_mailbox(row["object_id"], row["actor"])
                if (mailbox, SNAPSHOT_FOLDERS[row["object_type"]]) not in covered_keys:
                    continue
            resolved.append(row["finding_id"])
        reason = f"no longer present in run {run_id}, which read its source in full"
        conn.execute(
            "UPDATE findings SET status = 'resolved', status_at = ?, status_by = ?,"
            " status_reason = ? WHERE finding_id IN (SELECT value FROM json_each(?))",
            (stamp, SYSTEM_ACTOR, reason, _json_list(resolved)),
        )
        self._add_events(
            conn, [(fid, run_id, stamp, "resolved", SYSTEM_ACTOR, reason) for fid in resolved]
        )
        return resolved

    @staticmethod
    def _add_events(
        conn: sqlite3.Connection, events: Sequence[tuple[str, int | None, str, str, str, str]]
    ) -> None:
        conn.executemany(
            "INSERT INTO finding_events (finding_id, run_id, at, event, by, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            events,
        )

    # -- people acting on findings ------------------------------------------------------------

    def ack(self, finding_id: str, by: str, reason: str, now: datetime) -> None:
        """Acknowledge a finding: someone has dealt with it; it stays acknowledged if seen again."""
        if not by.strip() or not reason.strip():
            raise GuardError(
                "acknowledging a finding needs --by (who) and --reason (what was done)",
                ExitCode.USAGE,
            )
        stamp = iso(now)
        with self._transaction() as conn:
            updated = conn.execute(
                "UPDATE findings SET status = 'acknowledged', status_at = ?, status_by = ?,"
                " status_reason = ? WHERE finding_id = ?",
                (stamp, by.strip(), reason.strip(), finding_id),
            ).rowcount
            if not updated:
                raise GuardError(
                    f"no finding with id {finding_id!r}; `m365guard findings list` shows the ids",
                    ExitCode.USAGE,
                )
            self._add_events(
                conn, [(finding_id, None, stamp, "acknowledged", by.strip(), reason.strip())]
            )

    # -- reading ------------------------------------------------------------------------------

    def findings(
        self, *, status: FindingStatus | None = None, ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Findings with their history columns, optionally by status or id, oldest first."""
        if ids is not None:
            rows = self._conn.execute(
                "SELECT * FROM findings WHERE finding_id IN (SELECT value FROM json_each(?))"
                " ORDER BY first_seen, finding_id",
                (_json_list(ids),),
            ).fetchall()
        elif status is not None:
            rows = self._conn.execute(
                "SELECT * FROM findings WHERE status = ? ORDER BY first_seen, finding_id",
                (status,),
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT * FROM findings ORDER BY first_seen, finding_id"
            ).fetchall()
        return _frame(rows, FINDING_FRAME_SCHEMA)

    def findings_between(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Findings with any history event in [start, end) or open throughout it."""
        rows = self._conn.execute(
            "SELECT * FROM findings WHERE finding_id IN ("
            " SELECT finding_id FROM finding_events WHERE at >= ? AND at < ?)"
            " OR (first_seen < ? AND (status = 'open' OR status_at >= ?))"
            " ORDER BY first_seen, finding_id",
            (iso(start), iso(end), iso(start), iso(start)),
        ).fetchall()
        return _frame(rows, FINDING_FRAME_SCHEMA)

    def finding_history(self, ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The status history (EVENT_SCHEMA) of the given findings, or of all, oldest first."""
        if ids is None:
            rows = self._conn.execute(
                "SELECT * FROM finding_events ORDER BY at, id"
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT * FROM finding_events WHERE finding_id IN"
                " (SELECT value FROM json_each(?)) ORDER BY at, id",
                (_json_list(ids),),
            ).fetchall()
        return _frame(rows, EVENT_SCHEMA)

    def latest_inventory(self) -> pd.DataFrame:
        """The inbox-rule and forwarding inventory of the latest finished run that has one."""
        row = self._conn.execute(
            "SELECT run_id FROM inventory JOIN runs ON runs.id = inventory.run_id"
            " ORDER BY runs.started_at DESC, runs.id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return _frame([], {"run_id": INT, **INVENTORY_SCHEMA})
        rows = self._conn.execute(
            "SELECT * FROM inventory WHERE run_id = ? ORDER BY kind, mailbox, object_id, target",
            (row["run_id"],),
        ).fetchall()
        return _frame(rows, {"run_id": INT, **INVENTORY_SCHEMA})

    # -- retention ----------------------------------------------------------------------------

    def prune(self, retention_days: int, now: datetime) -> dict[str, int]:
        """Forget runs, and closed findings with their history, older than the retention period.

        Open findings are kept whatever their age: they still need someone to act.
        """
        if retention_days < 1:
            raise GuardError("state.retention_days must be at least 1", ExitCode.CONFIG_ERROR)
        cutoff = iso(now - timedelta(days=retention_days))
        with self._transaction() as conn:
            old = [
                row["finding_id"]
                for row in conn.execute(
                    "SELECT finding_id FROM findings WHERE status != 'open'"
                    " AND last_seen < ? AND status_at < ?",
                    (cutoff, cutoff),
                )
            ]
            for table in ("finding_events", "findings"):
                conn.execute(
                    f"DELETE FROM {table} WHERE finding_id IN"  # noqa: S608 (a fixed table name)
                    " (SELECT value FROM json_each(?))",
                    (_json_list(old),),
                )
            runs = conn.execute(
                "DELETE FROM runs WHERE outcome != 'running' AND started_at < ?", (cutoff,)
            ).rowcount
        return {"runs": runs, "findings": len(old)}


def snapshot_mailbox(object_id: str, actor: str) -> str:
    """The mailbox an inbox-rule or forwarding finding belongs to: `<upn>/<...>` object ids."""
    head, sep, _ = object_id.partition("/")
    return (head if sep and "@" in head else actor).lower()


def _run_record(row: sqlite3.Row) -> RunRecord:
    started = _parse_ts(row["started_at"])
    assert started is not None
    return RunRecord(
        run_id=int(row["id"]),
        started_at=started,
        finished_at=_parse_ts(row["finished_at"]),
        outcome=row["outcome"],
        window_start=_parse_ts(row["window_start"]),
        window_end=_parse_ts(row["window_end"]),
        granted_permissions=tuple(orjson.loads(row["granted_permissions"])),
        counts=orjson.loads(row["counts"]),
        error=row["error"],
    )


def runs_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as a table (RUN_SCHEMA), for reports."""
    return _frame(
        [
            {
                "run_id": run.run_id,
                "started_at": iso(run.started_at),
                "finished_at": iso(run.finished_at) if run.finished_at else None,
                "outcome": run.outcome,
                "window_start": iso(run.window_start) if run.window_start else None,
                "window_end": iso(run.window_end) if run.window_end else None,
                "granted_permissions": ";".join(run.granted_permissions),
                "error": run.error,
            }
            for run in runs
        ],
        RUN_SCHEMA,
    )


def empty_inventory() -> pd.DataFrame:
    """An inventory table with no rows."""
    return _frame([], INVENTORY_SCHEMA)


def _conform_inventory(df: pd.DataFrame) -> pd.DataFrame:
    missing = [col for col in INVENTORY_SCHEMA if col not in df.columns]
    if missing:
        raise KeyError(f"inventory: missing columns {missing}")
    return _frame(df.to_dict("records"), INVENTORY_SCHEMA)


def build_inventory(rule_forwards: pd.DataFrame, mailbox_forwarding: pd.DataFrame) -> pd.DataFrame:
    """The inventory a run records: every forwarding inbox rule and current mailbox forwarding.

    Inputs are the collected `rule_forwards` and `mailbox_forwarding` tables; for mailbox
    forwarding the latest observation per mailbox wins and a cleared address ("") is dropped.
    """
    rules = conform("rule_forwards", rule_forwards)
    rows: list[dict[str, Any]] = [
        {
            "kind": "inbox_rule",
            "mailbox": r["mailbox"],
            "object_id": f"{r['mailbox']}/{r['rule_id']}",
            "target": r["address"],
            "is_enabled": bool(r["is_enabled"]),
            "detail": f"{r['action']} (rule {r['rule_name']!r})",
        }
        for r in rules.to_dict("records")
    ]
    forwarding = conform("mailbox_forwarding", mailbox_forwarding)
    latest = forwarding.sort_values("observed_at", kind="stable").groupby("mailbox").tail(1)
    rows += [
        {
            "kind": "mailbox_forwarding",
            "mailbox": r["mailbox"],
            "object_id": f"{r['mailbox']}/{r['address']}",
            "target": r["address"],
            "is_enabled": True,
            "detail": ("keeps a copy" if r["deliver_and_forward"] else "no copy kept")
            + f"; source {r['source']}",
        }
        for r in latest.to_dict("records")
        if r["address"]
    ]
    if not rows:
        return empty_inventory()
    return _frame(rows, INVENTORY_SCHEMA)


__all__ = [
    "EVENT_SCHEMA",
    "FINDING_FRAME_SCHEMA",
    "INVENTORY_SCHEMA",
    "FindingsUpdate",
    "RunRecord",
    "StateDB",
    "build_inventory",
    "empty_inventory",
    "iso",
    "runs_frame",
]

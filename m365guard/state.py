"""The state file: a plain SQLite store of runs, coverage, delta links, findings and inventory.

Why SQLite: one owner-only file, transactions, and no server for a school technician to run.
This module keeps rows and nothing else: what a run changes is decided by ledger.py, and the
nightly job (pipeline.py) holds the one transaction in which a run's rows are written, so a run
killed half-way loses only its own work; its row, left 'running', is marked 'failed' by the
next process that takes the lock (runlock.py). Every timestamp is ISO 8601 UTC (records.iso),
and every method takes `now`, so the demo can simulate weeks of nights in minutes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from m365guard import state_file
from m365guard.backups import keep_backup
from m365guard.errors import ExitCode, GuardError
from m365guard.ledger import FindingChanges
from m365guard.records import (
    FINDING_FRAME_SCHEMA,
    INVENTORY_SCHEMA,
    RunRecord,
    frame,
    iso,
    iso_or_none,
    records,
)
from m365guard.runlock import HeldLock, holder_pid, lock_if_free
from m365guard.schema import MIGRATIONS
from m365guard.store_reads import StoreReads, json_list
from m365guard.tables import INT, TS, conform

_FINDING_COLUMNS = tuple(FINDING_FRAME_SCHEMA)
_UPSERT_FINDING = (
    f"INSERT INTO findings ({', '.join(_FINDING_COLUMNS)}, last_run_id)"  # noqa: S608
    f" VALUES ({', '.join('?' * len(_FINDING_COLUMNS))}, ?)"
    " ON CONFLICT (finding_id) DO UPDATE SET "
    + ", ".join(f"{col} = excluded.{col}" for col in _FINDING_COLUMNS[1:])
    + ", last_run_id = COALESCE(excluded.last_run_id, findings.last_run_id)"
)


class StateDB(StoreReads):
    """The state file. Open with `StateDB.open(path)`; close it (or use it as a context)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, wait_seconds: float) -> None:
        self.path = path
        self._conn = conn
        self.wait_seconds = wait_seconds
        self._held: HeldLock | None = None

    # -- opening, schema, lock ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, wait_seconds: float = 30.0) -> StateDB:
        """Open (creating owner-only if it is a first night) and migrate the state file.

        An empty, damaged or incomplete file is refused (state_file.py); another program's
        write lock is waited for up to `wait_seconds` ([state] lock_wait_seconds), then exit 5.
        """
        path = Path(path).expanduser()
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
            os.chmod(path.parent, 0o700)
        conn = state_file.connect(path, MIGRATIONS, wait_seconds)
        conn.row_factory = sqlite3.Row
        db = cls(path, conn, wait_seconds)
        with lock_if_free(db.lock_path) as free:
            if free is not None:
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

    def integrity_problem(self) -> str | None:
        """SQLite's quick_check: None for a sound file, else its first complaint."""
        return state_file.integrity_problem(self._conn)

    def check_integrity(self) -> None:
        """Refuse a damaged file (one line, the way out: state_file.refused)."""
        problem = self.integrity_problem()
        if problem is not None:
            raise state_file.refused(self.path, f"is damaged (quick_check: {problem})")

    def check_writable(self) -> None:
        """Take and drop the write lock: another program's lock is met before Graph is."""
        with self._waiting():
            self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute("ROLLBACK")

    def _waiting(self) -> contextlib.AbstractContextManager[None]:
        return state_file.waiting(self.path, self.wait_seconds)

    @property
    def lock_path(self) -> Path:
        """The lock file next to the database."""
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run lock; GuardError(ALREADY_RUNNING) at once if another process holds it."""
        with lock_if_free(self.lock_path) as held:
            if held is None:
                pid = holder_pid(self.lock_path)
                raise GuardError(
                    f"another m365guard run holds {self.lock_path}"
                    f"{f' (pid {pid})' if pid else ''}; wait for it to finish",
                    ExitCode.ALREADY_RUNNING,
                )
            self._fail_abandoned_runs()
            self._held = held
            try:
                yield
            finally:
                self._held = None

    def confirm_lock(self) -> None:
        """Before writing a run: the lock file must still be the one this run locked. Removed
        or replaced, it no longer keeps a second run out, so this one stops (exit 5)."""
        if self._held is not None and not self._held.intact():
            raise GuardError(
                f"the lock file {self.lock_path} was removed or replaced while this run held"
                " it, so another run may have started; this run stopped without writing its"
                " results (the next run repeats it)", ExitCode.ALREADY_RUNNING)

    def _fail_abandoned_runs(self) -> None:
        """Runs left 'running' while nobody holds the lock were killed: mark them failed."""
        if self._conn.execute("SELECT 1 FROM runs WHERE outcome = 'running'").fetchone():
            with self._waiting():
                self._conn.execute(
                    "UPDATE runs SET outcome = 'failed', error = ? WHERE outcome = 'running'",
                    ("the process stopped before the run finished (killed or crashed)",),
                )

    def set_fact(self, name: str, value: str) -> None:
        """Record a fact about the file itself (state_facts), e.g. the tenant it belongs to."""
        self._conn.execute(
            "INSERT INTO state_facts (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    def keep_backup(self, run_id: int, now: datetime, generations: int) -> Path | None:
        """A consistent copy of the committed state in the backups folder (backups.py)."""
        return keep_backup(self._conn, self.path, run_id, now, generations)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE): committed if the block ends, else undone."""
        with self._waiting():
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
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
        with self._waiting():
            cursor = self._conn.execute(
                "INSERT INTO runs (started_at, outcome, window_start, window_end,"
                " granted_permissions) VALUES (?, 'running', ?, ?, ?)",
                (
                    iso(now),
                    iso_or_none(window_start),
                    iso_or_none(window_end),
                    orjson.dumps(sorted(set(granted_permissions))).decode(),
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def fail_run(self, run_id: int, error: str, now: datetime) -> None:
        """Mark a run failed without keeping any of its results."""
        with self._waiting():
            self._conn.execute(
                "UPDATE runs SET outcome = 'failed', finished_at = ?, error = ? WHERE id = ?",
                (iso(now), error, run_id),
            )

    # -- writing a run (inside `transaction()`) -----------------------------------------------

    def record_run(
        self,
        run: RunRecord,
        changes: FindingChanges,
        coverage_df: pd.DataFrame,
        delta_links: Mapping[tuple[str, str], str],
        inventory_df: pd.DataFrame,
        read_marks: Mapping[tuple[str, str], datetime] | None = None,
    ) -> None:
        """Write everything a run produced; the run's row gets its final outcome and counts.

        Call it inside `transaction()`, in which the ledger was computed, so a person's change
        (an ack) cannot fall between the ledger's reading and this writing.
        """
        if run.outcome == "running":
            raise ValueError("record_run needs a final outcome, not 'running'")
        row = self._conn.execute("SELECT outcome FROM runs WHERE id = ?", (run.run_id,)).fetchone()
        if row is None or row["outcome"] != "running":
            raise ValueError(f"run {run.run_id} is not running; it cannot be committed")
        coverage = conform("coverage", coverage_df)
        inventory = frame(records(inventory_df), INVENTORY_SCHEMA)
        stamp = iso(run.started_at)
        self._conn.executemany(
            "INSERT INTO coverage (run_id, mailbox, folder, status, reason, items)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(run.run_id, r["mailbox"], r["folder"], r["status"], r["reason"],
              None if pd.isna(r["items"]) else int(r["items"]))
             for r in records(coverage)],
        )
        self._conn.executemany(
            "INSERT INTO delta_links (mailbox, folder, link, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (mailbox, folder) DO UPDATE SET link = excluded.link,"
            " updated_at = excluded.updated_at",
            [(mailbox, folder, link, stamp) for (mailbox, folder), link in delta_links.items()],
        )
        self._conn.executemany(
            "INSERT INTO inventory (run_id, kind, mailbox, object_id, target, is_enabled,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run.run_id, r["kind"], r["mailbox"], r["object_id"], r["target"],
              int(bool(r["is_enabled"])), r["detail"]) for r in records(inventory)],
        )
        self._conn.executemany(
            "INSERT INTO read_marks (mailbox, kind, read_until, run_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (mailbox, kind) DO UPDATE SET read_until = excluded.read_until,"
            " run_id = excluded.run_id",
            [(mailbox, kind, iso(until), run.run_id)
             for (mailbox, kind), until in (read_marks or {}).items()],
        )
        self.write_findings(changes, run.run_id)
        self._conn.execute(
            "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, error = ?, rules_off = ?"
            " WHERE id = ?",
            (iso_or_none(run.finished_at), run.outcome, orjson.dumps(run.counts).decode(),
             run.error, orjson.dumps(list(run.rules_off)).decode(), run.run_id),
        )

    def write_forwarding_state(self, latest: pd.DataFrame, run_id: int) -> None:
        """Keep the latest mailbox forwarding per mailbox (cleared ones too, address "")
        (inside `transaction()`, with the run's rows)."""
        table = conform("mailbox_forwarding", latest)
        self._conn.executemany(
            "INSERT INTO mailbox_forwarding_state (mailbox, address, deliver_and_forward, source,"
            " observed_at, record_id, run_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (mailbox) DO UPDATE SET mailbox = excluded.mailbox,"
            " address = excluded.address, deliver_and_forward = excluded.deliver_and_forward,"
            " source = excluded.source, observed_at = excluded.observed_at,"
            " record_id = excluded.record_id, run_id = excluded.run_id",
            [(r["mailbox"], r["address"], int(bool(r["deliver_and_forward"])), r["source"],
              iso_or_none(r["observed_at"]), r["record_id"], run_id) for r in records(table)],
        )

    def write_findings(self, changes: FindingChanges, run_id: int | None = None) -> None:
        """Upsert the changed findings and append their events (inside `transaction()`)."""
        seen = set(changes.seen)
        self._conn.executemany(_UPSERT_FINDING, [
            [*(_sql_value(record[col], FINDING_FRAME_SCHEMA[col]) for col in _FINDING_COLUMNS),
             run_id if record["finding_id"] in seen else None]
            for record in records(changes.rows)
        ])
        self._conn.executemany(
            "INSERT INTO finding_events (finding_id, run_id, at, event, by, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(e["finding_id"], None if pd.isna(e["run_id"]) else int(e["run_id"]),
              iso_or_none(e["at"]), e["event"], e["by"], e["reason"])
             for e in records(changes.events)],
        )

    # -- retention ----------------------------------------------------------------------------

    def prune(self, retention_days: int, now: datetime) -> dict[str, int]:
        """Forget runs, and closed findings with their history, older than the retention period.

        Open findings are kept whatever their age: they still need someone to act.
        """
        if retention_days < 1:
            raise GuardError("state.retention_days must be at least 1", ExitCode.CONFIG_ERROR)
        cutoff = iso(now - timedelta(days=retention_days))
        with self.transaction():
            old = [
                row["finding_id"]
                for row in self._conn.execute(
                    "SELECT finding_id FROM findings WHERE status != 'open'"
                    " AND last_seen < ? AND status_at < ?",
                    (cutoff, cutoff),
                )
            ]
            for table in ("finding_events", "findings"):
                self._conn.execute(
                    f"DELETE FROM {table} WHERE finding_id IN"  # noqa: S608 (a fixed table name)
                    " (SELECT value FROM json_each(?))",
                    (json_list(old),),
                )
            runs = self._conn.execute(
                "DELETE FROM runs WHERE outcome != 'running' AND started_at < ?", (cutoff,)
            ).rowcount
        return {"runs": runs, "findings": len(old)}


def connect(path: Path) -> sqlite3.Connection:
    """A plain connection to the checked, migrated state file, for the features that keep
    tables of their own in it (enforce/journal.py, notify/): rows by name, durable commits,
    a 30 s wait for another writer. The caller closes it."""
    StateDB.open(path).close()
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _sql_value(value: Any, dtype: str) -> Any:
    """A frame value as SQLite keeps it: ISO text for timestamps, plain ints and text."""
    if dtype == TS:
        return iso_or_none(value)
    if dtype == INT:
        return int(value)
    return str(value)

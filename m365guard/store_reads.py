"""The store's reads: runs, coverage, delta links, findings and their history, inventory.

Apart from state.py (the writes, the schema and the lock) only to keep each module short;
StateDB is the one class callers use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import pandas as pd

from m365guard.records import (
    EVENT_SCHEMA,
    FINDING_FRAME_SCHEMA,
    INVENTORY_SCHEMA,
    FindingStatus,
    RunRecord,
    frame,
    iso,
    parse_ts,
)
from m365guard.tables import INT, NO_MAILBOX, NOT_ASKED, READ_IN_FULL, SCHEMAS


def json_list(items: Iterable[Any]) -> str:
    """A list bound as one parameter and read with json_each: no SQL built from strings."""
    return orjson.dumps(list(items)).decode()


class StoreReads:
    """Row reads on the state file's connection."""

    _conn: sqlite3.Connection

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
            (json_list(outcomes),),
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
            (json_list(sorted(set(run_ids))),),
        ).fetchall()
        return frame(rows, {"run_id": INT, **SCHEMAS["coverage"]})

    def without_mailbox(self, since: datetime) -> dict[str, datetime]:
        """Users whose latest check of their mail (in runs started since `since`) found no
        Exchange mailbox, with when that run started."""
        rows = self._conn.execute(
            "SELECT c.mailbox, c.status, r.started_at FROM coverage c"
            " JOIN runs r ON r.id = c.run_id"
            " WHERE r.started_at >= ? AND c.folder IN ('sentitems', 'inbox')"
            " AND c.status IN (SELECT value FROM json_each(?)) AND c.reason NOT LIKE ?"
            " ORDER BY r.started_at, r.id",
            (iso(since), json_list(sorted(READ_IN_FULL | {NO_MAILBOX})), NOT_ASKED + "%"),
        ).fetchall()
        latest = {row["mailbox"]: row for row in rows}
        return {mailbox: datetime.fromisoformat(row["started_at"])
                for mailbox, row in latest.items() if row["status"] == NO_MAILBOX}

    def delta_links(self) -> dict[tuple[str, str], str]:
        """The saved delta link per (mailbox, folder)."""
        rows = self._conn.execute("SELECT mailbox, folder, link FROM delta_links").fetchall()
        return {(row["mailbox"], row["folder"]): row["link"] for row in rows}

    def fact(self, name: str) -> str | None:
        """A fact about the file itself (state_facts), or None."""
        row = self._conn.execute("SELECT value FROM state_facts WHERE name = ?",
                                 (name,)).fetchone()
        return None if row is None else str(row["value"])

    def read_marks(self) -> dict[tuple[str, str], datetime]:
        """Where each stream was last read in full, by (mailbox upn lowercased or "", kind)."""
        rows = self._conn.execute("SELECT mailbox, kind, read_until FROM read_marks").fetchall()
        return {(row["mailbox"], row["kind"]): datetime.fromisoformat(row["read_until"])
                for row in rows}

    # -- reading ------------------------------------------------------------------------------

    def findings(
        self, *, status: FindingStatus | None = None, ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Findings with their history columns, optionally by status or id, oldest first."""
        if ids is not None:
            rows = self._conn.execute(
                "SELECT * FROM findings WHERE finding_id IN (SELECT value FROM json_each(?))"
                " ORDER BY first_seen, finding_id",
                (json_list(ids),),
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
        return frame(rows, FINDING_FRAME_SCHEMA)

    def findings_between(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Findings with any history event in [start, end) or open throughout it."""
        rows = self._conn.execute(
            "SELECT * FROM findings WHERE finding_id IN ("
            " SELECT finding_id FROM finding_events WHERE at >= ? AND at < ?)"
            " OR (first_seen < ? AND (status = 'open' OR status_at >= ?))"
            " ORDER BY first_seen, finding_id",
            (iso(start), iso(end), iso(start), iso(start)),
        ).fetchall()
        return frame(rows, FINDING_FRAME_SCHEMA)

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
                (json_list(ids),),
            ).fetchall()
        return frame(rows, EVENT_SCHEMA)

    def events_between(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Status events (EVENT_SCHEMA) at a time in [start, end), oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM finding_events WHERE at >= ? AND at < ? ORDER BY at, id",
            (iso(start), iso(end)),
        ).fetchall()
        return frame(rows, EVENT_SCHEMA)

    def forwarding_state(self) -> pd.DataFrame:
        """The last known mailbox forwarding per mailbox (the mailbox_forwarding schema;
        address "" where it was cleared), as the latest run left it."""
        rows = self._conn.execute(
            "SELECT * FROM mailbox_forwarding_state ORDER BY mailbox").fetchall()
        return frame(rows, SCHEMAS["mailbox_forwarding"])

    def latest_inventory(self) -> pd.DataFrame:
        """The inbox-rule and forwarding inventory of the latest finished run that has one."""
        row = self._conn.execute(
            "SELECT run_id FROM inventory JOIN runs ON runs.id = inventory.run_id"
            " ORDER BY runs.started_at DESC, runs.id DESC LIMIT 1"
        ).fetchone()
        schema = {"run_id": INT, **INVENTORY_SCHEMA}
        if row is None:
            return frame([], schema)
        rows = self._conn.execute(
            "SELECT * FROM inventory WHERE run_id = ? ORDER BY kind, mailbox, object_id, target",
            (row["run_id"],),
        ).fetchall()
        return frame(rows, schema)


def _run_record(row: sqlite3.Row) -> RunRecord:
    started = parse_ts(row["started_at"])
    assert started is not None
    return RunRecord(
        run_id=int(row["id"]),
        started_at=started,
        finished_at=parse_ts(row["finished_at"]),
        outcome=row["outcome"],
        window_start=parse_ts(row["window_start"]),
        window_end=parse_ts(row["window_end"]),
        granted_permissions=tuple(orjson.loads(row["granted_permissions"])),
        counts=orjson.loads(row["counts"]),
        error=row["error"],
        rules_off=tuple(orjson.loads(row["rules_off"])),
    )

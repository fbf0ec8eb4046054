"""The notification log in state: every alert and weekly page sent, or why it was not.

Why in state: "at most once a night" must survive a rerun of the same night, and a failure to
notify must reach the next weekly page, which is built by another process days later. The
table is migration 3 of the state file (state.py); functions take a sqlite3 connection from
`connect`, which opens (and so migrates) the state file first. Each write commits at once: a
message that went out is recorded even if the process dies right after.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from m365guard.records import iso
from m365guard.state import connect as connect  # the migrated state file, for this module's tables

Kind = Literal["alert", "weekly"]
Channel = Literal["mail", "teams"]


@dataclass(frozen=True)
class Notification:
    """One row of the log."""

    kind: Kind
    period: str  # the local night (YYYY-MM-DD) of an alert, the week label of a weekly page
    role: str
    channel: Channel
    run_id: int | None
    at: datetime
    status: Literal["sent", "failed"]
    recipients: int
    finding_ids: tuple[str, ...]
    error: str


def already_sent(conn: sqlite3.Connection, kind: Kind, period: str, role: str,
                 channel: Channel) -> bool:
    """Has this message gone out for this period already (a rerun must not send it twice)?"""
    row = conn.execute(
        "SELECT 1 FROM notifications WHERE kind = ? AND period = ? AND role = ? AND channel = ?"
        " AND status = 'sent' LIMIT 1", (kind, period, role, channel)).fetchone()
    return row is not None


def record(conn: sqlite3.Connection, entry: Notification) -> None:
    """Append one entry (committed at once)."""
    conn.execute(
        "INSERT INTO notifications (kind, period, role, channel, run_id, at, status, recipients,"
        " finding_ids, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (entry.kind, entry.period, entry.role, entry.channel, entry.run_id, iso(entry.at),
         entry.status, entry.recipients, ";".join(entry.finding_ids), entry.error))


def failures_between(conn: sqlite3.Connection, start: datetime,
                     end: datetime) -> list[Notification]:
    """Failed notifications in [start, end), oldest first (for the weekly page)."""
    rows = conn.execute(
        "SELECT * FROM notifications WHERE status = 'failed' AND at >= ? AND at < ?"
        " ORDER BY at, id", (iso(start), iso(end))).fetchall()
    return [_entry(row) for row in rows]


def entries(conn: sqlite3.Connection) -> list[Notification]:
    """Every entry, oldest first."""
    return [_entry(row) for row in conn.execute("SELECT * FROM notifications ORDER BY at, id")]


def _entry(row: sqlite3.Row) -> Notification:
    ids: Sequence[str] = row["finding_ids"].split(";") if row["finding_ids"] else ()
    return Notification(
        kind=row["kind"], period=row["period"], role=row["role"], channel=row["channel"],
        run_id=row["run_id"], at=datetime.fromisoformat(row["at"]), status=row["status"],
        recipients=row["recipients"], finding_ids=tuple(ids), error=row["error"])

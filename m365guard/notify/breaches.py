"""The breach log for the DPO: every To/Cc exposure of parents' or personal addresses.

Why: a message that showed parents' or personal addresses to each other is a personal data
breach the DPO must assess; UK GDPR Article 33 gives 72 hours from becoming aware to report
one to the ICO if it is reportable. So each such BCC finding opens one entry (discovery = when
m365guard first found it), with how many addresses were shown (and how many of them parents'
or personal), when the mail was sent, the 72-hour deadline, and the decision with who and
when. The counts come from the BCC rule's own summary. Stored in migration 4 of the state file;
functions take a sqlite3 connection from `notify.log.connect`.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd

from m365guard.errors import ExitCode, GuardError
from m365guard.records import iso

BCC_RULE = "multi-recipient-without-bcc"
ICO_WINDOW = timedelta(hours=72)
Decision = Literal["reported", "not-reportable"]
DECISIONS: tuple[Decision, ...] = ("reported", "not-reportable")
_COUNTS = re.compile(r"showing (\d+) outside addresses \((\d+) parents? or personal\)")
COLUMNS = ("finding_id", "actor", "summary", "addresses_shown", "parents_or_personal",
           "sent_at", "found_at", "decide_by", "decision", "decided_by", "decided_at", "note")


def exposure(summary: str) -> tuple[int, int] | None:
    """(addresses shown, of which parents' or personal) from a BCC finding's summary."""
    found = _COUNTS.search(summary)
    return (int(found.group(1)), int(found.group(2))) if found else None


def open_entries(conn: sqlite3.Connection, findings: pd.DataFrame) -> list[str]:
    """Open an entry for every BCC finding that exposed parents' or personal addresses and
    has none yet (idempotent: a rerun opens nothing twice). The ids opened."""
    opened = []
    for row in findings[findings["rule_id"] == BCC_RULE].to_dict("records"):
        counts = exposure(str(row["summary"]))
        if counts is None or counts[1] < 1:
            continue
        found = pd.Timestamp(row["first_seen"]).to_pydatetime()
        sent = row["occurred_at"]
        cursor = conn.execute(
            "INSERT OR IGNORE INTO breaches (finding_id, actor, summary, addresses_shown,"
            " parents_or_personal, sent_at, found_at, decide_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row["finding_id"], row["actor"], row["summary"], counts[0], counts[1],
             None if pd.isna(sent) else iso(pd.Timestamp(sent).to_pydatetime()), iso(found),
             iso(found + ICO_WINDOW)))
        if cursor.rowcount:
            opened.append(str(row["finding_id"]))
    return opened


def decide(conn: sqlite3.Connection, finding_id: str, decision: str, by: str, note: str,
           now: datetime) -> None:
    """Record the DPO's decision on one entry."""
    if decision not in DECISIONS:
        raise GuardError(f"--decision {decision!r}: use reported or not-reportable",
                         ExitCode.USAGE)
    if not by.strip() or not note.strip():
        raise GuardError("a decision needs --by (who decided) and --note (why, or the ICO"
                         " reference)", ExitCode.USAGE)
    changed = conn.execute(
        "UPDATE breaches SET decision = ?, decided_by = ?, decided_at = ?, note = ?"
        " WHERE finding_id = ?", (decision, by.strip(), iso(now), note.strip(),
                                  finding_id)).rowcount
    if not changed:
        raise GuardError(f"no breach-log entry {finding_id!r}; `m365guard breaches list` shows"
                         " them", ExitCode.USAGE)


def entries(conn: sqlite3.Connection) -> pd.DataFrame:
    """Every entry, undecided first, then by deadline (COLUMNS; times as UTC timestamps)."""
    rows = conn.execute("SELECT * FROM breaches ORDER BY decision != '', decide_by, finding_id")
    table = pd.DataFrame([dict(row) for row in rows], columns=list(COLUMNS))
    for column in ("sent_at", "found_at", "decide_by", "decided_at"):
        table[column] = pd.to_datetime(table[column], utc=True, format="ISO8601")
    return table


def undecided(table: pd.DataFrame) -> pd.DataFrame:
    """Entries still waiting for the DPO."""
    return table[table["decision"].fillna("") == ""]


def for_audit(path: Path, findings: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """The audit pack's breach-log.csv: entries found in [start, end), and older undecided."""
    from m365guard.notify.log import connect

    conn = connect(path)
    try:
        open_entries(conn, findings)
        table = entries(conn)
    finally:
        conn.close()
    found = table["found_at"]
    keep = ((found >= pd.Timestamp(start)) & (found < pd.Timestamp(end))) | (
        (table["decision"] == "") & (found < pd.Timestamp(end)))
    return table[keep].reset_index(drop=True)

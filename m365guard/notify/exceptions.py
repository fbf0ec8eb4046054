"""Accepted exceptions: a known, justified case recorded once, with who, why and until when.

Why: a finding the school has decided to live with for now (a partner's shared address, a
mailbox forwarding to the local authority during a transfer) should not be raised again every
night, but must not vanish either. An exception names one finding or an entity (a mailbox, an
address, a rule); while it lasts, matching findings are shown as accepted rather than new or
open, and no alert goes out for them; the day after its last day they come back, and the next
night alerts on them again. The nightly run applies them too (`for_night`): an accepted finding
is listed as accepted in the findings CSV and never earns exit 3; one whose exception ended
since the previous day's report is news again. Stored in migration 4 of the state file;
functions take a sqlite3 connection from `notify.log.connect`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo

import pandas as pd

from m365guard.errors import ExitCode, GuardError
from m365guard.ledger import FindingsUpdate
from m365guard.records import iso
from m365guard.reports.weeks import local_day, local_midnight

Scope = Literal["finding", "mailbox", "address", "rule"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
MAX_DAYS = 366
COLUMNS = ("exception_id", "scope", "value", "by", "reason", "created_at", "last_day",
           "expires_at")


def accept(conn: sqlite3.Connection, scope: Scope, value: str, by: str, reason: str,
           last_day: date, now: datetime, zone: ZoneInfo) -> int:
    """Record an exception lasting through `last_day` (local); its id."""
    value, by, reason = value.strip(), by.strip(), reason.strip()
    if not (value and by and reason):
        raise GuardError("accepting needs what (an id, --mailbox, --address or --rule), --by"
                         " (who decided) and --reason (why)", ExitCode.USAGE)
    today = local_day(now, zone)
    if last_day < today:
        raise GuardError(f"--until {last_day} is in the past; give the last day it applies",
                         ExitCode.USAGE)
    if last_day > today + timedelta(days=MAX_DAYS):
        raise GuardError(f"--until {last_day} is more than a year away; review it within a year",
                         ExitCode.USAGE)
    expires = local_midnight(last_day + timedelta(days=1), zone)
    cursor = conn.execute(
        "INSERT INTO finding_exceptions (scope, value, by, reason, created_at, last_day,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (scope, value.lower() if scope in ("mailbox", "address") else value, by, reason,
         iso(now), last_day.isoformat(), iso(expires)))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def exceptions(conn: sqlite3.Connection) -> pd.DataFrame:
    """Every exception, newest first (COLUMNS; times as UTC timestamps)."""
    rows = conn.execute("SELECT * FROM finding_exceptions ORDER BY created_at DESC, id DESC")
    table = pd.DataFrame([
        {"exception_id": row["id"], "scope": row["scope"], "value": row["value"],
         "by": row["by"], "reason": row["reason"],
         "created_at": pd.Timestamp(row["created_at"]), "last_day": row["last_day"],
         "expires_at": pd.Timestamp(row["expires_at"])} for row in rows], columns=list(COLUMNS))
    return table


def active_at(table: pd.DataFrame, moment: datetime) -> pd.DataFrame:
    """The exceptions in force at `moment`."""
    if table.empty:
        return table
    stamp = pd.Timestamp(moment)
    return table[(table["created_at"] <= stamp) & (table["expires_at"] > stamp)]


def matches(findings: pd.DataFrame, exception: pd.Series) -> pd.Series:
    """Which findings one exception covers."""
    value = str(exception["value"])
    scope = exception["scope"]
    if scope == "finding":
        return findings["finding_id"] == value
    if scope == "rule":
        return findings["rule_id"] == value
    if scope == "mailbox":
        actor = findings["actor"].astype(str).str.lower()
        owner = findings["object_id"].astype(str).str.lower().str.partition("/")[0]
        return (actor == value) | (owner == value)
    counterparts = findings["counterparts"].astype(str).str.lower()
    return counterparts.str.contains(value, regex=False)


def covered(findings: pd.DataFrame, table: pd.DataFrame, moment: datetime) -> set[str]:
    """Ids of the findings an exception in force at `moment` covers."""
    ids: set[str] = set()
    for _, exception in active_at(table, moment).iterrows():
        ids |= set(findings.loc[matches(findings, exception), "finding_id"])
    return ids


def covering(findings: pd.DataFrame, table: pd.DataFrame, moment: datetime) -> dict[str, str]:
    """finding id -> the last day (YYYY-MM-DD) of the exception in force at `moment` that
    covers it longest."""
    days: dict[str, str] = {}
    for _, exception in active_at(table, moment).iterrows():
        for finding_id in findings.loc[matches(findings, exception), "finding_id"]:
            days[str(finding_id)] = max(days.get(str(finding_id), ""), str(exception["last_day"]))
    return days


def for_night(update: FindingsUpdate, table: pd.DataFrame, since: datetime,
              now: datetime) -> FindingsUpdate:
    """The night's update with exceptions applied: open findings covered now are `accepted`;
    those whose cover ended in (since, now] are news again ("exception ended")."""
    if table.empty:
        return update
    open_now = update.open_now
    back = expired_between(open_now, table, since, now)
    news = {**{fid: "exception ended" for fid in sorted(back)}, **update.news}
    return dataclasses.replace(update, news=news, accepted=covering(open_now, table, now))


def expired_between(findings: pd.DataFrame, table: pd.DataFrame, start: datetime,
                    end: datetime) -> set[str]:
    """Findings whose cover ended in (start, end] and that no other exception still covers."""
    if table.empty:
        return set()
    ended = table[(table["expires_at"] > pd.Timestamp(start))
                  & (table["expires_at"] <= pd.Timestamp(end))]
    ids: set[str] = set()
    for _, exception in ended.iterrows():
        ids |= set(findings.loc[matches(findings, exception), "finding_id"])
    return ids - covered(findings, table, end)


def target(finding_id: str | None, mailbox: str | None, address: str | None,
           rule: str | None) -> tuple[Scope, str]:
    """Exactly one of the four: what the exception is for."""
    given = [(scope, value) for scope, value in zip(
        SCOPES, (finding_id, mailbox, address, rule), strict=True) if value]
    if len(given) != 1:
        raise GuardError("accept exactly one thing: a finding ID, or --mailbox, --address or"
                         " --rule", ExitCode.USAGE)
    return given[0]


def for_audit(path: Path, start: datetime, end: datetime) -> pd.DataFrame:
    """The audit pack's exceptions.csv: every exception in force at some time in [start, end)."""
    from m365guard.notify.log import connect

    conn = connect(path)
    try:
        table = exceptions(conn)
    finally:
        conn.close()
    if table.empty:
        return table
    return table[(table["created_at"] < pd.Timestamp(end))
                 & (table["expires_at"] > pd.Timestamp(start))].reset_index(drop=True)

"""Read what the weekly outputs need from state: the one place the weekly page meets the store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pandas as pd

from m365guard.notify import breaches, exceptions
from m365guard.notify import log as notify_log
from m365guard.reports.weekly import WeeklyInput
from m365guard.reports.weeks import IsoWeek
from m365guard.state import StateDB

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_weekly_input(db: StateDB, week: IsoWeek, now: datetime, *, school_name: str,
                      rule_titles: Mapping[str, str]) -> WeeklyInput:
    """The findings, their history and the week's runs, plus when monitoring began."""
    earlier = db.runs_between(EPOCH, min(week.end, now))
    findings = db.findings()
    cut = min(week.end, now)
    conn = notify_log.connect(db.path)
    try:
        failed = notify_log.failures_between(conn, week.start, week.end)
        breaches.open_entries(conn, findings)
        log = breaches.entries(conn)
        table = exceptions.exceptions(conn)
    finally:
        conn.close()
    in_week = table[(table["created_at"] < pd.Timestamp(cut))
                    & (table["expires_at"] > pd.Timestamp(week.start))] if len(table) else table
    log = log[log["found_at"] < pd.Timestamp(cut)] if len(log) else log
    due = log[(log["decision"] == "") | (log["decided_at"] >= pd.Timestamp(cut))]
    return WeeklyInput(
        findings=findings,
        history=db.finding_history(),
        runs=[run for run in earlier if run.started_at >= week.start],
        monitoring_since=earlier[0].started_at if earlier else None,
        week=week,
        now=now,
        school_name=school_name,
        rule_titles=dict(rule_titles),
        undelivered=tuple((entry.at, f"{entry.kind} to {entry.role} by {entry.channel}",
                           entry.error) for entry in failed),
        accepted=frozenset(exceptions.covered(findings, table, cut)),
        returned=frozenset(exceptions.expired_between(findings, table, week.start, cut)),
        exceptions=in_week,
        breaches=due,
    )

"""The weekly outputs for the headteacher: summary, by-staff and detail CSVs, and one HTML page.

Why a week: the headteacher, DSL and DPO decide on Monday what to follow up. The numbers come
from the findings' status history, so "open at the end of the week" is what was open then, not
what is open when the report happens to be built. Weeks are cut on the school's clock
(weeks.py). This module turns values (findings, history, runs) into tables; weekly_page.py
draws the page and weekly_chart.py its trend chart. Nothing here reads state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from m365guard.notify.roles import next_step
from m365guard.records import NIGHT_ORDER, RunRecord
from m365guard.reports.weeks import IsoWeek, local_day
from m365guard.tables import SEVERITY_RANK

# an escalated or retargeted finding is news like a new one (ledger.py)
OPENING_EVENTS = ("opened", "reopened", "escalated", "retargeted")
STATUS_EVENTS = {"opened": "open", "reopened": "open", "resolved": "resolved",
                 "acknowledged": "acknowledged", "escalated": "open", "retargeted": "open"}
TREND_WEEKS = 12
NOT_MONITORED = "not monitored yet"
NOT_YET = "not yet"  # a night of the week in progress that has not come

SUMMARY_COLUMNS = ("week", "rule_id", "policy_clause", "severity", "new_this_week",
                   "new_last_week", "change", "open_at_week_end", "resolved_this_week",
                   "acknowledged_this_week")
BY_STAFF_COLUMNS = ("week", "actor", "actor_role", "new_this_week", "open_at_week_end",
                    "high_open", "medium_open", "rules")
DETAIL_COLUMNS = ("week", "section", "severity", "actor", "actor_role", "who_acts",
                  "next_step", "rule_id", "policy_clause", "summary", "counterparts",
                  "occurred_at", "first_seen", "last_seen", "times_seen", "status_at_week_end",
                  "object_type", "object_id", "finding_id")


@dataclass(frozen=True)
class WeeklyInput:
    """Everything the weekly outputs are made from (values read from state by the CLI)."""

    findings: pd.DataFrame  # findings with their state columns
    history: pd.DataFrame  # their status events
    runs: list[RunRecord]  # the runs that started in the week
    monitoring_since: datetime | None  # when the first run ever started
    week: IsoWeek
    now: datetime
    school_name: str
    rule_titles: Mapping[str, str] = field(default_factory=dict)
    # alerts and pages that could not be delivered during the week: (when, what, why)
    undelivered: tuple[tuple[datetime, str, str], ...] = ()
    accepted: frozenset[str] = frozenset()  # covered by an exception at the week's end
    returned: frozenset[str] = frozenset()  # an exception ended in the week: back as new
    exceptions: pd.DataFrame = field(default_factory=pd.DataFrame)  # in force in the week
    breaches: pd.DataFrame = field(default_factory=pd.DataFrame)  # decisions still due

    def title(self, rule_id: str) -> str:
        """A rule's plain title."""
        return self.rule_titles.get(rule_id, rule_id)


def status_at(history: pd.DataFrame, moment: datetime) -> pd.Series:
    """Each finding's status at `moment`, from its history (a 'seen' never changes status)."""
    changes = history[history["event"].isin(STATUS_EVENTS) & (history["at"] < moment)]
    last = changes.sort_values("at", kind="stable").groupby("finding_id")["event"].last()
    return last.map(STATUS_EVENTS)


def ids_with(history: pd.DataFrame, events: tuple[str, ...], week: IsoWeek) -> set[str]:
    """Findings with one of `events` inside the week."""
    mask = history["event"].isin(events) & (history["at"] >= week.start) & (
        history["at"] < week.end
    )
    return set(history.loc[mask, "finding_id"])


def _by_severity(table: pd.DataFrame, *then: str) -> pd.DataFrame:
    ranked = table.assign(_rank=table["severity"].map(SEVERITY_RANK).fillna(-1))
    ordered = ranked.sort_values(["_rank", *then], ascending=[False] + [True] * len(then),
                                 kind="stable")
    return ordered.drop(columns="_rank").reset_index(drop=True)


def _new_ids(data: WeeklyInput) -> set[str]:
    back = set(data.returned) & set(open_at_end(data)["finding_id"])
    return (ids_with(data.history, OPENING_EVENTS, data.week) | back) - set(data.accepted)


def new_this_week(data: WeeklyInput) -> pd.DataFrame:
    """Findings opened or reopened in the week, or back after their exception ended, highest
    severity first (accepted ones excluded): never cut off."""
    new = data.findings[data.findings["finding_id"].isin(_new_ids(data))]
    return _by_severity(new, "first_seen", "finding_id")


def open_at_end(data: WeeklyInput) -> pd.DataFrame:
    """Findings open at the end of the week (or now, for a week in progress)."""
    status = status_at(data.history, min(data.week.end, data.now))
    return data.findings[data.findings["finding_id"].isin(status[status == "open"].index)]


def still_open(data: WeeklyInput) -> pd.DataFrame:
    """Open at the week's end and not new this week: the older items still waiting."""
    table = open_at_end(data)
    hidden = _new_ids(data) | set(data.accepted)
    return _by_severity(table[~table["finding_id"].isin(hidden)], "actor", "first_seen")


def weekly_summary(findings: pd.DataFrame, history: pd.DataFrame, week: IsoWeek) -> pd.DataFrame:
    """Per rule, clause and severity: new this week and last, change, open, resolved, acked."""
    this_week = ids_with(history, OPENING_EVENTS, week)
    last_week = ids_with(history, OPENING_EVENTS, week.shifted(-1))
    resolved = ids_with(history, ("resolved",), week)
    acknowledged = ids_with(history, ("acknowledged",), week)
    status = status_at(history, week.end)
    open_ids = set(status[status == "open"].index)
    rows = []
    keys = ["rule_id", "policy_clause", "severity"]
    for (rule_id, clause, severity), group in findings.groupby(keys, sort=False):
        ids = set(group["finding_id"])
        counts = [len(ids & this_week), len(ids & last_week), len(ids & open_ids),
                  len(ids & resolved), len(ids & acknowledged)]
        if not any(counts):
            continue
        rows.append({
            "week": week.label, "rule_id": rule_id,
            "policy_clause": clause, "severity": severity,
            "new_this_week": counts[0], "new_last_week": counts[1],
            "change": counts[0] - counts[1], "open_at_week_end": counts[2],
            "resolved_this_week": counts[3], "acknowledged_this_week": counts[4],
        })
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return _by_severity(table, "rule_id", "policy_clause")


def weekly_by_staff(findings: pd.DataFrame, history: pd.DataFrame, week: IsoWeek) -> pd.DataFrame:
    """Per member of staff (the actor): new this week, open at week end, and which rules."""
    this_week = ids_with(history, OPENING_EVENTS, week)
    status = status_at(history, week.end)
    open_ids = set(status[status == "open"].index)
    rows = []
    for actor, group in findings.groupby("actor", sort=True):
        is_new = group["finding_id"].isin(this_week)
        is_open = group["finding_id"].isin(open_ids)
        if not (is_new.any() or is_open.any()):
            continue
        active = group[is_new | is_open]
        rows.append({
            "week": week.label, "actor": actor, "actor_role": active["actor_role"].iloc[0],
            "new_this_week": int(is_new.sum()), "open_at_week_end": int(is_open.sum()),
            "high_open": int((is_open & (group["severity"] == "high")).sum()),
            "medium_open": int((is_open & (group["severity"] == "medium")).sum()),
            "rules": ";".join(sorted(set(active["rule_id"]))),
        })
    table = pd.DataFrame(rows, columns=list(BY_STAFF_COLUMNS))
    return table.sort_values(
        ["high_open", "open_at_week_end", "actor"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def local_iso(value: datetime | None, data: WeeklyInput) -> str:
    """ISO 8601 with the school's UTC offset (Excel reads it as a date); empty if missing."""
    if value is None or pd.isna(value):
        return ""
    moment = pd.Timestamp(value).to_pydatetime()
    return moment.astimezone(data.week.zone).isoformat(timespec="seconds")


def weekly_detail(data: WeeklyInput) -> pd.DataFrame:
    """One row per new or still-open finding, with who acts and the next step."""
    status = status_at(data.history, min(data.week.end, data.now))
    rows = []
    for section, table in (("new", new_this_week(data)), ("still open", still_open(data))):
        for row in table.to_dict("records"):
            step = next_step(row["rule_id"])
            rows.append({
                "week": data.week.label, "section": section, "severity": row["severity"],
                "actor": row["actor"], "actor_role": row["actor_role"], "who_acts": step.who,
                "next_step": step.step, "rule_id": row["rule_id"],
                "policy_clause": row["policy_clause"], "summary": row["summary"],
                "counterparts": row["counterparts"],
                "occurred_at": local_iso(row["occurred_at"], data),
                "first_seen": local_iso(row["first_seen"], data),
                "last_seen": local_iso(row["last_seen"], data),
                "times_seen": row["times_seen"],
                "status_at_week_end": status.get(row["finding_id"], ""),
                "object_type": row["object_type"], "object_id": row["object_id"],
                "finding_id": row["finding_id"],
            })
    return pd.DataFrame(rows, columns=list(DETAIL_COLUMNS))


def monitored(week: IsoWeek, since: datetime | None) -> bool:
    """Had monitoring started by the end of `week`?"""
    return since is not None and since < week.end


def weekly_trend(data: WeeklyInput) -> pd.DataFrame:
    """New findings per rule in each of the TREND_WEEKS weeks up to the week (rows: labels).

    A week before monitoring began is NaN (not monitored yet), never 0.
    """
    weeks = [data.week.shifted(-back) for back in range(TREND_WEEKS - 1, -1, -1)]
    rule_of = dict(zip(data.findings["finding_id"], data.findings["rule_id"], strict=True))
    rules = sorted(set(data.findings["rule_id"]))
    counts: dict[str, list[float]] = {rule: [] for rule in rules}
    for each in weeks:
        opened = [rule_of[fid] for fid in ids_with(data.history, OPENING_EVENTS, each)
                  if fid in rule_of]
        for rule in rules:
            counts[rule].append(float(opened.count(rule))
                                if monitored(each, data.monitoring_since) else float("nan"))
    return pd.DataFrame(counts, index=[each.label for each in weeks], columns=rules)


def monitoring_nights(data: WeeklyInput) -> pd.DataFrame:
    """One row per day of the week: how the best run of that local day ended, or why none."""
    zone = data.week.zone
    since_day = local_day(data.monitoring_since, zone) if data.monitoring_since else None
    today = local_day(data.now, zone)
    rows = []
    for day in data.week.days:
        outcomes = [run.outcome for run in data.runs if local_day(run.started_at, zone) == day]
        best: str
        if outcomes:
            best = max(outcomes, key=NIGHT_ORDER.__getitem__)
        elif since_day is None or day < since_day:
            best = NOT_MONITORED
        elif day > today or (day == today and not outcomes):
            best = NOT_YET
        else:
            best = "missed"
        rows.append({"date": day, "outcome": best, "runs": len(outcomes)})
    return pd.DataFrame(rows)


def rules_off(data: WeeklyInput) -> dict[str, int]:
    """Rule id -> on how many nights of the week it was turned off (its findings stayed as
    they were: not checked is not resolved)."""
    zone = data.week.zone
    nights: dict[str, set[object]] = {}
    for run in data.runs:
        for rule_id in run.rules_off:
            nights.setdefault(rule_id, set()).add(local_day(run.started_at, zone))
    return {rule_id: len(days) for rule_id, days in sorted(nights.items())}


def days_label(week: IsoWeek) -> str:
    """'Monday 24 November to Sunday 30 November 2025' (UK order)."""
    return f"Monday {week.monday:%-d %B} to Sunday {week.sunday:%-d %B %Y}"


def uk_date(moment: datetime, data: WeeklyInput, *, with_time: bool = False,
            year: bool = True) -> str:
    """A local date as people in the UK write it: 'Tue 25 Nov 2025' (and '14:05')."""
    local = moment.astimezone(data.week.zone)
    shown = f"{local:%a %-d %b %Y}" if year else f"{local:%a %-d %b}"
    return shown + (f" {local:%H:%M}" if with_time else "")


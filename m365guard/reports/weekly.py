"""The weekly outputs for the headteacher: summary CSV, by-staff CSV, and one HTML page.

Why a week: the headteacher (and DSL) decide on Monday what to follow up. The numbers come from
the findings' status history, so "open at the end of the week" is what was open then, not what
is open when the report happens to be built. The HTML page is self-contained (inline CSS, the
trend chart as inline SVG) so it can be emailed or opened from a share without a network;
every piece of text in it is escaped, because subjects and names come from outside the school.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from m365guard.errors import ExitCode, GuardError
from m365guard.reports.csvfile import write_csv, write_text_atomic
from m365guard.state import RunRecord, StateDB
from m365guard.tables import SEVERITIES

OPENING_EVENTS = ("opened", "reopened")
STATUS_EVENTS = {"opened": "open", "reopened": "open", "resolved": "resolved",
                 "acknowledged": "acknowledged"}
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
TREND_WEEKS = 12
ACTION_SEVERITIES = ("high", "medium")
MAX_ACTION_ITEMS = 30

SUMMARY_COLUMNS = ("week", "rule_id", "policy_clause", "severity", "new_this_week",
                   "new_last_week", "change", "open_at_week_end", "resolved_this_week",
                   "acknowledged_this_week")
BY_STAFF_COLUMNS = ("week", "actor", "actor_role", "new_this_week", "open_at_week_end",
                    "high_open", "medium_open", "rules")


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week (Monday to Sunday, UTC)."""

    year: int
    week: int

    @classmethod
    def of(cls, day: date) -> IsoWeek:
        """The week a day falls in."""
        year, week, _ = day.isocalendar()
        return cls(year, week)

    @classmethod
    def last_complete(cls, now: datetime) -> IsoWeek:
        """The latest week that has ended by `now`."""
        return cls.of(now.astimezone(UTC).date() - timedelta(days=7))

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """Parse '2025-W10' (GuardError naming the expected form otherwise)."""
        try:
            year, week = text.strip().upper().split("-W")
            monday = date.fromisocalendar(int(year), int(week), 1)
        except ValueError as exc:
            raise GuardError(
                f"week {text!r} is not an ISO week; write it like 2025-W10", ExitCode.USAGE
            ) from exc
        return cls.of(monday)

    @property
    def label(self) -> str:
        """'2025-W10'."""
        return f"{self.year}-W{self.week:02d}"

    @property
    def monday(self) -> date:
        """The first day of the week."""
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def start(self) -> datetime:
        """Monday 00:00 UTC."""
        return datetime.combine(self.monday, datetime.min.time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The next Monday 00:00 UTC (exclusive)."""
        return self.start + timedelta(days=7)

    def shifted(self, weeks: int) -> IsoWeek:
        """The week `weeks` later (negative: earlier)."""
        return IsoWeek.of(self.monday + timedelta(weeks=weeks))


@dataclass(frozen=True)
class WeeklyPaths:
    """The files one weekly report wrote."""

    summary_csv: Path
    by_staff_csv: Path
    html: Path


def status_at(history: pd.DataFrame, moment: datetime) -> pd.Series:
    """Each finding's status at `moment`, from its history (a 'seen' never changes status)."""
    changes = history[history["event"].isin(STATUS_EVENTS) & (history["at"] < moment)]
    last = changes.sort_values("at", kind="stable").groupby("finding_id")["event"].last()
    return last.map(STATUS_EVENTS)


def _ids_with(history: pd.DataFrame, events: tuple[str, ...], week: IsoWeek) -> set[str]:
    mask = history["event"].isin(events) & (history["at"] >= week.start) & (
        history["at"] < week.end
    )
    return set(history.loc[mask, "finding_id"])


def weekly_summary(findings: pd.DataFrame, history: pd.DataFrame, week: IsoWeek) -> pd.DataFrame:
    """Per rule, clause and severity: new this week and last, change, open, resolved, acked."""
    this_week = _ids_with(history, OPENING_EVENTS, week)
    last_week = _ids_with(history, OPENING_EVENTS, week.shifted(-1))
    resolved = _ids_with(history, ("resolved",), week)
    acknowledged = _ids_with(history, ("acknowledged",), week)
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
    table["_rank"] = table["severity"].map(SEVERITY_RANK)
    table = table.sort_values(
        ["_rank", "rule_id", "policy_clause"], ascending=[False, True, True], kind="stable"
    )
    return table.drop(columns="_rank").reset_index(drop=True)


def weekly_by_staff(findings: pd.DataFrame, history: pd.DataFrame, week: IsoWeek) -> pd.DataFrame:
    """Per member of staff (the actor): new this week, open at week end, and which rules."""
    this_week = _ids_with(history, OPENING_EVENTS, week)
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


def weekly_trend(findings: pd.DataFrame, history: pd.DataFrame, week: IsoWeek) -> pd.DataFrame:
    """New findings per rule in each of the TREND_WEEKS weeks up to `week` (rows: week labels)."""
    weeks = [week.shifted(-back) for back in range(TREND_WEEKS - 1, -1, -1)]
    rule_of = dict(zip(findings["finding_id"], findings["rule_id"], strict=True))
    rules = sorted(set(findings["rule_id"]))
    data = {rule: [0] * len(weeks) for rule in rules}
    for position, each in enumerate(weeks):
        for finding_id in _ids_with(history, OPENING_EVENTS, each):
            if finding_id in rule_of:
                data[rule_of[finding_id]][position] += 1
    return pd.DataFrame(data, index=[each.label for each in weeks], columns=rules)


def monitoring_nights(runs: list[RunRecord], week: IsoWeek) -> pd.DataFrame:
    """One row per day of the week: did a run start, and how did the best one end."""
    order = {"complete": 3, "partial": 2, "failed": 1, "running": 0}
    rows = []
    for offset in range(7):
        day = week.monday + timedelta(days=offset)
        outcomes = [run.outcome for run in runs if run.started_at.astimezone(UTC).date() == day]
        best = max(outcomes, key=order.__getitem__) if outcomes else "missed"
        rows.append({"date": day, "outcome": best, "runs": len(outcomes)})
    return pd.DataFrame(rows)


def _trend_svg(trend: pd.DataFrame, rule_titles: Mapping[str, str]) -> str:
    """The trend chart as an inline SVG (matplotlib, no pyplot state, deterministic ids)."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "m365guard"
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 3.2), dpi=100)
    axes = figure.add_subplot()
    positions = list(range(len(trend.index)))
    for rule in trend.columns:
        axes.plot(positions, trend[rule].tolist(), marker="o", label=rule_titles.get(rule, rule))
    axes.set_xticks(positions, [label.split("-")[1] for label in trend.index])
    axes.set_ylabel("new findings")
    axes.set_xlabel("week")
    axes.set_ylim(bottom=0)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if len(trend.columns):
        axes.legend(fontsize=8, loc="upper left", frameon=False)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


_CSS = """
body{font-family:Segoe UI,Arial,sans-serif;max-width:60rem;margin:2rem auto;color:#222;
line-height:1.45;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ccc}
.lead{font-size:1.1rem}.muted{color:#666}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.sev-high{color:#a30000;font-weight:bold}.sev-medium{color:#8a5300}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.5rem .8rem}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(text)}</th>" for text in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def weekly_html(
    findings: pd.DataFrame,
    history: pd.DataFrame,
    runs: list[RunRecord],
    week: IsoWeek,
    *,
    school_name: str,
    rule_titles: Mapping[str, str],
) -> str:
    """The one-page summary a headteacher reads: headline, monitoring, what to act on, trend."""
    esc = html.escape
    summary = weekly_summary(findings, history, week)
    nights = monitoring_nights(runs, week)
    status = status_at(history, week.end)
    open_now = findings[findings["finding_id"].isin(status[status == "open"].index)]
    new_ids = _ids_with(history, OPENING_EVENTS, week)
    new_high = int(findings[findings["finding_id"].isin(new_ids)]["severity"].eq("high").sum())
    sunday = week.monday + timedelta(days=6)
    title = f"Acceptable Use Policy checks: week {week.week}, {week.year}"
    headline = (
        f"This week m365guard found {_plural(int(summary['new_this_week'].sum()), 'new concern')}"
        f" ({new_high} high). {_plural(len(open_now), 'concern')} remained open at the end of"
        f" the week; {int(summary['resolved_this_week'].sum())} resolved and"
        f" {int(summary['acknowledged_this_week'].sum())} acknowledged during the week."
    )
    complete = int((nights["outcome"] == "complete").sum())
    gaps = nights[nights["outcome"] != "complete"]
    monitoring = f"Checks ran completely on {complete} of 7 nights."
    if not gaps.empty:
        described = ", ".join(
            f"{row['date']:%a %d %b} ({row['outcome']})" for row in gaps.to_dict("records")
        )
        monitoring += (
            f" Not complete: {described}. Nights that were missed or incomplete were not fully"
            " checked, so no findings from them does not mean nothing happened."
        )
    actions = open_now[open_now["severity"].isin(ACTION_SEVERITIES)].assign(
        _rank=lambda df: df["severity"].map(SEVERITY_RANK)
    ).sort_values(["_rank", "first_seen", "finding_id"], ascending=[False, True, True])
    action_rows = [
        [
            f'<span class="sev-{esc(row["severity"])}">{esc(row["severity"])}</span>',
            esc(row["actor"]),
            esc(row["summary"]),
            esc(rule_titles.get(row["rule_id"], row["rule_id"]))
            + f'<br><span class="muted">{esc(row["policy_clause"])}</span>',
            esc(f"{row['first_seen']:%d %b %Y}"),
            esc(str(row["times_seen"])),
            f'<code>{esc(row["finding_id"])}</code>',
        ]
        for row in actions.head(MAX_ACTION_ITEMS).to_dict("records")
    ]
    more = len(actions) - len(action_rows)
    summary_rows = [
        [esc(rule_titles.get(row["rule_id"], row["rule_id"])), esc(row["policy_clause"]),
         esc(row["severity"]), str(row["new_this_week"]), str(row["new_last_week"]),
         f"{row['change']:+d}", str(row["open_at_week_end"]), str(row["resolved_this_week"])]
        for row in summary.to_dict("records")
    ]
    trend = weekly_trend(findings, history, week)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en-GB"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">{esc(school_name)} · {esc(f"{week.monday:%d %B} to {sunday:%d %B %Y}")}'
        "</p>",
        f'<p class="lead">{esc(headline)}</p>',
        f'<p class="{"warn" if not gaps.empty else "muted"}">{esc(monitoring)}</p>',
        "<h2>Trend over the last 12 weeks</h2>",
        '<figure role="img" aria-label="New findings per week by check">',
        _trend_svg(trend, rule_titles),
        "</figure>",
        "<h2>To act on</h2>",
    ]
    if action_rows:
        parts.append(
            "<p>Open concerns of high or medium severity, oldest first within each severity."
            " When one has been dealt with, record it with"
            " <code>m365guard findings ack ID --by NAME --reason WHAT-WAS-DONE</code>.</p>"
        )
        parts.append(_table(
            ["Severity", "Who", "What happened", "Check and policy clause", "First seen",
             "Times seen", "ID"], action_rows))
        if more > 0:
            parts.append(f"<p>{esc(_plural(more, 'more item'))}: see the nightly findings CSV.</p>")
    else:
        parts.append("<p>Nothing of high or medium severity is open.</p>")
    parts.append("<h2>By check</h2>")
    if summary_rows:
        parts.append(_table(
            ["Check", "Clause", "Severity", "New this week", "New last week", "Change",
             "Open at week end", "Resolved"], summary_rows))
    else:
        parts.append("<p>No findings this week or last.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_weekly_reports(
    out_dir: Path,
    findings: pd.DataFrame,
    history: pd.DataFrame,
    runs: list[RunRecord],
    week: IsoWeek,
    *,
    school_name: str,
    rule_titles: Mapping[str, str] | None = None,
) -> WeeklyPaths:
    """Write weekly-summary-YYYY-Www.csv, weekly-by-staff.csv and weekly-summary.html.

    `findings` / `history` are StateDB.findings() / finding_history(); `runs` the runs of the
    week. The by-staff CSV and the HTML page are the latest week's (stable names to bookmark);
    the summary CSV keeps one file per week.
    """
    titles = dict(rule_titles or {})
    return WeeklyPaths(
        summary_csv=write_csv(weekly_summary(findings, history, week),
                              out_dir / f"weekly-summary-{week.label}.csv"),
        by_staff_csv=write_csv(weekly_by_staff(findings, history, week),
                               out_dir / "weekly-by-staff.csv"),
        html=write_text_atomic(
            out_dir / "weekly-summary.html",
            weekly_html(findings, history, runs, week, school_name=school_name,
                        rule_titles=titles),
        ),
    )


def weekly_from_state(
    db: StateDB,
    out_dir: Path,
    now: datetime,
    *,
    week: IsoWeek | None = None,
    school_name: str,
    rule_titles: Mapping[str, str] | None = None,
) -> WeeklyPaths:
    """The weekly reports for `week` (default: the last complete ISO week before `now`)."""
    chosen = week or IsoWeek.last_complete(now)
    return write_weekly_reports(
        out_dir,
        db.findings(),
        db.finding_history(),
        db.runs_between(chosen.start, chosen.end),
        chosen,
        school_name=school_name,
        rule_titles=rule_titles,
    )

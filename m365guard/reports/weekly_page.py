"""The weekly page: what a headteacher, DSL or DPO reads on Monday morning, in that order.

Why this order: the first screen must answer "is anything wrong, and what do I do": a verdict,
who has to act, then every finding new this week (marked NEW, never cut off). Below it, what
is still open, grouped by person with the next step and who acts; then how completely the
nights were checked, the trend, and the figures per check. The page is self-contained (inline
CSS, the chart as inline SVG) so it can be mailed or opened from a share without a network, and
prints on at most two A4 pages for a normal week (print stylesheet); the detail is the CSV.
Every piece of text is escaped and stripped of control characters: subjects and names come
from outside the school.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

import pandas as pd

from m365guard.notify.roles import next_step
from m365guard.reports.weekly import (
    NOT_MONITORED,
    NOT_YET,
    WeeklyInput,
    days_label,
    monitoring_nights,
    new_this_week,
    rules_off,
    still_open,
    uk_date,
    weekly_summary,
    weekly_trend,
)
from m365guard.reports.weekly_chart import trend_svg

ACTION_SEVERITIES = ("high", "medium")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")

_CSS = """
body{font-family:Segoe UI,Arial,sans-serif;max-width:78rem;margin:.8rem auto;color:#222;
line-height:1.3;padding:0 1rem;font-size:15px}
h1{font-size:1.15rem;margin:0}h2{font-size:1rem;margin:.6rem 0 .25rem;
border-bottom:1px solid #ccc}
.muted{color:#666}.small{font-size:.85em}
.verdict{padding:.3rem .8rem;border-left:6px solid #2e7d32;background:#eef7ee;margin:.4rem 0}
.verdict.act{border-color:#b00020;background:#fdecee}.verdict p{margin:.15rem 0}
table{border-collapse:collapse;width:100%;font-size:.8rem;line-height:1.25}
th,td{border:1px solid #ddd;padding:.15rem .35rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.nowrap{white-space:nowrap}.sev-high,.late{color:#a30000;font-weight:bold}.sev-medium{color:#8a5300}
.new{background:#b00020;color:#fff;font-weight:bold;padding:0 .3rem;border-radius:3px;
font-size:.75rem;margin-right:.3rem}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.3rem .7rem}
.breaches{display:grid;grid-template-columns:1fr 1fr 1fr;gap:0 .8rem;font-size:.75rem}
.breach-open{border-bottom:1px solid #eee;padding:.05rem 0}
figure{margin:.3rem 0}figure svg{width:100%;height:auto;max-height:15rem}
@media print{
@page{size:A4;margin:10mm}
body{max-width:none;margin:0;padding:0;font-size:8.5pt;line-height:1.25}
h1{font-size:13pt}h2{font-size:10.5pt;break-after:avoid;margin-top:.6rem}
table{font-size:7.5pt}tr{break-inside:avoid}th,td{padding:.1rem .3rem}
figure{display:none}.screen{display:none}.verdict,.warn{-webkit-print-color-adjust:exact;
print-color-adjust:exact}
}
"""


def text(value: object) -> str:
    """Escaped, control characters removed: safe to place anywhere in the page."""
    return html.escape(_CONTROL.sub("", str(value)))


def plural(count: int, word: str) -> str:
    """'1 concern', '2 concerns'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _table(headers: Iterable[str], bodies: Iterable[str], css: str = "") -> str:
    head = "".join(f"<th>{text(name)}</th>" for name in headers)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead>{"".join(bodies)}</table>'


def _row(cells: Iterable[str]) -> str:
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _severity(value: str) -> str:
    return f'<span class="sev-{text(value)}">{text(value)}</span>'


def _verdict(data: WeeklyInput, new: pd.DataFrame, waiting: pd.DataFrame,
             nights: pd.DataFrame) -> str:
    """The answer to "is anything wrong, and what do I do", in a few lines."""
    new_high = int(new["severity"].eq("high").sum())
    lines: list[str] = []
    if len(new):
        lines.append(f"<p><strong>{text(plural(len(new), 'new concern'))} this week"
                     f" ({new_high} high)</strong>, marked NEW below.</p>")
    else:
        lines.append("<p><strong>Nothing new this week.</strong></p>")
    if len(waiting):
        lines.append(f"<p>{text(plural(len(waiting), 'older concern'))} still open"
                     f" ({int(waiting['severity'].eq('high').sum())} high).</p>")
    who: dict[str, int] = {}
    for rule_id in [*new["rule_id"], *waiting["rule_id"]]:
        step = next_step(str(rule_id))
        who[step.who] = who.get(step.who, 0) + 1
    if who:
        lines.append("<p>Who should act: " + " · ".join(
            f"<strong>{text(name)}</strong> {count}" for name, count in sorted(who.items()))
            + ".</p>")
    gaps = nights[~nights["outcome"].isin(("complete", NOT_MONITORED, NOT_YET))]
    if not gaps.empty:
        lines.append(f"<p>Checks were incomplete on {text(plural(len(gaps), 'night'))}: see"
                     " Monitoring. No findings from those nights does not mean nothing"
                     " happened.</p>")
    if len(data.breaches):
        count = len(data.breaches)
        lines.insert(0, f"<p><strong>The DPO must decide on {count} possible data"
                     f" breach{'es' if count != 1 else ''}</strong>"
                     " (report to the ICO or not, within 72 hours of discovery).</p>")
    if data.undelivered:
        lines.append(f"<p>{text(plural(len(data.undelivered), 'alert'))} could not be"
                     " delivered this week: see below.</p>")
    lines = ["<p>" + " ".join(line.removeprefix("<p>").removesuffix("</p>") for line in lines)
             + "</p>"]
    acting = bool(new_high or len(gaps) or len(new) or len(waiting) or data.undelivered
                  or len(data.breaches))
    return f'<div class="verdict{" act" if acting else ""}">{"".join(lines)}</div>'


def _new_section(data: WeeklyInput, new: pd.DataFrame) -> str:
    if new.empty:
        return "<h2>New this week</h2><p>No new concerns this week.</p>"
    rows = []
    for row in new.to_dict("records"):
        step = next_step(row["rule_id"])
        found = text(uk_date(row["first_seen"], data, with_time=True, year=False))
        rows.append(_row([
            f'<span class="new">NEW</span>{_severity(row["severity"])}',
            text(row["actor"]),
            text(row["summary"]) + f' <span class="muted small">({text(row["policy_clause"])})'
            "</span>",
            f'<span class="nowrap">{found}</span>',
            f"<strong>{text(step.who)}</strong>: {text(step.short)}",
        ]))
    return (f"<h2>New this week ({len(new)})</h2>"
            + _table(["", "Who", "What happened", "Found", "Next step"],
                     ["<tbody>" + "".join(rows) + "</tbody>"]))


def _open_section(data: WeeklyInput, waiting: pd.DataFrame) -> str:
    """Still open, one row per person; one line per kind: how many, who acts, the next step."""
    minor = waiting[~waiting["severity"].isin(ACTION_SEVERITIES)]
    waiting = waiting[waiting["severity"].isin(ACTION_SEVERITIES)]
    note = (f'<p class="muted small">Also open: {text(plural(len(minor), "item"))} of low or info'
            " severity, listed in the detail CSV.</p>" if len(minor) else "")
    if waiting.empty:
        return "<h2>Still open</h2><p>Nothing older of high or medium severity is still open.</p>" \
            + note
    rows = []
    for actor, group in waiting.groupby("actor", sort=False):
        lines = []
        for rule_id, items in group.groupby("rule_id", sort=False):
            step = next_step(str(rule_id))
            lines.append(f"{len(items)} × {text(step.what)}"
                         f" ({_severity(str(items['severity'].iloc[0]))})"
                         f" → <strong>{text(step.who)}</strong>: {text(step.short)}")
        since = uk_date(group["first_seen"].min(), data)
        rows.append(_row([
            f'{text(actor)}<br><span class="muted small">{text(group["actor_role"].iloc[0])},'
            f" open since {text(since)}</span>",
            "<br>".join(lines),
        ]))
    return (f"<h2>Still open, by person ({len(waiting)} of high or medium severity)</h2>"
            + _table(["Person", "What is open → who acts: next step"],
                     ["<tbody>" + "".join(rows) + "</tbody>"]) + note)


def _monitoring(data: WeeklyInput, nights: pd.DataFrame) -> str:
    done = int((nights["outcome"] == "complete").sum())
    counted = nights[~nights["outcome"].isin((NOT_MONITORED, NOT_YET))]
    line = f"Checks ran completely on {done} of {len(counted)} nights."
    gaps = counted[counted["outcome"] != "complete"]
    if not gaps.empty:
        line += " Not complete: " + ", ".join(
            f"{row['date']:%a %-d %b} ({row['outcome']})" for row in gaps.to_dict("records")
        ) + "."
    notes = []
    if (nights["outcome"] == NOT_MONITORED).any():
        notes.append(f"{plural(int((nights['outcome'] == NOT_MONITORED).sum()), 'night')}"
                     " before monitoring began: not monitored yet.")
    if (nights["outcome"] == NOT_YET).any():
        notes.append(f"{plural(int((nights['outcome'] == NOT_YET).sum()), 'night')}"
                     " of this week still to come.")
    css = "warn" if not gaps.empty else "muted"
    off = [f"{data.title(rule_id)} on {plural(count, 'night')}"
           for rule_id, count in rules_off(data).items()]
    turned_off = ('<p class="warn">Not checked, turned off in policies.toml:'
                  f' {text("; ".join(off))}. Their findings are kept as they were, not'
                  " resolved.</p>" if off else "")
    return (f'<h2>Monitoring</h2><p class="{css}">{text(line)}</p>' + turned_off
            + "".join(f'<p class="muted small">{text(note)}</p>' for note in notes))


def _breaches(data: WeeklyInput) -> str:
    """Decisions the DPO still owes: first on the page, the nearest deadline first."""
    due = data.breaches
    if due.empty:
        return ""
    items = []
    for row in due.sort_values("decide_by", kind="stable").to_dict("records"):
        late = row["decide_by"] <= data.now
        deadline = text(uk_date(row["decide_by"], data, with_time=True, year=False))
        sent = (f", sent {text(uk_date(row['sent_at'], data, year=False))}"
                if pd.notna(row["sent_at"]) else "")
        items.append(
            f'<div class="breach-open"><strong class="late">{"OVERDUE" if late else "DECIDE"}'
            f" by {deadline}</strong> {text(row['actor'])}: {row['addresses_shown']} shown"
            f" ({row['parents_or_personal']} parents'/personal){sent}, found"
            f" {text(uk_date(row['found_at'], data, year=False))} ·"
            f" <code>{text(row['finding_id'])}</code></div>")
    return (f"<h2>Breach decisions due: DPO ({len(due)}) <span class=\"muted small\">record"
            " with <code>m365guard breaches decide ID --decision reported|not-reportable"
            f" --by NAME --note WHY</code></span></h2><div class=\"breaches\">{''.join(items)}"
            "</div>")


def _exceptions(data: WeeklyInput) -> str:
    """Exceptions in force during the week: what, who decided, why, until when."""
    table = data.exceptions
    if table.empty:
        return ""
    rows = [_row([text(row["scope"]), text(row["value"]), text(row["by"]), text(row["reason"]),
                  text(f"{pd.Timestamp(row['last_day']):%a %-d %b %Y}")])
            for row in table.to_dict("records")]
    return (f"<h2>Accepted exceptions ({len(table)})</h2>"
            f'<p class="muted small">{text(plural(len(data.accepted), "finding"))} covered at'
            " the week's end, shown neither as new nor as open.</p>"
            + _table(["For", "Which", "Decided by", "Why", "Until"],
                     ["<tbody>" + "".join(rows) + "</tbody>"]))


def _undelivered(data: WeeklyInput) -> str:
    """Alerts that did not arrive: whoever relies on them must know to look here instead."""
    if not data.undelivered:
        return ""
    items = "".join(f"<li>{text(uk_date(at, data, with_time=True))}: {text(what)}: {text(why)}"
                    "</li>" for at, what, why in data.undelivered)
    return (f'<h2>Alerts not delivered ({len(data.undelivered)})</h2><div class="warn">'
            "<p>These could not be sent; the people they were for have not been told. IT"
            f" should fix the cause (see <code>m365guard doctor</code>).</p><ul>{items}</ul></div>")


def _by_check(data: WeeklyInput) -> str:
    summary = weekly_summary(data.findings, data.history, data.week)
    if summary.empty:
        return '<div class="screen"><h2>By check</h2><p>No findings this week or last.</p></div>'
    rows = [_row([text(next_step(row["rule_id"]).what), text(row["policy_clause"]),
                  _severity(row["severity"]), str(row["new_this_week"]),
                  str(row["new_last_week"]), f"{row['change']:+d}",
                  str(row["open_at_week_end"]), str(row["resolved_this_week"]),
                  str(row["acknowledged_this_week"])])
            for row in summary.to_dict("records")]
    return '<div class="screen"><h2>By check</h2>' + _table(
        ["Check", "Clause", "Severity", "New", "New last week", "Change", "Open at end",
         "Resolved", "Acknowledged"], ["<tbody>" + "".join(rows) + "</tbody>"]) + "</div>"


def weekly_html(data: WeeklyInput, *, detail_name: str) -> str:
    """The whole page for data.week."""
    week = data.week
    in_progress = week.in_progress(data.now)
    title = f"Acceptable Use Policy checks: week {week.week}, {week.year}"
    new = new_this_week(data)
    waiting = still_open(data)
    nights = monitoring_nights(data)
    period = days_label(week) + (" (week in progress)" if in_progress else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en-GB"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{text(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{text(title)} <span class=\"muted small\">{text(data.school_name)} ·"
        f" {text(period)}</span></h1>",
        _verdict(data, new, waiting, nights),
        _breaches(data),
        _new_section(data, new),
        _undelivered(data),
        _open_section(data, waiting),
        _exceptions(data),
        _monitoring(data, nights),
        '<h2 class="screen">New findings per week</h2>',
        '<figure role="img" aria-label="New findings per week by check">',
        trend_svg(weekly_trend(data), data.rule_titles, in_progress=in_progress),
        "</figure>",
        _by_check(data),
        "<h2>Detail and records</h2>",
        f'<p class="muted small">Built {text(uk_date(data.now, data, with_time=True))}.</p>',
        f"<p class=\"small\">Every item above, with addresses and ids: <code>{text(detail_name)}"
        f"</code>; figures per check: <code>weekly-summary-{text(week.label)}.csv</code> (both"
        " open in Excel). When an item has been dealt with, IT records it with"
        " <code>m365guard findings ack ID --by NAME --reason WHAT-WAS-DONE</code>.</p>",
        "</body></html>\n",
    ]
    return "\n".join(parts)

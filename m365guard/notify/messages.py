"""What the alerts say: one short mail per role, and a Teams card with counts only.

Why so little: an alert is read on a phone between lessons. It lists the night's new
high-severity findings for the one role that acts on them (who, what, when, the next step),
never a message body (m365guard never reads one), and links nothing outside the school. The
Teams card goes to a channel with a wider audience, so it carries counts per role, no names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from m365guard.notify.roles import ROLE_TITLES, Role, next_step
from m365guard.reports.weekly import WeeklyInput, new_this_week, still_open
from m365guard.reports.weekly_files import WeeklyPaths
from m365guard.reports.weekly_page import plural, text

_CSS = ("body{font-family:Segoe UI,Arial,sans-serif;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 6px;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}")


def local(moment: object, zone: ZoneInfo) -> str:
    """'Tue 3 Dec 2024 14:05' on the school's clock ('' when unknown)."""
    if moment is None or pd.isna(moment):  # type: ignore[call-overload]
        return ""
    stamp = pd.Timestamp(moment).to_pydatetime().astimezone(zone)  # type: ignore[arg-type]
    return f"{stamp:%a %-d %b %Y %H:%M}"


def alert_subject(role: Role, findings: pd.DataFrame, night: datetime, zone: ZoneInfo) -> str:
    """'m365guard: 2 new high-severity concerns for the DSL (Tue 3 Dec)'."""
    who = next_step(str(findings["rule_id"].iloc[0])).who if len(findings) else role
    day = night.astimezone(zone)
    return (f"m365guard: {plural(len(findings), 'new high-severity concern')} for the {who}"
            f" ({day:%a %-d %b})")


def alert_html(role: Role, findings: pd.DataFrame, school_name: str, zone: ZoneInfo,
               titles: dict[str, str]) -> str:
    """The mail body: who, what, when, next step; one row per finding."""
    rows = []
    for row in findings.to_dict("records"):
        step = next_step(str(row["rule_id"]))
        rows.append(
            "<tr>" + "".join(f"<td>{cell}</td>" for cell in (
                text(row["actor"]), text(row["summary"]) + f"<br><small>"
                f"{text(titles.get(row['rule_id'], row['rule_id']))}</small>",
                text(local(row["occurred_at"], zone)), text(local(row["first_seen"], zone)),
                f"<strong>{text(step.who)}</strong>: {text(step.step)}",
                f"<code>{text(row['finding_id'])}</code>")) + "</tr>")
    return (
        f"<!DOCTYPE html><html lang=\"en-GB\"><head><meta charset=\"utf-8\"><style>{_CSS}"
        f"</style></head><body><p>{text(school_name)}: last night's checks found"
        f" {text(plural(len(findings), 'new high-severity concern'))} for the"
        f" {text(ROLE_TITLES[role])} to act on.</p>"
        "<table><thead><tr><th>Who</th><th>What happened</th><th>When</th><th>Found</th>"
        "<th>Next step</th><th>ID</th></tr></thead><tbody>" + "".join(rows)
        + "</tbody></table><p><small>m365guard reads message details, never message bodies."
        " The weekly page lists everything still open.</small></p></body></html>")


def card(title: str, facts: list[tuple[str, str]], note: str) -> dict[str, object]:
    """A Teams Workflows webhook payload: one Adaptive Card (1.4) with a title and facts."""
    return {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium",
                     "wrap": True},
                    {"type": "FactSet", "facts": [{"title": name, "value": value}
                                                  for name, value in facts]},
                    {"type": "TextBlock", "text": note, "wrap": True, "isSubtle": True},
                ],
            },
        }],
    }


@dataclass(frozen=True)
class WeeklyDelivery:
    """The weekly page and its CSVs, ready to send."""

    week_label: str
    subject: str
    html: str
    attachments: tuple[Path, ...]
    card_facts: tuple[tuple[str, str], ...]


def weekly_delivery(data: WeeklyInput, paths: WeeklyPaths) -> WeeklyDelivery:
    """The page as the mail body, the detail and summary CSVs attached; counts for Teams."""
    new = new_this_week(data)
    waiting = still_open(data)
    high = int(new["severity"].eq("high").sum())
    subject = (f"{data.school_name}: Acceptable Use Policy checks, week {data.week.week}:"
               f" {plural(len(new), 'new concern')} ({high} high)")
    return WeeklyDelivery(
        week_label=data.week.label, subject=subject,
        html=paths.html.read_text(encoding="utf-8"),
        attachments=(paths.detail_csv, paths.summary_csv),
        card_facts=(("New this week", str(len(new))), ("of them high", str(high)),
                    ("Still open", str(len(waiting)))))

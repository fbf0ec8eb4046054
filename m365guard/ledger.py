"""What a run changes in the findings history: new, reopened, escalated, still open, resolved.

Pure: the findings state knows, tonight's findings and coverage in; the rows to write, their
events and the update the reports show out. The store (state.py) only writes what this module
decided, so every lifecycle rule is tested here without SQLite.

Message findings are events: once seen they stay open until a person closes them. Inbox rules,
mailbox forwarding and chats are snapshots: one resolves when a run read the place it lives in
full and no longer saw it, and reopens if it comes back. Nothing resolves from a source the run
did not read in full, and nothing resolves from a rule the run did not check (turned off in
policies.toml for the night: `rules_off`). A status a person set (acknowledged) is kept when the
finding is seen again; any status other than open and resolved is treated so.

A finding seen again takes what its object does now (severity, summary, counterparts): an
inbox rule turned on (info -> high) is *escalated* and a rule re-pointed to another address is
*retargeted*. Both are news like a new finding, and both reopen an acknowledged finding (what
was acknowledged is not what the object does now). `news` names every open finding that is news
in the day's report with why; findings that became news in an earlier run of the same report
day stay news (`earlier` events), so a rerun never hides what the technician has not read.
The run also records the inventory of forwarding it saw (`build_inventory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from m365guard.forwarding import latest_forwarding
from m365guard.records import (
    EVENT_SCHEMA,
    FINDING_COLUMNS,
    FINDING_FRAME_SCHEMA,
    INVENTORY_SCHEMA,
    SYSTEM_ACTOR,
    FindingEvent,
    empty_frame,
    frame,
    iso,
    iso_or_none,
    records,
)
from m365guard.tables import (
    CHAT,
    INBOX_RULE,
    MAILBOX_FORWARDING,
    READ_IN_FULL,
    SEVERITY_RANK,
    conform,
    mailbox_object_ids,
)

# Where a snapshot finding lives: the coverage folder that must be read in full before its
# absence means it is gone. Inbox rules are judged per mailbox; chats (which belong to no single
# mailbox) and mailbox forwarding (the tenant-wide audit log and export: FORWARDING_SOURCES) on
# every coverage row of their source.
SNAPSHOT_SOURCES: dict[str, str] = {
    INBOX_RULE: "messageRules",
    MAILBOX_FORWARDING: "auditLog",
    CHAT: "chats",
    # the tenant's forwarding posture, from the Exchange export (enforce/exchange_export.py)
    "outbound_spam_policy": "exchangeExport",
    "remote_domain": "exchangeExport",
    "transport_rule": "exchangeExport",
}
TENANT_WIDE_SNAPSHOTS = frozenset({CHAT, MAILBOX_FORWARDING, "outbound_spam_policy",
                                   "remote_domain", "transport_rule"})
# Mailbox forwarding has two sources, the audit log and the Exchange mailbox export: each is
# evidence of what holds now (forwarding.py), so reading every one the night asked resolves.
FORWARDING_SOURCES = ("auditLog", "forwardingExport")

Row = dict[str, Any]
# Why a finding is news in the day's report (the nightly CSV's why_new), by the event that
# made it so; "exception ended" is added by notify.exceptions.for_night.
NEWS_EVENTS: dict[str, str] = {"opened": "found", "reopened": "reopened",
                               "escalated": "escalated", "retargeted": "retargeted"}


@dataclass(frozen=True)
class FindingsUpdate:
    """What one run changed: findings first seen, back after being resolved, escalated or
    retargeted (what the object does changed), still open, gone.

    Every frame has FINDING_FRAME_SCHEMA, oldest first. `still_open` holds every open finding
    that is not new, reopened or escalated, whether or not this run saw it again. `news`: the
    open findings that are news in the day's report, with why (NEWS_EVENTS' values);
    `accepted`: open findings an exception covers, with its last day (notify.exceptions).
    """

    new: pd.DataFrame
    reopened: pd.DataFrame
    still_open: pd.DataFrame
    resolved: pd.DataFrame
    escalated: pd.DataFrame = field(default_factory=lambda: empty_frame(FINDING_FRAME_SCHEMA))
    news: Mapping[str, str] = field(default_factory=dict)
    accepted: Mapping[str, str] = field(default_factory=dict)

    @property
    def fresh(self) -> pd.DataFrame:
        """This run's new, reopened and escalated findings."""
        return pd.concat([self.new, self.reopened, self.escalated], ignore_index=True)

    @property
    def open_now(self) -> pd.DataFrame:
        """Every finding open after the run."""
        return pd.concat([self.fresh, self.still_open], ignore_index=True)

    def alerting(self) -> pd.DataFrame:
        """Open findings that are news and no exception covers: what earns exit 3 and alerts."""
        table = self.open_now
        ids = table["finding_id"]
        return table[ids.isin(list(self.news)) & ~ids.isin(list(self.accepted))]


@dataclass(frozen=True)
class FindingChanges:
    """Rows to write: each finding as it is after the change, and the events that record it."""

    rows: pd.DataFrame  # FINDING_FRAME_SCHEMA
    events: pd.DataFrame  # EVENT_SCHEMA (run_id null for a person's change)
    seen: tuple[str, ...] = ()  # findings the run saw: their last run becomes this one


@dataclass(frozen=True)
class Ledger:
    """One run's changes to the findings history, and what its reports show."""

    changes: FindingChanges
    update: FindingsUpdate


def snapshot_mailbox(object_id: str, actor: str) -> str:
    """The mailbox an inbox-rule or forwarding finding belongs to: `<upn>/<...>` object ids."""
    head, sep, _ = object_id.partition("/")
    return (head if sep and "@" in head else actor).lower()


def _event(finding_id: str, run_id: int | None, at: str, event: FindingEvent, by: str,
           reason: str) -> Row:
    return {"finding_id": finding_id, "run_id": run_id, "at": at, "event": event, "by": by,
            "reason": reason}


def _current(record: Mapping[str, Any]) -> Row:
    """The finding's columns as tonight's rule wrote them."""
    return {col: iso_or_none(record[col]) if col == "occurred_at" else str(record[col])
            for col in FINDING_COLUMNS}


def _new_row(record: Mapping[str, Any], stamp: str) -> Row:
    return {**_current(record), "first_seen": stamp, "last_seen": stamp, "times_seen": 1,
            "status": "open", "status_at": stamp, "status_by": SYSTEM_ACTOR,
            "status_reason": "found"}


def _targets(counterparts: Any) -> set[str]:
    return {part.strip().lower() for part in str(counterparts).split(";") if part.strip()}


def what_changed(old: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[FindingEvent, str]:
    """The event of a finding seen again, and why: "escalated" (its severity rose),
    "retargeted" (an inbox rule forwards to other addresses now) or "seen" (a severity that fell
    is told in the reason, not news)."""
    before, after = SEVERITY_RANK.get(str(old["severity"]), -1), \
        SEVERITY_RANK.get(str(now["severity"]), -1)
    if after > before:
        return "escalated", f"severity {old['severity']} -> {now['severity']}: {now['summary']}"
    if now["object_type"] == INBOX_RULE and _targets(old["counterparts"]) != _targets(
            now["counterparts"]):
        return "retargeted", (f"now forwards to {now['counterparts']} instead of"
                              f" {old['counterparts']}")
    if after < before:
        return "seen", f"severity {old['severity']} -> {now['severity']}"
    return "seen", ""


def _sorted(rows: Iterable[Row]) -> pd.DataFrame:
    table = frame(list(rows), FINDING_FRAME_SCHEMA)
    return table.sort_values(["first_seen", "finding_id"], kind="stable").reset_index(drop=True)


def covered_snapshots(known: pd.DataFrame, coverage: pd.DataFrame) -> set[str]:
    """Open snapshot findings whose source this run read in full (resolved if not seen)."""
    covered = coverage[coverage["status"].isin(READ_IN_FULL)]
    covered_keys = {
        (str(mailbox).lower(), str(folder))
        for mailbox, folder in zip(covered["mailbox"], covered["folder"], strict=True)
    }
    tenant_wide_covered = {
        object_type: bool(len(rows)) and bool(rows["status"].isin(READ_IN_FULL).all())
        for object_type in TENANT_WIDE_SNAPSHOTS
        for rows in [coverage[coverage["folder"].isin(
            FORWARDING_SOURCES if object_type == MAILBOX_FORWARDING
            else [SNAPSHOT_SOURCES[object_type]])]]
    }
    candidates = known[(known["status"] == "open")
                       & known["object_type"].isin(list(SNAPSHOT_SOURCES))]
    out: set[str] = set()
    for row in records(candidates):
        object_type = str(row["object_type"])
        if object_type in TENANT_WIDE_SNAPSHOTS:
            if tenant_wide_covered[object_type]:
                out.add(str(row["finding_id"]))
        elif (snapshot_mailbox(str(row["object_id"]), str(row["actor"])),
              SNAPSHOT_SOURCES[object_type]) in covered_keys:
            out.add(str(row["finding_id"]))
    return out


def compute_ledger(known: pd.DataFrame, found: pd.DataFrame, coverage: pd.DataFrame,
                   run_id: int, now: datetime, *, rules_off: Iterable[str] = (),
                   earlier: pd.DataFrame | None = None) -> Ledger:
    """The run's changes: `known` is every finding state holds (FINDING_FRAME_SCHEMA), `found`
    tonight's findings (findings schema), `coverage` tonight's coverage. `rules_off`: rules not
    checked tonight (their findings stay as they are); `earlier`: the events (EVENT_SCHEMA) of
    the earlier runs of the same report day, whose news stays news."""
    stamp = iso(now)
    found = conform("findings", found).drop_duplicates("finding_id")
    coverage = conform("coverage", coverage)
    before: dict[str, Row] = {str(row["finding_id"]): row for row in records(known)}
    after: dict[str, Row] = dict(before)
    events: list[Row] = []
    new: list[str] = []
    reopened: list[str] = []
    escalated: list[str] = []
    news: dict[str, str] = {}
    for record in records(found):
        finding_id = str(record["finding_id"])
        old = before.get(finding_id)
        if old is None:
            after[finding_id] = _new_row(record, stamp)
            new.append(finding_id)
            news[finding_id] = NEWS_EVENTS["opened"]
            events.append(_event(finding_id, run_id, stamp, "opened", SYSTEM_ACTOR, "found"))
            continue
        current = _current(record)
        row = {**old, **current, "last_seen": stamp, "times_seen": int(old["times_seen"]) + 1}
        change, why = what_changed(old, current)
        if old["status"] == "resolved":
            reason = f"seen again in run {run_id}"
            row.update(status="open", status_at=stamp, status_by=SYSTEM_ACTOR,
                       status_reason=reason)
            reopened.append(finding_id)
            news[finding_id] = NEWS_EVENTS["reopened"]
            events.append(_event(finding_id, run_id, stamp, "reopened", SYSTEM_ACTOR, reason))
        elif change != "seen":
            if old["status"] != "open":  # what a person closed is not what the object does now
                row.update(status="open", status_at=stamp, status_by=SYSTEM_ACTOR,
                           status_reason=why)
            escalated.append(finding_id)
            news[finding_id] = NEWS_EVENTS[change]
            events.append(_event(finding_id, run_id, stamp, change, SYSTEM_ACTOR, why))
        else:
            events.append(_event(finding_id, run_id, stamp, "seen", SYSTEM_ACTOR, why))
        after[finding_id] = row
    seen = tuple(str(fid) for fid in found["finding_id"])
    unseen = known[~known["finding_id"].isin(seen) & ~known["rule_id"].isin(list(rules_off))]
    gone = covered_snapshots(unseen, coverage)
    resolved = [fid for fid in _sorted(before[fid] for fid in gone)["finding_id"]]
    reason = f"no longer present in run {run_id}, which read its source in full"
    for finding_id in resolved:
        after[finding_id] = {**before[finding_id], "status": "resolved", "status_at": stamp,
                             "status_by": SYSTEM_ACTOR, "status_reason": reason}
        events.append(_event(finding_id, run_id, stamp, "resolved", SYSTEM_ACTOR, reason))
    fresh = set(new) | set(reopened) | set(escalated)
    for finding_id, why in _earlier_news(earlier).items():
        if after.get(finding_id, {}).get("status") == "open":
            news.setdefault(finding_id, why)
    update = FindingsUpdate(
        new=_sorted(after[fid] for fid in new),
        reopened=_sorted(after[fid] for fid in reopened),
        still_open=_sorted(row for fid, row in after.items()
                           if row["status"] == "open" and fid not in fresh),
        resolved=_sorted(after[fid] for fid in resolved),
        escalated=_sorted(after[fid] for fid in escalated),
        news=news,
    )
    changes = FindingChanges(
        rows=_sorted(after[fid] for fid in [*seen, *resolved]),
        events=frame(events, EVENT_SCHEMA),
        seen=seen,
    )
    return Ledger(changes=changes, update=update)


def _earlier_news(earlier: pd.DataFrame | None) -> dict[str, str]:
    """finding id -> why it first became news in the earlier runs of the day (runs only)."""
    if earlier is None or earlier.empty:
        return {}
    runs = earlier[earlier["run_id"].notna() & earlier["event"].isin(list(NEWS_EVENTS))]
    runs = runs.sort_values("at", kind="stable").drop_duplicates("finding_id")
    return {str(fid): NEWS_EVENTS[str(event)]
            for fid, event in zip(runs["finding_id"], runs["event"], strict=True)}


def acknowledge(finding: Mapping[str, Any], by: str, reason: str, now: datetime) -> FindingChanges:
    """A person records that a finding was dealt with: it stays acknowledged if seen again."""
    stamp = iso(now)
    row = {**finding, "status": "acknowledged", "status_at": stamp, "status_by": by,
           "status_reason": reason}
    event = _event(str(finding["finding_id"]), None, stamp, "acknowledged", by, reason)
    return FindingChanges(rows=frame([row], FINDING_FRAME_SCHEMA),
                          events=frame([event], EVENT_SCHEMA))


def build_inventory(rule_forwards: pd.DataFrame, mailbox_forwarding: pd.DataFrame) -> pd.DataFrame:
    """The inventory a run records: every forwarding inbox rule and current mailbox forwarding."""
    rules = conform("rule_forwards", rule_forwards)
    rows = [
        {
            "kind": INBOX_RULE,
            "mailbox": r["mailbox"],
            "object_id": object_id,
            "target": r["address"],
            "is_enabled": bool(r["is_enabled"]),
            "detail": f"{r['action']} (rule {r['rule_name']!r})",
        }
        for r, object_id in zip(rules.to_dict("records"),
                                mailbox_object_ids(rules["mailbox"], rules["rule_id"]),
                                strict=True)
    ]
    latest = latest_forwarding(mailbox_forwarding)
    rows += [
        {
            "kind": MAILBOX_FORWARDING,
            "mailbox": r["mailbox"],
            "object_id": object_id,
            "target": r["target"],
            "is_enabled": True,
            "detail": ("keeps a copy" if r["deliver_and_forward"] else "no copy kept")
            + f"; source {r['source']}",
        }
        for r, object_id in zip(latest.to_dict("records"),
                                mailbox_object_ids(latest["mailbox"], latest["target"]),
                                strict=True)
    ]
    return frame(rows, INVENTORY_SCHEMA) if rows else empty_inventory()


def empty_inventory() -> pd.DataFrame:
    """An inventory table with no rows."""
    return empty_frame(INVENTORY_SCHEMA)

"""What a run changes in the findings history: new, still open, resolved, reopened.

Pure: the findings state knows, tonight's findings and coverage in; the rows to write, their
events and the update the reports show out. The store (state.py) only writes what this module
decided, so every lifecycle rule is tested here without SQLite.

Message findings are events: once seen they stay open until a person closes them. Inbox rules,
mailbox forwarding and chats are snapshots: one resolves when a run read the place it lives in
full and no longer saw it, and reopens if it comes back. Nothing resolves from a source the run
did not read in full. A status a person set (acknowledged) is kept when the finding is seen
again; any status other than open and resolved is treated so. The run also records the
inventory of forwarding it saw (`build_inventory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    conform,
    mailbox_object_ids,
)

# Where a snapshot finding lives: the coverage folder that must be read in full before its
# absence means it is gone. Inbox rules are judged per mailbox; chats (which belong to no single
# mailbox) and mailbox forwarding (read from the tenant-wide audit log) on every coverage row of
# their source.
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

Row = dict[str, Any]


@dataclass(frozen=True)
class FindingsUpdate:
    """What one run changed: findings first seen, back after being resolved, still open, gone.

    Every frame has FINDING_FRAME_SCHEMA, oldest first. `still_open` holds every open finding
    that is not new or reopened, whether or not this run saw it again.
    """

    new: pd.DataFrame
    reopened: pd.DataFrame
    still_open: pd.DataFrame
    resolved: pd.DataFrame


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


def _new_row(record: Mapping[str, Any], stamp: str) -> Row:
    row: Row = {col: iso_or_none(record[col]) if col == "occurred_at" else str(record[col])
                for col in FINDING_COLUMNS}
    return {**row, "first_seen": stamp, "last_seen": stamp, "times_seen": 1, "status": "open",
            "status_at": stamp, "status_by": SYSTEM_ACTOR, "status_reason": "found"}


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
        for rows in [coverage[coverage["folder"] == SNAPSHOT_SOURCES[object_type]]]
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
                   run_id: int, now: datetime) -> Ledger:
    """The run's changes: `known` is every finding state holds (FINDING_FRAME_SCHEMA), `found`
    tonight's findings (findings schema), `coverage` tonight's coverage."""
    stamp = iso(now)
    found = conform("findings", found).drop_duplicates("finding_id")
    coverage = conform("coverage", coverage)
    before: dict[str, Row] = {str(row["finding_id"]): row for row in records(known)}
    after: dict[str, Row] = dict(before)
    events: list[Row] = []
    new: list[str] = []
    reopened: list[str] = []
    for record in records(found):
        finding_id = str(record["finding_id"])
        old = before.get(finding_id)
        if old is None:
            after[finding_id] = _new_row(record, stamp)
            new.append(finding_id)
            events.append(_event(finding_id, run_id, stamp, "opened", SYSTEM_ACTOR, "found"))
            continue
        row = {**old, "last_seen": stamp, "times_seen": int(old["times_seen"]) + 1}
        if old["status"] == "resolved":
            reason = f"seen again in run {run_id}"
            row.update(status="open", status_at=stamp, status_by=SYSTEM_ACTOR,
                       status_reason=reason)
            reopened.append(finding_id)
            events.append(_event(finding_id, run_id, stamp, "reopened", SYSTEM_ACTOR, reason))
        else:
            events.append(_event(finding_id, run_id, stamp, "seen", SYSTEM_ACTOR, ""))
        after[finding_id] = row
    seen = tuple(str(fid) for fid in found["finding_id"])
    unseen = known[~known["finding_id"].isin(seen)]
    gone = covered_snapshots(unseen, coverage)
    resolved = [fid for fid in _sorted(before[fid] for fid in gone)["finding_id"]]
    reason = f"no longer present in run {run_id}, which read its source in full"
    for finding_id in resolved:
        after[finding_id] = {**before[finding_id], "status": "resolved", "status_at": stamp,
                             "status_by": SYSTEM_ACTOR, "status_reason": reason}
        events.append(_event(finding_id, run_id, stamp, "resolved", SYSTEM_ACTOR, reason))
    fresh = set(new) | set(reopened)
    update = FindingsUpdate(
        new=_sorted(after[fid] for fid in new),
        reopened=_sorted(after[fid] for fid in reopened),
        still_open=_sorted(row for fid, row in after.items()
                           if row["status"] == "open" and fid not in fresh),
        resolved=_sorted(after[fid] for fid in resolved),
    )
    changes = FindingChanges(
        rows=_sorted(after[fid] for fid in [*seen, *resolved]),
        events=frame(events, EVENT_SCHEMA),
        seen=seen,
    )
    return Ledger(changes=changes, update=update)


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

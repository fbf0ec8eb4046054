"""The nightly check of enforcement: is every disabled rule still disabled?

For each journalled `done` action on an inbox rule whose mailbox tonight's run read in full:
- the rule is gone, or every forwarding entry of it is disabled: verified. The forwarding
  rule's note about a disabled rule (same finding id) is dropped from tonight's findings, so
  state resolves the finding the action fixed;
- the rule forwards again, enabled: drift, a finding of its own (`enforcement-drift`, high),
  which state resolves once the rule is off again. The original finding reopens by itself.
A mailbox the run could not read verifies nothing. Actions handed to an Exchange admin
(`manual`: mailbox forwarding, tenant posture) are verified when their finding is no longer
seen and a source that shows it was read in full tonight, else noted as still pending.
Verification events are journalled after the night's state is committed, so a killed run
only repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from m365guard import tables
from m365guard.enforce import journal
from m365guard.enforce.journal import JournalAction
from m365guard.rules.base import make_findings

RULE_ID = "enforcement-drift"
CLAUSE = "AUP-INTENDED-RECIPIENTS"
SEVERITY = "high"
SYSTEM = "m365guard nightly"
# The coverage folders whose full read shows a manual action's object (see graph/collect.py
# and exchange_export.py); any one of them read in full will do.
MANUAL_SOURCES: dict[str, tuple[str, ...]] = {
    "mailbox_forwarding": ("auditLog", "forwardingExport"),
    "outbound_spam_policy": ("exchangeExport",),
    "remote_domain": ("exchangeExport",),
    "transport_rule": ("exchangeExport",),
}


@dataclass
class Verification:
    """What tonight's run says about each enforced rule."""

    fixed: set[str] = field(default_factory=set)  # finding ids the actions fixed
    drift: pd.DataFrame = field(default_factory=lambda: tables.empty("findings"))
    results: list[tuple[JournalAction, str, str]] = field(default_factory=list)
    manual: list[tuple[JournalAction, str]] = field(default_factory=list)  # with object type
    read_sources: set[str] = field(default_factory=set)  # folders read in full tonight

    def findings(self, found: pd.DataFrame) -> pd.DataFrame:
        """Tonight's findings with fixed ones dropped and drift added; manual actions are
        judged here, against tonight's findings."""
        seen = set(found["finding_id"])
        for action, object_type in self.manual:
            if action.finding_id in seen:
                self.results.append((action, "pending", "the finding is still seen: the"
                                     " PowerShell has not been run, or not taken effect"))
            elif self.read_sources & set(MANUAL_SOURCES.get(object_type, ())):
                self.results.append((action, "verified", "the finding is no longer seen"))
        kept = found[~found["finding_id"].isin(self.fixed)]
        frames = [frame for frame in (kept, self.drift) if not frame.empty]
        if not frames:
            return tables.empty("findings")
        return tables.conform("findings", pd.concat(frames, ignore_index=True))


def verify(actions: list[JournalAction], collected: tables.Collected,
           object_types: dict[str, str] | None = None) -> Verification:
    """Check done inbox-rule actions against the rules tonight's run read; keep manual ones
    (finding id -> object type in `object_types`) to judge against tonight's findings."""
    coverage = collected["coverage"]
    full = coverage[coverage["status"].isin(tables.READ_IN_FULL)]
    read = {str(mailbox).lower() for mailbox, folder in
            zip(full["mailbox"], full["folder"], strict=True) if folder == "messageRules"}
    forwards = collected["rule_forwards"]
    keys = forwards["mailbox"].str.lower() + "/" + forwards["rule_id"]
    failed = set(coverage.loc[~coverage["status"].isin(tables.READ_IN_FULL), "folder"])
    result = Verification(read_sources=set(full["folder"]) - failed)
    for action in actions:
        if action.status == "manual" and action.object_id:
            result.manual.append((action, (object_types or {}).get(action.finding_id, "")))
    drift_rows = []
    for action in actions:
        if action.kind != "disable_inbox_rule" or action.status != "done":
            continue
        mailbox = action.mailbox.lower()
        if mailbox not in read:
            result.results.append((action, "unverified", "the mailbox's rules were not read"))
            continue
        rows = forwards[keys == f"{mailbox}/{action.rule_graph_id}"]
        enabled = rows[rows["is_enabled"].astype(bool)]
        if enabled.empty:
            result.fixed.add(action.finding_id)
            result.results.append((action, "verified", "the rule is still disabled"
                                   if len(rows) else "the rule no longer forwards or exists"))
            continue
        name = str(enabled["rule_name"].iloc[0])
        targets = ";".join(sorted(set(enabled["address"].str.lower())))
        drift_rows.append({
            "severity": SEVERITY, "occurred_at": pd.NaT, "actor": action.mailbox,
            "actor_role": "staff", "counterparts": targets, "object_type": "inbox_rule",
            "object_id": action.object_id,
            "summary": f"Inbox rule \"{name}\" in {action.mailbox} was disabled by m365guard"
                       f" action {action.action_id} (approved by {action.approved_by}) and"
                       f" forwards to {targets} again.",
        })
        result.results.append((action, "drift", f"enabled again, forwarding to {targets}"))
    if drift_rows:
        result.drift = make_findings(RULE_ID, CLAUSE, pd.DataFrame(drift_rows))
    return result


def nightly_check(state_path: Path, collected: tables.Collected) -> Verification:
    """Verify every done action against tonight's collection (read only)."""
    conn = journal.connect(state_path)
    try:
        done = journal.actions(conn, status="done")
        manual = journal.actions(conn, status="manual")
        types = dict(conn.execute("SELECT finding_id, object_type FROM findings").fetchall())
        return verify([*done, *manual], collected, types)
    finally:
        conn.close()


def record(state_path: Path, verification: Verification, run_id: int, now: datetime) -> None:
    """Journal each action's verification (after the night's state is committed)."""
    if not verification.results:
        return
    conn = journal.connect(state_path)
    try:
        for action, event, detail in verification.results:
            journal.note(conn, action, event, by=SYSTEM, now=now,
                         detail=f"run {run_id}: {detail}")
    finally:
        conn.close()

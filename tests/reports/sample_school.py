"""A deterministic small school history in a real StateDB: the input of the golden-file tests."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from m365guard.ledger import FindingsUpdate, acknowledge, build_inventory, compute_ledger
from m365guard.records import RunOutcome
from m365guard.state import StateDB
from m365guard.tables import make_table

FIRST_NIGHT = date(2025, 3, 3)  # Monday of 2025-W10
LAST_NIGHT = date(2025, 3, 16)  # Sunday of 2025-W11
MISSED = {date(2025, 3, 6)}
PARTIAL = date(2025, 3, 12)  # b's inbox rules could not be read
MAILBOXES = ("a.jones@school.example", "b.patel@school.example", "c.wood@school.example")
ACK_AT = datetime(2025, 3, 11, 9, 30, tzinfo=UTC)

FINDINGS: dict[str, dict[str, Any]] = {
    "F1": {"rule_id": "external-forwarding-personal", "severity": "high",
           "policy_clause": "AUP-INTENDED-RECIPIENTS", "occurred_at": "2025-03-01T08:00:00Z",
           "actor": MAILBOXES[0], "actor_role": "staff", "counterparts": "ajones@gmail.com",
           "object_type": "inbox_rule", "object_id": f"{MAILBOXES[0]}/AQAB/x==",
           "summary": "Inbox rule 'Home' forwards school mail to a personal Gmail address"},
    "F2": {"rule_id": "multi-recipient-without-bcc", "severity": "medium",
           "policy_clause": "AUP-BCC", "occurred_at": "2025-03-03T15:10:00Z",
           "actor": MAILBOXES[1], "actor_role": "staff",
           "counterparts": "mum@hotmail.co.uk;dad@btinternet.com",
           "object_type": "message", "object_id": "<m2@school.example>",
           "summary": "Email 'Trip, Friday' showed 2 parents' addresses to each other"},
    "F3": {"rule_id": "pupil-contact-non-school-channel", "severity": "high",
           "policy_clause": "AUP-PUPIL-CONTACT", "occurred_at": "2025-03-09T19:45:00Z",
           "actor": MAILBOXES[2], "actor_role": "staff",
           "counterparts": 'pupil "Sam", Year 2 <sam99@gmail.com>',
           "object_type": "message", "object_id": "<m3@school.example>",
           "summary": "=cmd|' /C calc'!A0 email to a pupil's personal address"},
    "F4": {"rule_id": "pupil-contact-non-school-channel", "severity": "low",
           "policy_clause": "AUP-APPROVED-APPS", "occurred_at": "2025-03-10T12:00:00Z",
           "actor": MAILBOXES[0], "actor_role": "staff", "counterparts": "guest@partner.example",
           "object_type": "chat", "object_id": "19:chat1@thread.v2",
           "summary": "Teams chat with a pupil and a guest from outside the school"},
    "F5": {"rule_id": "external-forwarding-personal", "severity": "high",
           "policy_clause": "AUP-INTENDED-RECIPIENTS", "occurred_at": "2025-03-11T23:00:00Z",
           "actor": MAILBOXES[1], "actor_role": "staff", "counterparts": "bp@aol.co.uk",
           "object_type": "mailbox_forwarding",
           "object_id": f"{MAILBOXES[1]}/bp@aol.co.uk",
           "summary": "Mailbox forwarding to bp@aol.co.uk (keeps a copy)"},
    "F6": {"rule_id": "school-business-personal-email", "severity": "medium",
           "policy_clause": "AUP-PERSONAL-EMAIL", "occurred_at": "2025-03-15T10:00:00Z",
           "actor": MAILBOXES[2], "actor_role": "staff", "counterparts": "cwood@yahoo.co.uk",
           "object_type": "message", "object_id": "<m6@school.example>",
           "summary": "@SUM(1) report sent to a personal Yahoo address"},
}


def present_on(day: date) -> list[str]:
    """Which findings the rules report on a night."""
    ids = []
    if day <= date(2025, 3, 8) or day >= date(2025, 3, 13):
        ids.append("F1")
    if day == date(2025, 3, 4):
        ids.append("F2")
    if day == date(2025, 3, 10):
        ids.append("F3")
    if day >= date(2025, 3, 11):
        ids.append("F5")
    if date(2025, 3, 11) <= day < LAST_NIGHT:
        ids.append("F4")
    if day == LAST_NIGHT:
        ids.append("F6")
    return ids


def coverage_on(day: date) -> pd.DataFrame:
    rows = []
    for mailbox in MAILBOXES:
        for folder in ("sentitems", "messageRules", "chats"):
            failed = day == PARTIAL and mailbox == MAILBOXES[1] and folder == "messageRules"
            rows.append({"mailbox": mailbox, "folder": folder,
                         "status": "failed" if failed else "ok",
                         "reason": "503 Service Unavailable after 5 retries" if failed else "",
                         "items": 0 if failed else 3})
    # the audit log is tenant-wide: one row, no mailbox (as the collector writes it)
    rows.append({"mailbox": "", "folder": "auditLog", "status": "ok", "reason": "", "items": 2})
    return make_table("coverage", rows)


@dataclass
class SampleSchool:
    db: StateDB
    last_update: FindingsUpdate
    last_run_id: int
    last_coverage: pd.DataFrame


def run_at(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=2)


GOLDEN = Path(__file__).parent / "golden"


def assert_matches_golden(written: Path, golden_name: str) -> None:
    """Byte-compare a written file with tests/reports/golden/<name>.

    Set M365GUARD_UPDATE_GOLDEN=1 to rewrite the golden file after a deliberate change
    (then review the diff before committing).
    """
    golden = GOLDEN / golden_name
    if os.environ.get("M365GUARD_UPDATE_GOLDEN") == "1":
        golden.write_bytes(written.read_bytes())
    assert golden.exists(), f"missing golden file {golden}; run with M365GUARD_UPDATE_GOLDEN=1"
    assert written.read_bytes() == golden.read_bytes(), f"{written.name} differs from {golden}"


def commit_run(db: StateDB, run_id: int, findings: pd.DataFrame, coverage: pd.DataFrame,
               inventory: pd.DataFrame, outcome: RunOutcome, counts: dict[str, Any],
               now: datetime, error: str) -> FindingsUpdate:
    """What the nightly job does with a run's results: one transaction, ledger then rows."""
    with db.transaction():
        ledger = compute_ledger(db.findings(), findings, coverage, run_id, now)
        run = dataclasses.replace(db.run(run_id), outcome=outcome, counts=counts,
                                  finished_at=now, error=error)
        db.record_run(run, ledger.changes, coverage, {}, inventory)
    return ledger.update


def build_sample_school(path: Path) -> SampleSchool:
    """Run two weeks of nights (one missed, one partial) with an ack, into a new state file."""
    db = StateDB.open(path)
    forwards = make_table("rule_forwards", [
        {"mailbox": MAILBOXES[0], "rule_id": "AQAB/x==", "rule_name": "Home",
         "is_enabled": True, "action": "forwardTo", "address": "ajones@gmail.com"}])
    forwarding = make_table("mailbox_forwarding", [
        {"mailbox": MAILBOXES[1], "address": "bp@aol.co.uk", "deliver_and_forward": True,
         "source": "audit", "observed_at": "2025-03-11T23:00:00Z", "record_id": "r1"}])
    day = FIRST_NIGHT
    update: FindingsUpdate | None = None
    run_id = 0
    coverage = coverage_on(day)
    while day <= LAST_NIGHT:
        if day not in MISSED:
            started = run_at(day)
            run_id = db.start_run(started - timedelta(days=1), started, started,
                                  granted_permissions=["Mail.ReadBasic.All", "User.Read.All"])
            coverage = coverage_on(day)
            findings = make_table("findings",
                                  [{"finding_id": fid, **FINDINGS[fid]} for fid in present_on(day)])
            update = commit_run(
                db, run_id, findings, coverage, build_inventory(forwards, forwarding),
                "partial" if day == PARTIAL else "complete",
                {"mailboxes": 3, "messages": 40}, started + timedelta(minutes=7),
                error="1 folder could not be read" if day == PARTIAL else "",
            )
        if day == date(2025, 3, 11):
            with db.transaction():
                db.write_findings(acknowledge(db.findings(ids=["F2"]).to_dict("records")[0],
                                              "Mrs Head", "Reminded about BCC; parents told",
                                              ACK_AT))
        day += timedelta(days=1)
    assert update is not None
    return SampleSchool(db=db, last_update=update, last_run_id=run_id, last_coverage=coverage)

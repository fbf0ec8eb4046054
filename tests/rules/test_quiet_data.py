"""Every rule on no data at all and on data made only of near misses: no crash, no finding.

These are the nights of a school that keeps its policy (issue 12): every forward internal or to
a partner, forwarding set and then cleared, newsletters in Bcc, replies to parents on webmail.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from rule_builders import (
    AMY,
    DOMAIN,
    HOME_TENANT,
    JANE,
    OFFICE,
    TOM,
    Mail,
    collected,
    make_policy,
    rule_input,
    uid,
)

from m365guard import tables
from m365guard.rules import RULES, run_rules

PARENT = ("mum.one@gmail.com", "Ann One")
PARTNERS = [("sw@lincolnshire.gov.uk", "Social Worker"), ("nurse@nhs.net", "School Nurse")]


def forward(rule_id: str, address: str, *, enabled: bool = True) -> dict[str, Any]:
    return {"mailbox_id": uid(JANE), "mailbox": JANE, "rule_id": rule_id, "rule_name": "Forward",
            "is_enabled": enabled, "action": "forwardTo", "address": address, "name": ""}


def mailbox_forwarding(mailbox: str, address: str, at: str) -> dict[str, Any]:
    return {"mailbox": mailbox, "address": address, "deliver_and_forward": True,
            "source": "audit", "observed_at": at, "record_id": f"{mailbox}{at}"}


def near_misses() -> dict[str, Any]:
    """One of each routine thing a school does that no rule may report."""
    mail = Mail()
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[(JANE, "Jane Smith")], bcc=[PARENT],
             subject="Newsletter", attachments=True)
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[PARENT], subject="Permission slip",
             attachments=True)  # a form to one parent on webmail (no parent roster here)
    mail.add(OFFICE, "sentitems", (OFFICE, "Office"), to=[(f"parents-list@{DOMAIN}", "Parents")])
    mail.add(JANE, "inbox", PARENT, to=[(JANE, "Jane Smith")], subject="Reading book")
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[PARENT], subject="RE: Reading book")
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=PARTNERS, subject="Early help")
    mail.add(TOM, "sentitems", (TOM, "Tom Teacher"), to=[(AMY, "Amy Pupil")], subject="Homework")
    members = [{"chat_id": chat, "user_id": uid(upn), "email": upn, "display_name": upn,
                "tenant_id": HOME_TENANT, "roles": "owner"}
               for chat, upn in (("c1", TOM), ("c1", AMY), ("c2", JANE), ("c2", TOM))]
    members.append({"chat_id": "c2", "user_id": "g-1", "email": "sw@lincolnshire.gov.uk",
                    "display_name": "Social Worker", "tenant_id": HOME_TENANT,
                    "roles": "guest"})  # a staff chat with a partner guest, no pupil
    return {
        "mail": mail,
        "rule_forwards": [forward("r1", TOM), forward("r2", PARTNERS[0][0]),
                          forward("r3", f"head@{DOMAIN}", enabled=False)],
        "mailbox_forwarding": [
            mailbox_forwarding(JANE, "smtp:jane@gmail.com", "2024-01-01T00:00:00Z"),
            mailbox_forwarding(JANE, "", "2024-01-02T00:00:00Z"),  # set, then cleared
            mailbox_forwarding(TOM, f"SMTP:head@{DOMAIN}", "2024-01-01T00:00:00Z"),
            mailbox_forwarding(f"head@{DOMAIN}", "nurse@nhs.net", "2024-01-01T00:00:00Z"),
        ],
        "chats": [{"chat_id": chat, "chat_type": "group", "topic": "Class",
                   "created_at": "2024-01-10T09:00:00Z"} for chat in ("c1", "c2")],
        "chat_members": members,
    }


QUIET_CASES = {
    "nothing at all": {},
    "every forward internal": {"rule_forwards": [forward("r1", TOM)]},
    "forwarding set then cleared": {"mailbox_forwarding": [
        mailbox_forwarding(JANE, "smtp:jane@gmail.com", "2024-01-01T00:00:00Z"),
        mailbox_forwarding(JANE, "", "2024-01-02T00:00:00Z")]},
    "mailbox forwarding internal": {"mailbox_forwarding": [
        mailbox_forwarding(TOM, f"head@{DOMAIN}", "2024-01-01T00:00:00Z")]},
    "only near misses": near_misses(),
}


def _collected(case: dict[str, Any]) -> tables.Collected:
    case = dict(case)
    return collected(case.pop("mail", None), **case)


@pytest.mark.parametrize("rule", RULES, ids=[r.RULE_ID for r in RULES])
@pytest.mark.parametrize("case", list(QUIET_CASES))
def test_rule_on_quiet_data_finds_nothing(tmp_path: Path, rule: ModuleType, case: str) -> None:
    policy = make_policy(tmp_path)
    data = rule_input(_collected(QUIET_CASES[case]), policy)
    findings = rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)
    assert findings.empty
    assert list(findings.columns) == list(tables.SCHEMAS["findings"])
    assert all(findings[col].dtype == dtype for col, dtype in tables.SCHEMAS["findings"].items())


@pytest.mark.parametrize("case", list(QUIET_CASES))
def test_run_rules_on_quiet_data(tmp_path: Path, case: str) -> None:
    findings = run_rules(_collected(QUIET_CASES[case]), make_policy(tmp_path))
    assert findings.empty


def test_run_rules_with_no_tables_at_all(tmp_path: Path) -> None:
    """Not even users: a tenant the collector could not read anything from."""
    findings = run_rules(tables.Collected(), make_policy(tmp_path))
    assert list(findings.columns) == list(tables.SCHEMAS["findings"])
    assert findings.empty


def test_every_table_empty_but_present(tmp_path: Path) -> None:
    given = {name: tables.empty(name) for name in tables.COLLECTED}
    assert run_rules(tables.Collected(**given), make_policy(tmp_path)).empty


def test_quiet_rows_beside_a_violation_leave_only_the_violation(tmp_path: Path) -> None:
    case = near_misses()
    case["rule_forwards"] = [*case["rule_forwards"], forward("r9", "jane.smith@outlook.com")]
    findings = run_rules(_collected(case), make_policy(tmp_path))
    assert list(findings["object_id"]) == [f"{JANE}/r9"]
    assert isinstance(findings, pd.DataFrame)

"""external-forwarding-personal: inbox rules and mailbox forwarding, near misses included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from rule_builders import (
    DOMAIN,
    JANE,
    OFFICE,
    TOM,
    by_object,
    collected,
    make_policy,
    rule_input,
    uid,
)

from m365guard.rules import external_forwarding as rule


def run(tmp_path: Path, **other: Any) -> pd.DataFrame:
    policy = make_policy(tmp_path)
    data = rule_input(collected(**other), policy)
    return rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)


def forward(rule_id: str, address: str, *, enabled: bool = True, action: str = "forwardTo",
            mailbox: str = JANE) -> dict[str, Any]:
    return {"mailbox_id": uid(mailbox), "mailbox": mailbox, "rule_id": rule_id,
            "rule_name": f"rule {rule_id}", "is_enabled": enabled, "action": action,
            "address": address, "name": ""}


def test_inbox_rule_severity_by_target(tmp_path: Path) -> None:
    rows = [
        forward("r1", "Jane.Smith+school@GoogleMail.com"),
        forward("r2", "me@acme.co.uk", action="redirectTo"),
        forward("r3", "team@lincolnshire.gov.uk"),
        forward("r4", f"head@{DOMAIN}"),
        forward("r5", "jane@btinternet.com", enabled=False, action="forwardAsAttachmentTo"),
        forward("r6", "sw@lincolnshire.gov.uk", enabled=False),
    ]
    findings = run(tmp_path, rule_forwards=rows)
    assert by_object(findings) == {f"{JANE}/r1": "high", f"{JANE}/r2": "medium",
                                   f"{JANE}/r5": "info"}
    assert findings.set_index("object_id").loc[f"{JANE}/r5", "summary"].endswith(
        "(the rule is turned off).")


def test_one_finding_per_rule_with_the_worst_target(tmp_path: Path) -> None:
    rows = [forward("r1", "me@acme.co.uk"), forward("r1", "me@gmail.com")]
    assert by_object(run(tmp_path, rule_forwards=rows)) == {f"{JANE}/r1": "high"}


def history(mailbox: str, address: str, at: str, record: str) -> dict[str, Any]:
    return {"mailbox": mailbox, "address": address, "deliver_and_forward": True,
            "source": "audit", "observed_at": at, "record_id": record}


def test_mailbox_forwarding_latest_state(tmp_path: Path) -> None:
    rows = [
        history(JANE, "smtp:jane@gmail.com", "2024-01-01T00:00:00Z", "a1"),
        history(TOM, "tom@hotmail.com", "2024-01-01T00:00:00Z", "a2"),
        history(TOM, "", "2024-01-05T00:00:00Z", "a3"),  # cleared later
        history(f"head@{DOMAIN}", "nurse@nhs.net", "2024-01-02T00:00:00Z", "a4"),
        history(f"bursar@{DOMAIN}", "accounts@acme.co.uk", "2024-01-02T00:00:00Z", "a5"),
    ]
    findings = run(tmp_path, mailbox_forwarding=rows)
    assert by_object(findings) == {f"{JANE}/jane@gmail.com": "high",
                                   f"bursar@{DOMAIN}/accounts@acme.co.uk": "medium"}
    assert (findings["object_type"] == "mailbox_forwarding").all()


def test_no_forwarding_no_findings(tmp_path: Path) -> None:
    assert run(tmp_path).empty


def test_a_shared_mailbox_is_judged_like_anyone(tmp_path: Path) -> None:
    """[allow] mailboxes hide nothing here: the office forwarding outside is a finding."""
    rows = [forward("r1", "office.home@gmail.com", mailbox=OFFICE)]
    findings = run(tmp_path, rule_forwards=rows)
    assert by_object(findings) == {f"{OFFICE}/r1": "high"}
    assert findings.iloc[0]["actor_role"] == "shared mailbox"
    assert by_object(run(tmp_path, rule_forwards=[forward("r2", "x@gmail.com")])) == {
        f"{JANE}/r2": "high"}

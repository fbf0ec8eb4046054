"""school-business-personal-email: own address, forwards/attachments, staff personal senders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rule_builders import AMY, JANE, TOM, Mail, by_object, collected, make_policy, rule_input

from m365guard.rules import personal_email as rule

JANE_HOME = ("jane.smith.home@outlook.com", "Smith, Jane")
ROSTER_PARENT = ("mum.one@gmail.com", "Ann One")
STRANGER = ("someone@yahoo.co.uk", "Some One")
SENDER = (JANE, "Jane Smith")


def run(tmp_path: Path, mail: Mail, extra: str = "") -> pd.DataFrame:
    roster = tmp_path / "parents.csv"
    roster.write_text(f"email,name,pupil_upns\n{ROSTER_PARENT[0]},Ann One,{AMY}\n",
                      encoding="utf-8")
    policy = make_policy(tmp_path, '[people]\nparent_roster = "parents.csv"\n' + extra)
    data = rule_input(collected(mail), policy)
    return rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)


def test_mail_to_own_personal_address_is_high(tmp_path: Path) -> None:
    mail = Mail()
    imid = mail.add(JANE, "sentitems", SENDER, to=[JANE_HOME], subject="Year 2 data")
    findings = run(tmp_path, mail)
    assert by_object(findings) == {imid: "high"}
    assert "own personal address" in findings.iloc[0]["summary"]


def test_forward_or_attachment_to_unknown_webmail_is_medium(tmp_path: Path) -> None:
    mail = Mail()
    fw = mail.add(JANE, "sentitems", SENDER, to=[STRANGER], subject="fwd: minutes")
    attached = mail.add(JANE, "sentitems", SENDER, cc=[STRANGER], attachments=True)
    assert by_object(run(tmp_path, mail)) == {fw: "medium", attached: "medium"}


def test_staff_personal_address_writing_to_parent_is_high(tmp_path: Path) -> None:
    mail = Mail()
    imid = mail.add(TOM, "inbox", JANE_HOME, to=[ROSTER_PARENT], cc=[(TOM, "Tom Teacher")])
    findings = run(tmp_path, mail)
    assert by_object(findings) == {imid: "high"}
    assert findings.iloc[0]["actor"] == JANE


def test_near_misses(tmp_path: Path) -> None:
    mail = Mail()
    mail.add(JANE, "inbox", ROSTER_PARENT, to=[SENDER], subject="Question")
    mail.add(JANE, "sentitems", SENDER, to=[ROSTER_PARENT], subject="RE: Question",
             attachments=True)  # reply to a rostered parent, even with an attachment
    mail.add(JANE, "sentitems", SENDER, to=[STRANGER], subject="RE: Question")  # plain reply
    mail.add(JANE, "sentitems", SENDER, to=[("x@acme.co.uk", "X")], subject="FW: invoice")
    mail.add(JANE, "sentitems", SENDER, to=[(TOM, "Tom")], subject="FW: staff", attachments=True)
    mail.add(TOM, "inbox", JANE_HOME, to=[(TOM, "Tom Teacher")])  # only to school: not (c)
    assert run(tmp_path, mail).empty

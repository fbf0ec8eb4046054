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
    """The rule with a parent roster of one (Ann One, Amy's mother); extra goes in [people]."""
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


def test_forward_to_unidentified_webmail_is_medium(tmp_path: Path) -> None:
    mail = Mail()
    fw = mail.add(JANE, "sentitems", SENDER, to=[STRANGER], subject="fwd: minutes")
    cc = mail.add(JANE, "sentitems", SENDER, cc=[STRANGER], subject="FW: SEN review")
    findings = run(tmp_path, mail)
    assert by_object(findings) == {fw: "medium", cc: "medium"}
    assert (findings["actor"] == JANE).all()


def test_evidence_is_in_the_summary(tmp_path: Path) -> None:
    mail = Mail()
    by_name = mail.add(JANE, "sentitems", SENDER, to=[JANE_HOME])
    (tmp_path / "staff.csv").write_text(f"upn,personal_email\n{TOM},tom.t@btinternet.com\n",
                                        encoding="utf-8")
    by_roster = mail.add(TOM, "sentitems", (TOM, "Tom Teacher"),
                         to=[("Tom.T+work@btinternet.com", "Me")])
    findings = run(tmp_path, mail, 'staff_roster = "staff.csv"\n').set_index("object_id")
    assert "display name Smith, Jane matches staff Jane Smith" in findings.loc[by_name, "summary"]
    assert f"staff roster: {TOM}" in findings.loc[by_roster, "summary"]


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


def test_school_mail_to_parents_on_webmail_is_not_a_finding(tmp_path: Path) -> None:
    """Newsletters, forms and replies from school accounts: school business on school email,
    whether or not the parent is on the roster and whatever is attached."""
    mail = Mail()
    mail.add(JANE, "sentitems", SENDER, to=[SENDER], bcc=[ROSTER_PARENT, STRANGER],
             subject="Newsletter 15 January", attachments=True)
    mail.add(JANE, "sentitems", SENDER, to=[STRANGER], subject="Permission slip",
             attachments=True)  # a form to one parent who is not on the roster
    mail.add(JANE, "sentitems", SENDER, to=[ROSTER_PARENT], subject="FW: Trip letter")
    mail.add(JANE, "sentitems", SENDER, to=[("amy.p.2017@gmail.com", "Pupil, Amy")],
             subject="FW: homework")  # a pupil's personal address: pupil-contact's finding
    assert run(tmp_path, mail).empty


def test_staff_personal_address_writing_to_a_pupil_is_left_to_pupil_contact(
        tmp_path: Path) -> None:
    mail = Mail()
    mail.add(AMY, "inbox", JANE_HOME, to=[(AMY, "Amy Pupil")], subject="Club")
    assert run(tmp_path, mail).empty

"""multi-recipient-without-bcc on hand-built tables: every case in the spec, near misses too."""

from __future__ import annotations

from pathlib import Path

from rule_builders import AMY, DOMAIN, JANE, OFFICE, TOM, Mail, by_object, collected, make_policy
from rule_builders import rule_input as build

from m365guard import tables
from m365guard.rules import multi_recipient_bcc as rule

SENDER = (JANE, "Jane Smith")
PARENTS = [("mum.one@gmail.com", "Ann One"), ("dad.two@hotmail.co.uk", "Bob Two")]
PARTNERS = [("sw@lincolnshire.gov.uk", "Social Worker"), ("nurse@nhs.net", "School Nurse")]
OTHERS = [("a@acme.co.uk", "A"), ("b@widgets.com", "B")]


def run(tmp_path: Path, mail: Mail, extra: str = ""):  # type: ignore[no-untyped-def]
    policy = make_policy(tmp_path, extra)
    data = build(collected(mail), policy)
    return rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)


def test_two_parents_in_to_is_high(tmp_path: Path) -> None:
    mail = Mail()
    imid = mail.add(JANE, "sentitems", SENDER, to=PARENTS, subject="Trip")
    findings = run(tmp_path, mail)
    assert by_object(findings) == {imid: "high"}
    row = findings.iloc[0]
    assert row["actor"] == JANE and row["policy_clause"] == "AUP-BCC"
    assert set(row["counterparts"].split(";")) == {"mum.one@gmail.com", "dad.two@hotmail.co.uk"}
    assert "Trip" in row["summary"] and "BCC" in row["summary"]
    assert all(findings[col].dtype == dtype for col, dtype in tables.SCHEMAS["findings"].items())


def test_two_organisations_in_to_and_cc_is_medium(tmp_path: Path) -> None:
    mail = Mail()
    imid = mail.add(JANE, "sentitems", SENDER, to=OTHERS[:1], cc=PARTNERS[:1])
    assert by_object(run(tmp_path, mail)) == {imid: "medium"}


def test_ten_outside_addresses_is_high(tmp_path: Path) -> None:
    mail = Mail()
    many = [(f"p{i}@firm{i}.co.uk", f"P {i}") for i in range(10)]
    nine = mail.add(JANE, "sentitems", SENDER, to=many[:9])
    ten = mail.add(JANE, "sentitems", SENDER, to=many)
    assert by_object(run(tmp_path, mail)) == {nine: "medium", ten: "high"}


def test_near_misses_are_not_findings(tmp_path: Path) -> None:
    mail = Mail()
    mail.add(JANE, "sentitems", SENDER, to=[(JANE, "Jane Smith")], bcc=PARENTS + OTHERS,
             subject="Newsletter")  # BCC'd newsletter
    mail.add(JANE, "sentitems", SENDER, to=[(TOM, "Tom"), (f"allstaff@{DOMAIN}", "All staff")])
    mail.add(JANE, "sentitems", SENDER, to=PARENTS[:1], bcc=PARENTS[1:])  # one shown
    mail.add(JANE, "sentitems", SENDER, to=[PARENTS[0], ("MUM.ONE+x@googlemail.com", "Ann")])
    mail.add(JANE, "sentitems", SENDER, to=[(f"parents-list@{DOMAIN}", "Parents")])
    mail.add(JANE, "sentitems", SENDER, to=[("pta@groups.io", "PTA list"), PARENTS[0]])
    mail.add(TOM, "inbox", SENDER, to=PARENTS)  # a received copy is not the sender's sent mail
    mail.add(JANE, "sentitems", SENDER, to=PARTNERS, subject="Early help")  # multi-agency
    mail.add(JANE, "sentitems", SENDER, to=PARTNERS[:1], cc=[("head@nhs.net", "Nurse lead")])
    assert run(tmp_path, mail).empty


def test_partners_mixed_with_parents_or_others_still_count(tmp_path: Path) -> None:
    mail = Mail()
    parent = mail.add(JANE, "sentitems", SENDER, to=PARTNERS, cc=PARENTS[:1])
    two_parents = mail.add(JANE, "sentitems", SENDER, to=[*PARTNERS, *PARENTS])
    supplier = mail.add(JANE, "sentitems", SENDER, to=[PARTNERS[0], OTHERS[0]])
    assert by_object(run(tmp_path, mail)) == {parent: "medium", two_parents: "high",
                                             supplier: "medium"}


def test_the_allow_list_never_hides_an_exposure(tmp_path: Path) -> None:
    """The office mailbox (allow-listed) and a list in To beside parents: still exposed."""
    mail = Mail()
    office = mail.add(OFFICE, "sentitems", (OFFICE, "Office"), to=PARENTS)
    beside_list = mail.add(JANE, "sentitems", SENDER,
                           to=[(f"parents-list@{DOMAIN}", "Parents"), *PARENTS])
    outside_list = mail.add(JANE, "sentitems", SENDER, to=[("pta@groups.io", "PTA"), *PARENTS])
    findings = run(tmp_path, mail)
    assert by_object(findings) == {office: "high", beside_list: "high", outside_list: "high"}
    row = findings.set_index("object_id").loc[office]
    assert row["actor"] == OFFICE and row["actor_role"] == "shared mailbox"
    assert "pta@groups.io" not in findings.set_index("object_id").loc[outside_list,
                                                                       "counterparts"]


def test_pupil_mailboxes_are_not_checked(tmp_path: Path) -> None:
    """The staff AUP binds staff and school mailboxes, not pupils writing to their family."""
    mail = Mail()
    mail.add(AMY, "sentitems", (AMY, "Amy Pupil"), to=PARENTS)
    assert run(tmp_path, mail).empty


def test_min_external_recipients_setting(tmp_path: Path) -> None:
    mail = Mail()
    mail.add(JANE, "sentitems", SENDER, to=OTHERS)
    three = mail.add(JANE, "sentitems", SENDER, to=[*OTHERS, ("c@third.org", "C")])
    extra = '[rules.multi-recipient-without-bcc]\nmin_external_recipients = 3\nseverity = "low"\n'
    assert by_object(run(tmp_path, mail, extra)) == {three: "low"}


def test_one_finding_per_internet_message_id(tmp_path: Path) -> None:
    mail = Mail()
    mail.add(JANE, "sentitems", SENDER, to=PARENTS, imid="<same@x>")
    mail.add(JANE, "sentitems", SENDER, to=PARENTS, imid="<same@x>")
    findings = run(tmp_path, mail)
    assert len(findings) == 1
    assert findings["finding_id"].str.fullmatch(r"[0-9a-f]{16}").all()

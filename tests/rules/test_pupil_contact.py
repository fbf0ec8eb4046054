"""pupil-contact-non-school-channel on hand-built tables: mail both ways, chats, near misses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from rule_builders import (
    AMY,
    HOME_TENANT,
    JANE,
    TOM,
    Mail,
    by_object,
    collected,
    make_policy,
    rule_input,
    uid,
)

from m365guard.rules import pupil_contact as rule

AMY_HOME = ("amy.p.2017@gmail.com", "Pupil, Amy")  # matched to Amy by display name
JANE_HOME = ("janesmith1980@yahoo.co.uk", "Jane Smith")
PARENT = ("mum.pupil@gmail.com", "Mrs K Pupil")


def run(tmp_path: Path, extra: str = "", mail: Mail | None = None,
        **other: Any) -> pd.DataFrame:
    policy = make_policy(tmp_path, extra)
    data = rule_input(collected(mail, **other), policy)
    return rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)


def test_staff_mail_to_and_from_pupil_personal_address(tmp_path: Path) -> None:
    mail = Mail()
    sent = mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[AMY_HOME], subject="Homework")
    received = mail.add(TOM, "inbox", AMY_HOME, to=[(TOM, "Tom Teacher")])
    findings = run(tmp_path, mail=mail)
    assert by_object(findings) == {sent: "high", received: "high"}
    first = findings.set_index("object_id").loc[sent]
    assert first["actor"] == JANE and first["counterparts"] == AMY_HOME[0]
    assert "Amy Pupil" in first["summary"] and "Homework" in first["summary"]


def test_pupil_mailbox_with_staff_personal_address(tmp_path: Path) -> None:
    mail = Mail()
    imid = mail.add(AMY, "inbox", JANE_HOME, to=[(AMY, "Amy Pupil")])
    findings = run(tmp_path, mail=mail)
    assert by_object(findings) == {imid: "high"}
    assert findings.iloc[0]["actor"] == JANE


def test_school_to_school_and_parent_mail_is_not_a_finding(tmp_path: Path) -> None:
    mail = Mail()
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[(AMY, "Amy Pupil")])
    mail.add(JANE, "inbox", PARENT, to=[(JANE, "Jane Smith")])
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[PARENT])
    mail.add(JANE, "sentitems", (JANE, "Jane Smith"), to=[("amy.p@acme.co.uk", "Amy Pupil")])
    assert run(tmp_path, mail=mail).empty


def _chat(chat_id: str, chat_type: str, members: list[dict[str, str]]) -> dict[str, Any]:
    return {"chats": [{"chat_id": chat_id, "chat_type": chat_type, "topic": "Reading",
                       "created_at": "2024-01-10T09:00:00Z"}],
            "chat_members": [{"chat_id": chat_id, **m} for m in members]}


def _member(upn: str, roles: str = "owner") -> dict[str, str]:
    return {"user_id": uid(upn), "email": upn, "display_name": upn, "tenant_id": HOME_TENANT,
            "roles": roles}


def test_chat_with_pupil_and_external_or_guest(tmp_path: Path) -> None:
    outsider = {"user_id": "x-1", "email": "coach@club.org", "display_name": "Coach",
                "tenant_id": "99999999-0000-0000-0000-000000000000", "roles": "owner"}
    guest = {"user_id": "g-1", "email": "g@gmail.com", "display_name": "Guest", "tenant_id":
             HOME_TENANT, "roles": "guest"}
    for chat_id, stranger in (("chat-ext", outsider), ("chat-guest", guest)):
        tables_ = _chat(chat_id, "group", [_member(AMY), _member(TOM), stranger])
        findings = run(tmp_path, **tables_)
        assert by_object(findings) == {chat_id: "high"}
        row = findings.iloc[0]
        assert row["object_type"] == "chat"
        assert (row["actor"], row["actor_role"]) == (TOM, "staff")  # the school member
        assert row["counterparts"] == stranger["email"]  # the outsider


def test_chat_with_pupil_and_partner_is_info(tmp_path: Path) -> None:
    """A local-authority officer (another tenant) or the school nurse (guest) with a pupil and
    a teacher: recorded, not a violation; a stranger beside them makes it high again."""
    officer = {"user_id": "x-2", "email": "officer@lincolnshire.gov.uk", "display_name": "LA",
               "tenant_id": "99999999-0000-0000-0000-000000000000", "roles": "owner"}
    nurse = {"user_id": "g-2", "email": "nurse@nhs.net", "display_name": "Nurse",
             "tenant_id": HOME_TENANT, "roles": "guest"}
    stranger = {"user_id": "x-3", "email": "coach@club.org", "display_name": "Coach",
                "tenant_id": "99999999-0000-0000-0000-000000000000", "roles": "owner"}
    partners = _chat("c-la", "group", [_member(AMY), _member(TOM), officer, nurse])
    findings = run(tmp_path, **partners)
    assert by_object(findings) == {"c-la": "info"}
    assert findings.iloc[0]["counterparts"] == "officer@lincolnshire.gov.uk;nurse@nhs.net"
    assert "partner organisation" in findings.iloc[0]["summary"]
    mixed = _chat("c-mix", "group", [_member(AMY), _member(TOM), officer, stranger])
    assert by_object(run(tmp_path, **mixed)) == {"c-mix": "high"}


def test_a_personal_teams_account_is_never_a_partner(tmp_path: Path) -> None:
    msa = {"user_id": "8:live:nurse", "email": "nurse@nhs.net", "display_name": "Nurse",
           "tenant_id": "", "roles": "", "non_entra_type": "microsoftAccountUserConversationMember"}
    assert by_object(run(tmp_path, **_chat("c-msa", "group", [_member(AMY), msa]))) == {
        "c-msa": "high"}


def test_chat_without_staff_names_the_pupil(tmp_path: Path) -> None:
    guest = {"user_id": "g-1", "email": "g@gmail.com", "display_name": "Guest",
             "tenant_id": HOME_TENANT, "roles": "guest"}
    findings = run(tmp_path, **_chat("c-alone", "group", [_member(AMY), guest]))
    row = findings.iloc[0]
    assert (row["actor"], row["actor_role"], row["counterparts"]) == (AMY, "pupil", "g@gmail.com")
    assert "no member of staff" in row["summary"]


def test_chat_with_pupil_and_a_member_who_is_not_an_entra_user(tmp_path: Path) -> None:
    """A Teams personal account (no tenant id, no guest role) is outside the school."""
    personal = {"user_id": "8:live:coach", "email": "", "display_name": "Coach (personal)",
                "tenant_id": "", "roles": "",
                "non_entra_type": "microsoftAccountUserConversationMember"}
    findings = run(tmp_path, **_chat("chat-msa", "group", [_member(AMY), personal]))
    assert by_object(findings) == {"chat-msa": "high"}
    assert "Coach (personal)" in findings.iloc[0]["summary"]


def test_internal_chats_are_not_findings_by_default(tmp_path: Path) -> None:
    assert run(tmp_path, **_chat("c1", "oneOnOne", [_member(AMY), _member(TOM)])).empty
    outsider_no_pupil = {"user_id": "x-1", "email": "coach@club.org", "display_name": "Coach",
                         "tenant_id": "other", "roles": "owner"}
    assert run(tmp_path, **_chat("c2", "group", [_member(JANE), outsider_no_pupil])).empty


def test_flag_one_to_one_chats_option(tmp_path: Path) -> None:
    extra = "[rules.pupil-contact-non-school-channel]\nflag_one_to_one_chats = true\n"
    findings = run(tmp_path, extra, **_chat("c1", "oneOnOne", [_member(AMY), _member(TOM)]))
    assert by_object(findings) == {"c1": "medium"}
    assert findings.iloc[0]["actor"] == TOM
    group = _chat("c2", "group", [_member(AMY), _member(TOM)])
    assert run(tmp_path, extra, **group).empty

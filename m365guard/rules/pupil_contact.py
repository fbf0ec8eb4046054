"""Pupil contact outside school accounts and the school's Teams.

## What it checks
Staff-pupil contact outside school accounts: mail via a personal address, Teams chats with
outsiders. Mail between staff and pupils where either side is not a school account: a staff
mailbox's message to or from a pupil's personal address, or a pupil mailbox's message to or
from a staff member's personal address (personal addresses are matched to people by display
name or the staff roster). Teams chats whose members include a pupil and someone outside the
school (a member from another tenant, or a guest). With `flag_one_to_one_chats = true`, also
every one-to-one chat between a staff member and a pupil (medium).

## Why (AUP-PUPIL-CONTACT)
"All email contact with pupils must be made using the member of staff's and the pupil's school
email address, or through Microsoft Teams." Mail through a personal account leaves the school's
safeguarding, retention and monitoring.

## Example
Mrs Jane Smith (staff) writes from school to "Tom Brown <tombrown2016@gmail.com>", the
personal address of pupil Tom Brown: one high finding on that message.

## What it cannot see
Personal addresses that match nobody by name and are on no roster; mail between a personal
address and a pupil that never touches a school mailbox; message bodies; WhatsApp, text and
other apps.
"""

from __future__ import annotations

import pandas as pd

from m365guard import tables
from m365guard.config import Policy, PupilContactSettings, RuleSettings, Severity
from m365guard.directory import STRING
from m365guard.rules.base import (
    RuleInput,
    as_text,
    base_severity,
    display,
    make_findings,
    shorten,
    strongest,
)

RULE_ID = "pupil-contact-non-school-channel"
CLAUSE = "AUP-PUPIL-CONTACT"
DEFAULT_SEVERITY: Severity = "high"


def check(data: RuleInput, settings: RuleSettings, policy: Policy) -> pd.DataFrame:
    """Findings for mail and chats that reach pupils outside school accounts."""
    severity = base_severity(settings, DEFAULT_SEVERITY)
    one_to_one = isinstance(settings, PupilContactSettings) and settings.flag_one_to_one_chats
    rows = pd.concat([_mail(data, severity), _outside_chats(data, policy, severity),
                      _one_to_one_chats(data) if one_to_one else tables.empty("findings")],
                     ignore_index=True)
    return make_findings(RULE_ID, settings.clause or CLAUSE, strongest(rows))


def _mail(data: RuleInput, severity: str) -> pd.DataFrame:
    parts = data.participants
    mailbox_role = parts["mailbox_role"]
    personal = parts["role"] == "personal"
    staff_to_pupil = (mailbox_role == "staff") & personal & (parts["person_role"] == "pupil")
    pupil_to_staff = (mailbox_role == "pupil") & personal & (parts["person_role"] == "staff")
    hits = as_text(parts[staff_to_pupil | pupil_to_staff])
    if hits.empty:
        return tables.empty("findings")
    staff_side = hits["mailbox_role"] == "staff"
    msg = hits["msg"]
    mailbox = pd.Series(data.message_column("mailbox", msg), index=hits.index)
    person_upn = hits["person_id"].map(data.user_by_id["upn"]).fillna(hits["address"])
    person_name = display(data, hits["person_id"], hits["address"])
    subject = shorten(pd.Series(data.message_column("subject", msg), index=hits.index))
    owner = display(data, pd.Series(data.message_column("mailbox_id", msg), index=hits.index),
                    mailbox)
    summary = (owner + " (staff) exchanged email with " + hits["address"]
               + ", the personal address of pupil " + person_name
               + ", instead of school accounts; subject \"" + subject + "\".")
    reverse = (owner + " (pupil) exchanged email with " + hits["address"]
               + ", the personal address of staff member " + person_name
               + ", instead of school accounts; subject \"" + subject + "\".")
    return pd.DataFrame({
        "severity": severity,
        "occurred_at": data.message_column("sent_at", msg),
        "actor": mailbox.where(staff_side, person_upn),
        "actor_role": staff_side.map({True: "staff", False: "staff (personal address)"}),
        "counterparts": hits["address"],
        "object_type": "message",
        "object_id": _message_object_ids(data, msg),
        "summary": summary.where(staff_side, reverse),
    })


def _message_object_ids(data: RuleInput, msg: pd.Series) -> pd.Series:
    internet = pd.Series(data.message_column("internet_message_id", msg), index=msg.index)
    graph_id = pd.Series(data.message_column("message_id", msg), index=msg.index)
    return internet.where(internet != "", graph_id)


def _chat_members(data: RuleInput, policy: Policy) -> pd.DataFrame:
    """Chat members with their school role and whether they are outside the school."""
    members = data.collected["chat_members"]
    role = members["user_id"].map(data.user_by_id["role"]).fillna("")
    home = set(members.loc[role != "", "tenant_id"]) - {""}
    if not home and policy.tenant.tenant_id:
        home = {policy.tenant.tenant_id}
    guest = members["roles"].str.split(";").map(lambda roles: "guest" in roles).astype(bool)
    foreign = (members["tenant_id"] != "") & ~members["tenant_id"].isin(home)
    not_entra = members["non_entra_type"] != ""  # a personal Teams account, phone, anonymous
    return members.assign(role=role, outside=guest | foreign | not_entra)


def _chat_info(data: RuleInput, chat_ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    chats = data.collected["chats"].drop_duplicates("chat_id").set_index("chat_id")
    topic = chat_ids.map(chats["topic"]).fillna("")
    label = ("a Teams chat" + topic.where(topic == "", " (\"" + shorten(topic) + "\")"))
    return chat_ids.map(chats["created_at"]), label


def _outside_chats(data: RuleInput, policy: Policy, severity: str) -> pd.DataFrame:
    members = _chat_members(data, policy)
    pupils = members[(members["role"] == "pupil") & ~members["outside"]]
    outsiders = members[members["outside"]]
    chat_ids = pd.Series(sorted(set(pupils["chat_id"]) & set(outsiders["chat_id"])),
                         dtype=STRING)
    if chat_ids.empty:
        return tables.empty("findings")
    outsider = outsiders.drop_duplicates("chat_id").set_index("chat_id")
    who = outsider["email"].where(outsider["email"] != "", outsider["display_name"])
    pupil_names = (pupils.assign(name=display(data, pupils["user_id"], pupils["display_name"]))
                   .groupby("chat_id")["name"].agg("; ".join))
    pupil_upns = (pupils.assign(upn=pupils["user_id"].map(data.user_by_id["upn"]).fillna(""))
                  .groupby("chat_id")["upn"].agg(";".join))
    created, label = _chat_info(data, chat_ids)
    actor = chat_ids.map(who)
    return pd.DataFrame({
        "severity": severity, "occurred_at": created, "actor": actor,
        "actor_role": "outside the school", "counterparts": chat_ids.map(pupil_upns),
        "object_type": "chat", "object_id": chat_ids,
        "summary": (label.str.slice(0, 1).str.upper() + label.str.slice(1) + " includes pupil "
                    + chat_ids.map(pupil_names) + " and " + actor
                    + ", who is outside the school (guest or another organisation)."),
    })


def _one_to_one_chats(data: RuleInput) -> pd.DataFrame:
    chats = data.collected["chats"]
    one_to_one = set(chats.loc[chats["chat_type"] == "oneOnOne", "chat_id"])
    members = data.collected["chat_members"]
    members = members[members["chat_id"].isin(one_to_one)]
    members = members.assign(role=members["user_id"].map(data.user_by_id["role"]).fillna(""))
    staff = members[members["role"] == "staff"].drop_duplicates("chat_id").set_index("chat_id")
    pupil = members[members["role"] == "pupil"].drop_duplicates("chat_id").set_index("chat_id")
    chat_ids = pd.Series(sorted(set(staff.index) & set(pupil.index)), dtype=STRING)
    if chat_ids.empty:
        return tables.empty("findings")
    created, _ = _chat_info(data, chat_ids)
    staff_name = display(data, chat_ids.map(staff["user_id"]), chat_ids.map(staff["display_name"]))
    pupil_name = display(data, chat_ids.map(pupil["user_id"]), chat_ids.map(pupil["display_name"]))
    return pd.DataFrame({
        "severity": "medium", "occurred_at": created,
        "actor": chat_ids.map(staff["user_id"]).map(data.user_by_id["upn"]),
        "actor_role": "staff",
        "counterparts": chat_ids.map(pupil["user_id"]).map(data.user_by_id["upn"]),
        "object_type": "chat", "object_id": chat_ids,
        "summary": staff_name + " (staff) has a one-to-one Teams chat with pupil " + pupil_name
        + "; the school asks for group chats or channels with pupils.",
    })

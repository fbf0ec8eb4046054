"""Pupil contact outside school accounts and the school's Teams.

## What it checks
Staff-pupil contact outside school accounts: mail via a personal address, Teams chats with
outsiders. Mail between staff and pupils where either side is not a school account: a staff
mailbox's message to or from a pupil's personal address, or a pupil mailbox's message to or
from a staff member's personal address (personal addresses are matched to people by display
name or the staff roster) -> the rule's severity (high). Teams chats whose members include a
pupil and someone outside the school (a guest, a member from another tenant, or a member who
is not an Entra user at all, such as a personal Microsoft account) -> high. With
`flag_one_to_one_chats = true`, also every one-to-one chat between a staff member and a pupil
(medium).

Chats with partners follow `addresses.partner_domains`, as mail does: when every outsider in a
chat with a pupil is an Entra user (guest or another tenant) at a partner domain, the finding
is info, not a violation. The chat is in the school's Teams, the channel the clause asks for,
and the local authority officer or school nurse is there by design; info records it for the
safeguarding lead without an alert, where a pupil in a chat with a stranger is high. A personal
Teams account is never a partner, whatever address it shows.

A chat finding names the school member responsible as its actor: the member of staff in the
chat, else the pupil; the outsiders are its counterparts.

`[allow]`: no effect. No allow-listed mailbox or list makes contact with a pupil through a
personal address, or a pupil's chat with a stranger, acceptable.

## Why (AUP-PUPIL-CONTACT)
"All email contact with pupils must be made using the member of staff's and the pupil's school
email address, or through Microsoft Teams." Mail through a personal account leaves the school's
safeguarding, retention and monitoring.

## Example
Mrs Jane Smith (staff) writes from school to "Tom Brown <tombrown2016@gmail.com>", the
personal address of pupil Tom Brown: one high finding on that message. A Teams chat of a
teacher, two pupils and a tutoring company's account from another tenant: one high finding,
actor the teacher. The same chat with the school nurse (nhs.net) instead: info.

## What it cannot see
Personal addresses that match nobody by name and are on no roster; mail between a personal
address and a pupil that never touches a school mailbox; message bodies; WhatsApp, text and
other apps; whether a partner's account in a chat is used by the person it names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import Policy, PupilContactSettings, RuleSettings, Severity
from m365guard.directory import (
    STRING,
    domain_of,
    is_partner_domain,
    lookup,
    normalise_addresses,
)
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
    return tables.message_object_ids(internet, graph_id)


def _chat_members(data: RuleInput, policy: Policy) -> pd.DataFrame:
    """Chat members with their school role, whether they are outside the school, and whether
    an outsider is a partner: an Entra user (guest or another tenant) at a partner domain. A
    personal Teams account is never a partner, whatever address it shows."""
    members = data.collected["chat_members"].drop_duplicates(["chat_id", "user_id", "email"])
    role = members["user_id"].map(data.user_by_id["role"]).fillna("")
    home = set(members.loc[role != "", "tenant_id"]) - {""}
    if not home and policy.tenant.tenant_id:
        home = {policy.tenant.tenant_id}
    guest = members["roles"].str.split(";").map(lambda roles: "guest" in roles).to_numpy(bool)
    foreign = ((members["tenant_id"] != "") & ~members["tenant_id"].isin(home)).to_numpy(bool)
    # a personal Teams account, phone, anonymous: not an Entra user, never a school account
    not_entra = (members["non_entra_type"].fillna("") != "").to_numpy(bool)
    outside = guest | foreign | not_entra
    domain = domain_of(normalise_addresses(members["email"]))
    at_partner = is_partner_domain(domain, policy.addresses.partner_domains).to_numpy(bool)
    return members.assign(role=role, outside=outside, partner=outside & ~not_entra & at_partner)


def _chat_info(data: RuleInput, chat_ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    chats = data.collected["chats"].drop_duplicates("chat_id").set_index("chat_id")
    topic = chat_ids.map(chats["topic"]).fillna("")
    label = ("a Teams chat" + topic.where(topic == "", " (\"" + shorten(topic) + "\")"))
    return chat_ids.map(chats["created_at"]), label


def _outside_chats(data: RuleInput, policy: Policy, severity: str) -> pd.DataFrame:
    members = _chat_members(data, policy)
    inside = members[~members["outside"]]
    pupils = inside[inside["role"] == "pupil"]
    outsiders = members[members["outside"]]
    chat_ids = pd.Series(sorted(set(pupils["chat_id"]) & set(outsiders["chat_id"])),
                         dtype=STRING)
    if chat_ids.empty:
        return tables.empty("findings")
    strangers = set(outsiders.loc[~outsiders["partner"], "chat_id"])
    stranger = chat_ids.isin(strangers).to_numpy()
    who = outsiders.assign(who=outsiders["email"].where(outsiders["email"] != "",
                                                        outsiders["display_name"]))
    counterparts = chat_ids.map(who.groupby("chat_id")["who"].agg(";".join))
    named = inside.assign(upn=inside["user_id"].map(data.user_by_id["upn"]).fillna(""),
                          name=display(data, inside["user_id"], inside["display_name"]))
    staff = named[named["role"] == "staff"].drop_duplicates("chat_id").set_index("chat_id")
    first_pupil = named[named["role"] == "pupil"].drop_duplicates("chat_id").set_index("chat_id")
    has_staff = chat_ids.isin(staff.index).to_numpy()
    actor = lookup(chat_ids, staff["upn"]).where(has_staff, lookup(chat_ids, first_pupil["upn"]))
    pupil_names = named[named["role"] == "pupil"].groupby("chat_id")["name"].agg("; ".join)
    created, label = _chat_info(data, chat_ids)
    outside_words = np.where(
        stranger, ", who is outside the school (a guest, another organisation or a personal "
        "Teams account)", ", from a partner organisation (addresses.partner_domains): recorded "
        "for the safeguarding lead, not a violation")
    staff_words = np.where(has_staff, "; staff in the chat: " + lookup(chat_ids, staff["name"]),
                           "; no member of staff is in the chat")
    return pd.DataFrame({
        "severity": np.where(stranger, severity, "info"), "occurred_at": created,
        "actor": actor, "actor_role": np.where(has_staff, "staff", "pupil"),
        "counterparts": counterparts, "object_type": "chat", "object_id": chat_ids,
        "summary": (label.str.slice(0, 1).str.upper() + label.str.slice(1) + " includes pupil "
                    + chat_ids.map(pupil_names) + " and " + counterparts.str.replace(";", ", ")
                    + outside_words + staff_words + "."),
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

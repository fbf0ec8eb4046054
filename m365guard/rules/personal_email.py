"""School business conducted through staff personal email addresses.

## What it checks
Staff using personal addresses for school business, three cases, one finding per message:
(a) a staff mailbox's Sent Items message to the sender's own personal address -> the rule's
severity (high); (b) school content forwarded (subject starting FW: or Fwd:) from a staff
mailbox to a personal webmail address that no parent or pupil relationship explains (not on
the parent roster, not matched to a pupil) -> medium; (c) a message from a staff member's
personal address to a parent or an unidentified personal address, seen in any school mailbox
(school mail copied in) -> the rule's severity (high). A personal address counts as a staff
member's only with evidence, given in the summary: the staff roster, or a display name that
matches exactly one member of staff.

Not findings: mail from a school account to parents or other outsiders on webmail
(newsletters, forms, replies, with or without attachments): that is school business done
through school email. A staff personal address writing only to school accounts (work sent in
from home). A staff personal address writing to a pupil: pupil-contact-non-school-channel
reports that, under AUP-PUPIL-CONTACT, once.

`[allow]`: no effect on what is found. A shared mailbox (`allow.mailboxes`) belongs to no one,
so it has no own personal address, and its Sent Items are not a member of staff's (case (b)
is checked in staff mailboxes only); distribution lists are school addresses, never personal.

## Why (AUP-PERSONAL-EMAIL)
"At no time should any school business be conducted using a personal email address." School
records in personal accounts are outside the school's retention, subject access and breach
handling.

## Example
A teacher sends "Reports to finish at home" to her own jsmith@outlook.com (on the staff
roster): one high finding. She replies to a parent's gmail with the trip form attached: none.

## What it cannot see
What a message says or what an attachment holds, so new mail (not FW:) with a class list to an
unknown webmail address looks like a form sent to a parent and is not reported; a staff
member's personal address that is on no roster and shows no matching name; a parent who is
not on the parent roster, to whom a forward is reported as (b) (keep the roster complete);
forwards whose subject was rewritten; mail between personal accounts that never touches a
school mailbox.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import Policy, RuleSettings, Severity
from m365guard.rules.base import (
    RuleInput,
    as_text,
    base_severity,
    display,
    make_findings,
    shorten,
    strongest,
)

RULE_ID = "school-business-personal-email"
CLAUSE = "AUP-PERSONAL-EMAIL"
DEFAULT_SEVERITY: Severity = "high"

_FORWARD_SUBJECT = r"^\s*(?i:fwd?)\s*:"
_RECIPIENT_KINDS = ["to", "cc", "bcc"]


def check(data: RuleInput, settings: RuleSettings, policy: Policy) -> pd.DataFrame:
    """One finding per message that moves school business through a staff personal address."""
    severity = base_severity(settings, DEFAULT_SEVERITY)
    parts = data.participants
    msg = parts["msg"]
    recipient = parts["kind"].isin(_RECIPIENT_KINDS)
    personal = parts["role"] == "personal"
    staff_sent = (parts["folder"] == "sentitems") & (parts["mailbox_role"] == "staff")
    # webmail: personal, or a parent the directory guessed from contact (not from the roster)
    roster_parent = parts["evidence"].str.startswith("parent roster").astype(bool)
    webmail = staff_sent & recipient & (personal | ((parts["role"] == "parent")
                                                    & ~roster_parent))
    mailbox_id = pd.Series(data.message_column("mailbox_id", msg[webmail]),
                           index=msg[webmail].index)
    own = (webmail & personal).copy()
    own[own] = parts.loc[own, "person_id"].astype(str) == mailbox_id[own]

    unexplained = webmail & ~own & (parts["person_role"] != "pupil")
    subject = pd.Series(data.message_column("subject", msg[unexplained]),
                        index=msg[unexplained].index).fillna("").astype(str)
    forwarded = unexplained.copy()
    forwarded[unexplained] = subject.str.contains(_FORWARD_SUBJECT, regex=True).to_numpy(bool)

    from_staff_personal = (parts["kind"] == "from") & personal & (parts["person_role"] == "staff")
    reached = (recipient & ((parts["role"] == "parent")
                            | (personal & (parts["person_id"] == ""))))
    personal_sender = reached & msg.isin(np.unique(msg[from_staff_personal]))
    senders = as_text(parts[from_staff_personal & msg.isin(np.unique(msg[personal_sender]))])
    parts = as_text(parts[own | forwarded | personal_sender])
    own, forwarded, personal_sender = (own[parts.index], forwarded[parts.index],
                                       personal_sender[parts.index])

    rows = pd.concat([
        _rows(data, parts[own], severity, "sent school mail to their own personal address"),
        _rows(data, parts[forwarded], "medium", "forwarded school mail to the personal address"),
        _personal_sender_rows(data, senders, parts[personal_sender], severity),
    ], ignore_index=True)
    return make_findings(RULE_ID, settings.clause or CLAUSE, strongest(rows))


def _evidence(evidence: pd.Series) -> pd.Series:
    """Why an address is taken to be whose it is, for the summary."""
    text = evidence.fillna("").astype(str)
    return text.where(text == "", " (" + text + ")")


def _object_ids(data: RuleInput, msg: pd.Series) -> pd.Series:
    internet = pd.Series(data.message_column("internet_message_id", msg), index=msg.index)
    return tables.message_object_ids(internet, data.message_column("message_id", msg))


def _rows(data: RuleInput, hits: pd.DataFrame, severity: str, what: str) -> pd.DataFrame:
    if hits.empty:
        return tables.empty("findings")
    msg = hits["msg"]
    mailbox = pd.Series(data.message_column("mailbox", msg), index=hits.index)
    name = display(data, pd.Series(data.message_column("mailbox_id", msg), index=hits.index),
                   mailbox)
    subject = shorten(pd.Series(data.message_column("subject", msg), index=hits.index))
    return pd.DataFrame({
        "severity": severity, "occurred_at": data.message_column("sent_at", msg),
        "actor": mailbox, "actor_role": "staff", "counterparts": hits["address"],
        "object_type": "message", "object_id": _object_ids(data, msg),
        "summary": name + " " + what + " " + hits["address"] + ": \"" + subject + "\""
        + _evidence(hits["evidence"]) + ".",
    })


def _personal_sender_rows(data: RuleInput, senders: pd.DataFrame, hits: pd.DataFrame,
                          severity: str) -> pd.DataFrame:
    if hits.empty:
        return tables.empty("findings")
    sender = senders.drop_duplicates("msg").set_index("msg")
    msg = hits["msg"]
    staff_id = msg.map(sender["person_id"])
    name = display(data, staff_id, msg.map(sender["address"]))
    subject = shorten(pd.Series(data.message_column("subject", msg), index=hits.index))
    actor = staff_id.map(data.user_by_id["upn"]).fillna(msg.map(sender["address"]))
    return pd.DataFrame({
        "severity": severity, "occurred_at": data.message_column("sent_at", msg),
        "actor": actor, "actor_role": "staff (personal address)",
        "counterparts": hits["address"], "object_type": "message",
        "object_id": _object_ids(data, msg),
        "summary": name + " wrote from the personal address " + msg.map(sender["address"])
        + " to " + hits["address"] + np.where(hits["role"] == "parent", " (a parent)", "")
        + ": \"" + subject + "\"" + _evidence(msg.map(sender["evidence"])) + ".",
    })

"""School business conducted through personal email.

## What it checks
School mail sent or forwarded to personal webmail, and staff personal addresses in use. In a
staff mailbox's Sent Items: (a) a message to the sender's own personal address (matched by
display name or the staff roster) -> the rule's severity (high); (b) a forward (subject
starting FW: or Fwd:) or a message with attachments to a personal webmail address that is not a
parent on the parent roster (nor a pupil: that is pupil-contact) -> medium. In any mailbox: (c)
a message sent from a staff member's personal address to a parent or an unmatched personal
address (seen when school mail is copied in) -> the rule's severity (high). One finding per
message. Ordinary replies to parents who use webmail are not findings.

## Why (AUP-PERSONAL-EMAIL)
"At no time should any school business be conducted using a personal email address." School
records in personal accounts are outside the school's retention, subject access and breach
handling.

## Example
A teacher forwards "FW: Year 2 assessment data" to her own jsmith@outlook.com: one high finding.

## What it cannot see
Mail between personal accounts that never touches a school mailbox; personal addresses that
match nobody by name and are on no roster; what an attachment contains.
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
    """One finding per message that moves school business through personal email."""
    severity = base_severity(settings, DEFAULT_SEVERITY)
    parts = data.participants
    msg = parts["msg"]
    recipient = parts["kind"].isin(_RECIPIENT_KINDS)
    staff_sent = (parts["folder"] == "sentitems") & (parts["mailbox_role"] == "staff")
    personal = parts["role"] == "personal"
    candidates = staff_sent & recipient & parts["role"].isin(["personal", "parent"])
    mailbox_id = pd.Series(data.message_column("mailbox_id", msg[candidates]),
                           index=msg[candidates].index)
    own = (candidates & personal).copy()
    own[own] = parts.loc[own, "person_id"].astype(str) == mailbox_id[own]

    roster_parent = parts["evidence"].str.startswith("parent roster").astype(bool)
    to_webmail = candidates & ~roster_parent & (parts["person_role"] != "pupil") & ~own
    subject = pd.Series(data.message_column("subject", msg[to_webmail]),
                        index=msg[to_webmail].index).fillna("").astype(str)
    sent_out = to_webmail.copy()
    sent_out[to_webmail] = (subject.str.contains(_FORWARD_SUBJECT, regex=True).to_numpy()
                            | data.message_column("has_attachments", msg[to_webmail])
                            .astype(bool))

    from_staff_personal = (parts["kind"] == "from") & personal & (parts["person_role"] == "staff")
    reached = (recipient & ((parts["role"] == "parent")
                            | (personal & (parts["person_id"] == ""))))
    personal_sender = reached & msg.isin(np.unique(msg[from_staff_personal]))
    senders = as_text(parts[from_staff_personal & msg.isin(np.unique(msg[personal_sender]))])
    parts = as_text(parts[own | sent_out | personal_sender])
    own, sent_out, personal_sender = own[parts.index], sent_out[parts.index], personal_sender[
        parts.index]

    rows = pd.concat([
        _rows(data, parts[own], severity, "sent school mail to their own personal address"),
        _rows(data, parts[sent_out], "medium", "sent a forward or attachment to the personal "
              "address"),
        _personal_sender_rows(data, senders, parts[personal_sender], severity),
    ], ignore_index=True)
    return make_findings(RULE_ID, settings.clause or CLAUSE, strongest(rows))


def _object_ids(data: RuleInput, msg: pd.Series) -> pd.Series:
    internet = pd.Series(data.message_column("internet_message_id", msg), index=msg.index)
    return internet.where(internet != "", data.message_column("message_id", msg))


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
        "summary": name + " " + what + " " + hits["address"] + ": \"" + subject + "\".",
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
        + ": \"" + subject + "\".",
    })

"""School business conducted through personal email.

## What it checks
In a staff mailbox's Sent Items: (a) a message to the sender's own personal address (matched
by display name or the staff roster) -> the rule's severity (high); (b) a forward (subject
starting FW: or Fwd:) or a message with attachments to a personal webmail address that is not
a parent on the parent roster (nor a pupil: that is pupil-contact) -> medium. In any mailbox:
(c) a message sent from a staff member's personal address to a parent or an unmatched personal
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
    base_severity,
    display,
    make_findings,
    shorten,
    strongest,
)

RULE_ID = "school-business-personal-email"
CLAUSE = "AUP-PERSONAL-EMAIL"
DEFAULT_SEVERITY: Severity = "high"
WHAT_IT_CHECKS = "school mail sent/forwarded to personal webmail; staff personal addresses in use"
WHAT_IT_CANNOT_SEE = "mail only between personal accounts; attachment contents"

_FORWARD_SUBJECT = r"^\s*(?i:fwd?)\s*:"
_RECIPIENT_KINDS = ["to", "cc", "bcc"]


def check(data: RuleInput, settings: RuleSettings, policy: Policy) -> pd.DataFrame:
    """One finding per message that moves school business through personal email."""
    severity = base_severity(settings, DEFAULT_SEVERITY)
    parts = data.participants
    msg = parts["msg"]
    recipient = parts["kind"].isin(_RECIPIENT_KINDS)
    staff_sent = ((data.message_column("folder", msg) == "sentitems")
                  & (data.message_column("mailbox_role", msg) == "staff"))
    personal = parts["role"] == "personal"
    own = (staff_sent & recipient & personal
           & (parts["person_id"] == data.message_column("mailbox_id", msg)))

    subject = pd.Series(data.message_column("subject", msg), index=parts.index)
    business = (subject.str.contains(_FORWARD_SUBJECT, regex=True).fillna(False).to_numpy()
                | data.message_column("has_attachments", msg).astype(bool))
    roster_parent = parts["evidence"].str.startswith("parent roster")
    to_webmail = (recipient & parts["role"].isin(["personal", "parent"]) & ~roster_parent
                  & (parts["person_role"] != "pupil"))
    sent_out = staff_sent & business & to_webmail & ~own

    from_staff_personal = (parts["kind"] == "from") & personal & (parts["person_role"] == "staff")
    reached = (recipient & ((parts["role"] == "parent")
                            | (personal & (parts["person_id"] == ""))))
    msgs_from_staff_personal = set(msg[from_staff_personal])
    personal_sender = reached & msg.isin(msgs_from_staff_personal)

    rows = pd.concat([
        _rows(data, parts[own], severity, "sent school mail to their own personal address"),
        _rows(data, parts[sent_out], "medium", "sent a forward or attachment to the personal "
              "address"),
        _personal_sender_rows(data, parts, parts[personal_sender], severity),
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


def _personal_sender_rows(data: RuleInput, parts: pd.DataFrame, hits: pd.DataFrame,
                          severity: str) -> pd.DataFrame:
    if hits.empty:
        return tables.empty("findings")
    senders = parts[(parts["kind"] == "from") & parts["msg"].isin(hits["msg"])]
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

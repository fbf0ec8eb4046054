"""Outside addresses exposed to each other: multi-recipient mail not sent with BCC.

## What it checks
Every message in a staff mailbox's Sent Items whose To and Cc together show at least
`min_external_recipients` (default 2) distinct addresses outside the school's domains. High
when two or more of them are parents or personal addresses, or when there are at least
`high_recipient_count` (default 10); otherwise the rule's severity (medium). One finding per
message. Not findings: internal-only mail, outside addresses only in Bcc, and mail sent by or
to an allow-listed mailbox or distribution list (`[allow]`).

## Why (AUP-BCC)
"any emails addressed to multiple recipients use the BCC function so that, for example,
parents' email addresses are hidden". The ICO lists BCC failures among the most common
non-cyber personal data breaches, and education reports the most.

## Example
A teacher sends "Trip to Lincoln - reply slip" to twelve parents in To: one high finding.
The same mail with the parents in Bcc: no finding.

## What it cannot see
Mail sent from other systems (school MIS, newsletters tools) or personal accounts; whether the
recipients already knew each other's addresses; mail older than the collection window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import BccSettings, Policy, RuleSettings, Severity
from m365guard.directory import normalise_addresses
from m365guard.rules.base import RuleInput, base_severity, display, make_findings, shorten

RULE_ID = "multi-recipient-without-bcc"
CLAUSE = "AUP-BCC"
DEFAULT_SEVERITY: Severity = "medium"


def check(data: RuleInput, settings: RuleSettings, policy: Policy) -> pd.DataFrame:
    """One finding per sent message that shows outside recipients to each other."""
    limits = settings if isinstance(settings, BccSettings) else BccSettings()
    parts = data.participants
    sent = parts[(parts["folder"] == "sentitems") & (parts["mailbox_role"] == "staff")]
    allowed = sorted(set(policy.allow.mailboxes) | set(policy.allow.distribution_lists))
    on_allow_list = sent["address"].isin(allowed) & sent["kind"].isin(["from", "to", "cc"])
    allowed_mailbox = normalise_addresses(data.messages["mailbox"]).isin(allowed).to_numpy()
    excluded = on_allow_list.to_numpy() | allowed_mailbox[sent["msg"].to_numpy()]
    excluded_msgs = np.unique(sent["msg"].to_numpy()[excluded])
    shown = sent[sent["kind"].isin(["to", "cc"]) & ~sent["is_school_account"]
                 & ~sent["msg"].isin(excluded_msgs)].drop_duplicates(["msg", "address"])
    shown = shown.assign(personal=shown["role"].isin(["parent", "personal"]))
    counts = shown.groupby("msg").agg(outside=("address", "size"), personal=("personal", "sum"))
    counts = counts[counts["outside"] >= limits.min_external_recipients]
    if counts.empty:
        return make_findings(RULE_ID, settings.clause or CLAUSE, tables.empty("findings"))
    flagged = shown[shown["msg"].isin(counts.index)]
    counts["addresses"] = flagged.astype({"address": str}).groupby("msg")["address"].agg(
        ";".join)
    msg = pd.Series(counts.index, index=counts.index)
    high = (counts["personal"] >= 2) | (counts["outside"] >= limits.high_recipient_count)
    internet_id = pd.Series(data.message_column("internet_message_id", msg), index=msg.index)
    object_id = internet_id.where(internet_id != "", data.message_column("message_id", msg))
    actor = pd.Series(data.message_column("mailbox", msg), index=msg.index)
    name = display(data, pd.Series(data.message_column("mailbox_id", msg), index=msg.index), actor)
    subject = shorten(pd.Series(data.message_column("subject", msg), index=msg.index))
    rows = pd.DataFrame({
        "severity": np.where(high, "high", base_severity(settings, DEFAULT_SEVERITY)),
        "occurred_at": data.message_column("sent_at", msg),
        "actor": actor, "actor_role": "staff", "counterparts": counts["addresses"],
        "object_type": "message", "object_id": object_id,
        "summary": name + " sent \"" + subject + "\" showing " + counts["outside"].astype(str)
        + " outside addresses (" + counts["personal"].astype(str)
        + " parents or personal) to each other in To/Cc instead of using BCC.",
    }).drop_duplicates("object_id")
    return make_findings(RULE_ID, settings.clause or CLAUSE, rows)

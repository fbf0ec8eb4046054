"""Outside addresses exposed to each other: multi-recipient mail not sent with BCC.

## What it checks
Every message in a school mailbox's Sent Items (staff, shared or governor; not a pupil's) whose
To and Cc together show at least `min_external_recipients` (default 2) distinct addresses
outside the school's domains to each other. High when two or more of them are parents or
personal addresses, or when there are at least `high_recipient_count` (default 10); otherwise
the rule's severity (medium). One finding per message (its internetMessageId).

Not findings: internal-only mail; outside addresses only in Bcc; a multi-agency thread, where
every outside address in To/Cc is at a partner organisation (`addresses.partner_domains`: the
social worker and the school nurse on one thread know each other's work addresses by design).
Parents, personal or other outside addresses mixed with partners still count, partners
included in the count.

`[allow]`: never hides an exposure. Parents' addresses in To/Cc are exposed whoever sends them,
so mail from an allow-listed shared mailbox (`allow.mailboxes`, the office) is checked like
anyone's. A distribution list's own address (`allow.distribution_lists`) is not counted as an
exposed recipient, because a list does not show its members to each other; addresses listed
beside it in To/Cc still count.

## Why (AUP-BCC)
"any emails addressed to multiple recipients use the BCC function so that, for example,
parents' email addresses are hidden". The ICO lists BCC failures among the most common
non-cyber personal data breaches, and education reports the most.

## Example
A teacher sends "Trip to Lincoln - reply slip" to twelve parents in To: one high finding.
The same mail with the parents in Bcc: no finding. The safeguarding lead writes to the social
worker and the school nurse together (both at partner domains): no finding. The office mailbox
sends a reminder to three parents in To: one high finding, allow-listed or not.

## What it cannot see
Mail sent from other systems (school MIS, newsletters tools) or personal accounts; whether the
recipients already knew each other's addresses; an outside address that is really a mailing
list, unless it is in `allow.distribution_lists`; mail older than the collection window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import BccSettings, Policy, RuleSettings, Severity
from m365guard.rules.base import RuleInput, base_severity, display, make_findings, shorten

RULE_ID = "multi-recipient-without-bcc"
CLAUSE = "AUP-BCC"
DEFAULT_SEVERITY: Severity = "medium"

# The sending mailbox's directory role as a finding's actor_role (shared mailboxes are
# unknown_internal there).
_ACTOR_ROLES = {"staff": "staff", "governor": "governor", "unknown_internal": "shared mailbox"}


def check(data: RuleInput, settings: RuleSettings, policy: Policy) -> pd.DataFrame:
    """One finding per sent message that shows outside recipients to each other."""
    limits = settings if isinstance(settings, BccSettings) else BccSettings()
    parts = data.participants
    sent = parts[(parts["folder"] == "sentitems") & (parts["mailbox_role"] != "pupil")]
    lists = sorted(set(policy.allow.distribution_lists))
    shown = sent[sent["kind"].isin(["to", "cc"]) & ~sent["is_school_account"]
                 & ~sent["address"].isin(lists)].drop_duplicates(["msg", "address"])
    shown = shown.assign(personal=shown["role"].isin(["parent", "personal"]),
                         partner=shown["role"] == "partner")
    counts = shown.groupby("msg").agg(outside=("address", "size"), personal=("personal", "sum"),
                                      partner=("partner", "sum"))
    counts = counts[(counts["outside"] >= limits.min_external_recipients)
                    & (counts["partner"] < counts["outside"])]  # all partners: multi-agency
    if counts.empty:
        return make_findings(RULE_ID, settings.clause or CLAUSE, tables.empty("findings"))
    flagged = shown[shown["msg"].isin(counts.index)]
    counts["addresses"] = flagged.astype({"address": str}).groupby("msg")["address"].agg(
        ";".join)
    msg = pd.Series(counts.index, index=counts.index)
    high = (counts["personal"] >= 2) | (counts["outside"] >= limits.high_recipient_count)
    internet_id = pd.Series(data.message_column("internet_message_id", msg), index=msg.index)
    object_id = tables.message_object_ids(internet_id, data.message_column("message_id", msg))
    actor = pd.Series(data.message_column("mailbox", msg), index=msg.index)
    name = display(data, pd.Series(data.message_column("mailbox_id", msg), index=msg.index), actor)
    role = pd.Series(data.message_column("mailbox_role", msg), index=msg.index).astype(str)
    subject = shorten(pd.Series(data.message_column("subject", msg), index=msg.index))
    rows = pd.DataFrame({
        "severity": np.where(high, "high", base_severity(settings, DEFAULT_SEVERITY)),
        "occurred_at": data.message_column("sent_at", msg),
        "actor": actor, "actor_role": role.map(_ACTOR_ROLES).fillna("school mailbox"),
        "counterparts": counts["addresses"], "object_type": "message", "object_id": object_id,
        "summary": name + " sent \"" + subject + "\" showing " + counts["outside"].astype(str)
        + " outside addresses (" + counts["personal"].astype(str)
        + " parents or personal) to each other in To/Cc instead of using BCC.",
    }).drop_duplicates("object_id")
    return make_findings(RULE_ID, settings.clause or CLAUSE, rows)

"""School mail forwarded automatically outside the school.

## What it checks
Inbox rules that forward, redirect or forward as attachment to an address outside the school:
to a personal address (webmail, or a roster's personal address) -> the rule's severity (high);
to another outside organisation -> medium; to a partner domain (`addresses.partner_domains`)
-> no finding. A disabled rule that would forward outside (not to a partner) is an info note.
One finding per inbox rule. Mailbox-level forwarding (the latest ForwardingSmtpAddress /
ForwardingAddress per mailbox, from the audit log or the Exchange export) is judged the same
way; forwarding that was cleared is no finding.

`[allow]`: no effect. A shared mailbox (`allow.mailboxes`) that forwards outside the school
sends its mail out like anyone's, so it is judged the same way (actor role "shared mailbox").

## Why (AUP-INTENDED-RECIPIENTS)
"they are only sent to intended recipients" and "Records should only be shared with those who
have a legitimate professional need to see them." Automatic forwarding sends every future
message, including safeguarding mail, to an account the school does not control.

## Example
A teacher's inbox rule "Copy to home" forwards everything to janesmith@btinternet.com: one
high finding on `<teacher upn>/<rule id>`.

## What it cannot see
Forwarding set up in a mail client, transport rules, and mailbox forwarding when neither the
audit log nor an Exchange export is available; where a ForwardingAddress contact points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import Policy, RuleSettings, Severity
from m365guard.directory import (
    domain_of,
    is_partner_domain,
    normalise_addresses,
    personal_domains,
)
from m365guard.forwarding import latest_forwarding
from m365guard.rules.base import RuleInput, base_severity, make_findings, strongest

RULE_ID = "external-forwarding-personal"
CLAUSE = "AUP-INTENDED-RECIPIENTS"
DEFAULT_SEVERITY: Severity = "high"

_ACTION_WORDS = {"forwardTo": "forwards", "redirectTo": "redirects",
                 "forwardAsAttachmentTo": "forwards as attachments"}


def check(data: RuleInput, settings: RuleSettings, policy: Policy) -> pd.DataFrame:
    """Findings for inbox rules and mailbox forwarding that leave the school."""
    severity = base_severity(settings, DEFAULT_SEVERITY)
    rows = pd.concat([_inbox_rules(data, policy, severity),
                      _mailbox_forwarding(data, policy, severity)], ignore_index=True)
    return make_findings(RULE_ID, settings.clause or CLAUSE, rows)


def target_kind(data: RuleInput, policy: Policy, addresses: pd.Series) -> pd.Series:
    """school | partner | personal | external for raw forwarding targets."""
    normalised = normalise_addresses(addresses)
    domains = domain_of(normalised)
    roles = normalised.map(data.directory.set_index("address")["role"]).fillna("")
    kind = np.select(
        [domains.isin(policy.school.all_domains).to_numpy(),
         is_partner_domain(domains, policy.addresses.partner_domains).to_numpy(),
         (domains.isin(personal_domains(policy)) | roles.isin(["personal", "parent"])).to_numpy()],
        ["school", "partner", "personal"], default="external")
    return pd.Series(kind, index=addresses.index)


def _actor_roles(data: RuleInput, mailboxes: pd.Series) -> pd.Series:
    """staff, or shared mailbox for an allow-listed one (its directory role unknown_internal)."""
    roles = normalise_addresses(mailboxes).map(data.users.drop_duplicates("upn")
                                               .set_index("upn")["role"])
    shared = (roles == "unknown_internal").fillna(False).to_numpy(bool)
    return pd.Series(np.where(shared, "shared mailbox", "staff"), index=mailboxes.index)


def _inbox_rules(data: RuleInput, policy: Policy, severity: str) -> pd.DataFrame:
    forwards = data.collected["rule_forwards"]
    if forwards.empty:
        return tables.empty("findings")
    kind = target_kind(data, policy, forwards["address"])
    leaves = kind.isin(["personal", "external"]).to_numpy()
    if not leaves.any():
        return tables.empty("findings")
    outside = forwards[leaves].assign(kind=kind[leaves])
    enabled = outside["is_enabled"].fillna(True).to_numpy(bool)
    personal = (outside["kind"] == "personal").to_numpy()
    level = np.where(~enabled, "info", np.where(personal, severity, "medium"))
    state = np.where(enabled, "", " (the rule is turned off)")
    described = np.where(personal, "a personal address", "outside the school")
    rows = pd.DataFrame({
        "severity": level, "occurred_at": pd.NaT, "actor": outside["mailbox"],
        "actor_role": _actor_roles(data, outside["mailbox"]),
        "counterparts": outside["address"].str.lower(),
        "object_type": "inbox_rule",
        "object_id": tables.mailbox_object_ids(outside["mailbox"], outside["rule_id"]),
        "summary": "Inbox rule \"" + outside["rule_name"] + "\" in " + outside["mailbox"] + " "
        + outside["action"].map(_ACTION_WORDS).fillna("forwards") + " mail to "
        + outside["address"] + ", " + described + state + ".",
    })
    return strongest(rows)


def _mailbox_forwarding(data: RuleInput, policy: Policy, severity: str) -> pd.DataFrame:
    history = data.collected["mailbox_forwarding"]
    if history.empty:
        return tables.empty("findings")
    latest = latest_forwarding(history)  # cleared forwarding: no row
    kind = target_kind(data, policy, latest["target"])
    leaves = kind.isin(["personal", "external"]).to_numpy()
    if not leaves.any():
        return tables.empty("findings")
    latest = latest[leaves].assign(kind=kind[leaves])
    personal = (latest["kind"] == "personal").to_numpy()
    also_keeps = np.where(latest["deliver_and_forward"].fillna(False).to_numpy(bool),
                          " (and keeps a copy)", "")
    return pd.DataFrame({
        "severity": np.where(personal, severity, "medium"),
        "occurred_at": latest["observed_at"], "actor": latest["mailbox"],
        "actor_role": _actor_roles(data, latest["mailbox"]),
        "counterparts": latest["target"], "object_type": "mailbox_forwarding",
        "object_id": tables.mailbox_object_ids(latest["mailbox"], latest["target"]),
        "summary": "The mailbox " + latest["mailbox"] + " forwards all mail to "
        + latest["target"] + also_keeps + np.where(personal, ", a personal address.",
                                                   ", outside the school."),
    })

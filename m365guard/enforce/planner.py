"""Build a plan from open findings and each object's state read fresh through Graph.

Inbox rules that forward outside the school are disabled, never deleted or rewritten: only
`isEnabled` changes, so undo restores them exactly. A rule Graph shows as read-only cannot be
changed through Graph; it is reported as not fixable there, with the PowerShell an Exchange
admin could use and the warning about client-side rules. Mailbox forwarding and the tenant's
forwarding posture have no Graph API: the plan gives the exact Exchange Online PowerShell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import pandas as pd

from m365guard.enforce.plan import CLIENT_RULES_WARNING, Action, Plan, new_plan_id, ps_quote
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.rule_write import RuleAnswer
from m365guard.records import iso

RuleReader = Callable[[str, str], RuleAnswer]  # (mailbox upn, rule id) -> the rule now
DISABLE = {"isEnabled": False}
# Tenant-wide forwarding posture findings (from the Exchange export) and their fix.
POSTURE_COMMANDS: dict[str, str] = {
    "outbound_spam_policy": "Set-HostedOutboundSpamFilterPolicy -Identity {name}"
                            " -AutoForwardingMode Off",
    "remote_domain": "Set-RemoteDomain -Identity {name} -AutoForwardEnabled $false",
    "transport_rule": "Disable-TransportRule -Identity {name} -Confirm:$false",
}


def select_findings(findings: pd.DataFrame, ids: Iterable[str] = (),
                    rule: str | None = None) -> pd.DataFrame:
    """Open findings by id, or of one rule, or all; an unknown id is one clear line."""
    wanted = list(dict.fromkeys(ids))
    if wanted:
        missing = [fid for fid in wanted if fid not in set(findings["finding_id"])]
        if missing:
            raise GuardError(f"no open finding {missing[0]!r}; `m365guard findings list` shows"
                             " the ids", ExitCode.USAGE)
        findings = findings[findings["finding_id"].isin(wanted)]
    if rule is not None:
        findings = findings[findings["rule_id"] == rule]
    return findings.reset_index(drop=True)


def build_plan(findings: pd.DataFrame, read_rule: RuleReader, *, author: str, tenant_id: str,
               now: datetime) -> Plan:
    """One action per open finding that enforcement can do something about."""
    if not author.strip():
        raise GuardError("enforce plan needs --by NAME: who made the plan", ExitCode.USAGE)
    plan = Plan(new_plan_id(author, now), iso(now), author.strip(), tenant_id, [])
    for record in findings.to_dict("records"):
        finding = {str(key): str(value) for key, value in record.items()}
        kind = finding["object_type"]
        action_id = f"{plan.plan_id}-{len(plan.actions) + 1}"
        if kind == "inbox_rule":
            action = _inbox_rule(action_id, finding, read_rule)
        elif kind == "mailbox_forwarding":
            action = _mailbox_forwarding(action_id, finding)
        elif kind in POSTURE_COMMANDS:
            action = _posture(action_id, finding)
        else:
            plan.notes.append(f"finding {finding['finding_id']} ({kind}): nothing to enforce;"
                              " it is an event, dealt with by a person (findings ack)")
            continue
        if action is None:
            plan.notes.append(f"finding {finding['finding_id']}: the rule is already disabled;"
                              " nothing to do")
            continue
        plan.actions.append(action)
    return plan


def _base(action_id: str, finding: dict[str, str], kind: str, reason: str) -> Action:
    mailbox = finding["object_id"].partition("/")[0] if "@" in finding["object_id"] \
        else finding["actor"]
    return Action(action_id=action_id, finding_id=finding["finding_id"],
                  rule_id=finding["rule_id"], kind=kind,  # type: ignore[arg-type]
                  mailbox=mailbox.lower(), object_id=finding["object_id"],
                  summary=finding["summary"], reason=reason)


def _inbox_rule(action_id: str, finding: dict[str, str], read_rule: RuleReader
                ) -> Action | None:
    mailbox, _, rule_id = finding["object_id"].partition("/")
    answer = read_rule(mailbox, rule_id)
    if answer.status == 404:
        return _base(action_id, finding, "not_fixable",
                     "the rule no longer exists; tonight's run resolves the finding")
    if not answer.ok or answer.rule is None:
        raise GuardError(f"cannot read inbox rule {finding['object_id']} ({answer.error});"
                         " check the read app's MailboxSettings.Read and try again",
                         ExitCode.PERMISSION_MISSING if answer.status == 403
                         else ExitCode.HOST_UNREACHABLE)
    rule = answer.rule
    if rule.get("isReadOnly"):
        action = _base(action_id, finding, "not_fixable",
                       "Graph shows this rule as read-only: it cannot be changed through Graph."
                       " Ask the member of staff to turn it off in Outlook, or an Exchange"
                       " admin to disable it (see the warning first).")
        action.before = rule
        action.commands = [f"Disable-InboxRule -Mailbox {ps_quote(mailbox)} -Identity "
                           f"{ps_quote(rule_id)} -Confirm:$false"]
        action.warning = CLIENT_RULES_WARNING
        return action
    if not rule.get("isEnabled"):
        return None
    action = _base(action_id, finding, "disable_inbox_rule",
                   "disable the rule through Graph (isEnabled: false); nothing else changes,"
                   " and `enforce undo` turns it back on")
    action.before = rule
    action.change = dict(DISABLE)
    return action


def _mailbox_forwarding(action_id: str, finding: dict[str, str]) -> Action:
    mailbox, _, target = finding["object_id"].partition("/")
    action = _base(action_id, finding, "exchange_powershell",
                   "Graph has no API for mailbox forwarding: an Exchange admin runs this in"
                   " Exchange Online PowerShell; the next night verifies it from the audit log"
                   " or the export")
    action.before = {"mailbox": mailbox, "forwardingTo": target}
    action.commands = [f"Get-EXOMailbox -Identity {ps_quote(mailbox)} -PropertySets Delivery",
                       f"Set-Mailbox -Identity {ps_quote(mailbox)} -ForwardingSmtpAddress $null"
                       " -ForwardingAddress $null -DeliverToMailboxAndForward $false"]
    action.warning = CLIENT_RULES_WARNING
    return action


def _posture(action_id: str, finding: dict[str, str]) -> Action:
    kind = finding["object_type"]
    name = finding["object_id"].partition("/")[2] or finding["object_id"]
    action = _base(action_id, finding, "exchange_powershell",
                   "Graph cannot change the tenant's forwarding posture: an Exchange admin runs"
                   " this in Exchange Online PowerShell; the next export verifies it")
    action.mailbox = ""
    action.before = {"object": finding["object_id"]}
    action.commands = [POSTURE_COMMANDS[kind].format(name=ps_quote(name))]
    action.warning = CLIENT_RULES_WARNING
    return action

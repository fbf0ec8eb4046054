"""The rule registry: one module per rule, listed here explicitly (nothing is discovered).

Public API:
    RULES: tuple of rule modules (each has RULE_ID, CLAUSE, DEFAULT_SEVERITY, a rule-doc docstring
           and check(data, settings, policy))
    run_rules(collected: tables.Collected, policy: Policy, mail: MailShards | None = None)
        -> DataFrame  (findings schema)
    RuleInput (from rules.base): what every check receives

The directory is built once per run and shared by every enabled rule. With `mail` (the
night's mail on disk, m365guard/shards.py) the rules run once per shard with that shard's
messages and once over the tables that are not mail, all with one directory built from each
shard's distinct addresses: one shard in memory at a time, and the same findings as over the
whole night at once, since every copy of a message is in one shard (the order of the rows
aside).
"""

from __future__ import annotations

from types import ModuleType

import pandas as pd

from m365guard import tables
from m365guard.config import Policy
from m365guard.rules import external_forwarding, multi_recipient_bcc, personal_email, pupil_contact
from m365guard.rules.base import RuleInput
from m365guard.rules.streamed import run_streamed
from m365guard.shards import MailShards

RULES: tuple[ModuleType, ...] = (
    pupil_contact,
    multi_recipient_bcc,
    external_forwarding,
    personal_email,
)

__all__ = ["RULES", "RuleInput", "rule_title", "rule_titles", "run_rules"]


def rule_title(rule: ModuleType) -> str:
    """The first line of a rule's docstring: its plain-English title."""
    return (rule.__doc__ or rule.RULE_ID).strip().splitlines()[0].rstrip(".")


def rule_titles() -> dict[str, str]:
    """Rule id -> title, for reports written for the headteacher."""
    return {rule.RULE_ID: rule_title(rule) for rule in RULES}


def run_rules(collected: tables.Collected, policy: Policy,
              mail: MailShards | None = None) -> pd.DataFrame:
    """Findings of every enabled rule over one collection, in registry order (rule by rule;
    with `mail`, over its shards one at a time)."""
    enabled = [rule for rule in RULES if policy.rules.for_rule(rule.RULE_ID).enabled]
    if mail is not None:
        found = run_streamed(enabled, collected, mail, policy)
    else:
        data = RuleInput.build(collected, policy)
        found = [rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)
                 for rule in enabled]
    found = [frame for frame in found if not frame.empty]
    if not found:
        return tables.empty("findings")
    return tables.conform("findings", pd.concat(found, ignore_index=True))

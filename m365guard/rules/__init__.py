"""The rule registry: one module per rule, listed here explicitly (nothing is discovered).

Public API:
    RULES: tuple of rule modules (each has RULE_ID, CLAUSE, DEFAULT_SEVERITY, a rule-doc docstring
           and check(data, settings, policy))
    run_rules(collected: tables.Collected, policy: Policy) -> DataFrame  (findings schema)
    RuleInput (from rules.base): what every check receives

The directory is built once per run and shared by every enabled rule.
"""

from __future__ import annotations

from types import ModuleType

import pandas as pd

from m365guard import tables
from m365guard.config import Policy
from m365guard.rules import external_forwarding, multi_recipient_bcc, personal_email, pupil_contact
from m365guard.rules.base import RuleInput

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


def run_rules(collected: tables.Collected, policy: Policy) -> pd.DataFrame:
    """Findings of every enabled rule over one collection, in registry order."""
    data = RuleInput.build(collected, policy)
    found = [rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy)
             for rule in RULES if policy.rules.for_rule(rule.RULE_ID).enabled]
    found = [frame for frame in found if not frame.empty]
    if not found:
        return tables.empty("findings")
    return tables.conform("findings", pd.concat(found, ignore_index=True))

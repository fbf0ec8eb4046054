"""What every rule receives (RuleInput) and how it writes findings (make_findings).

RuleInput bundles the collected tables with the directory and the per-message participant
table the mail rules share, so the expensive joins happen once per run, not once per rule.
Participants carry row positions into `messages` rather than copies of message columns: rules
filter participants first and fetch message columns only for the few rows left.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import Policy, RuleSettings, Severity
from m365guard.directory import build_directory, classify_users, lookup, normalise_address

_DIRECTORY_COLUMNS = ("role", "person_id", "person_role", "evidence")


@dataclass
class RuleInput:
    """The collected tables, the directory and the users' roles: all a rule may read."""

    collected: tables.Collected
    directory: pd.DataFrame
    users: pd.DataFrame

    @classmethod
    def build(cls, collected: tables.Collected, policy: Policy) -> RuleInput:
        """Classify users and addresses once for all rules."""
        return cls(collected, build_directory(collected, policy), classify_users(collected, policy))

    @cached_property
    def user_by_id(self) -> pd.DataFrame:
        """users indexed by user_id (upn, display_name, role)."""
        return self.users.drop_duplicates("user_id").set_index("user_id")

    @cached_property
    def messages(self) -> pd.DataFrame:
        """messages (one row per Graph message id: a page read twice adds nothing) plus the
        mailbox owner's role (categorical)."""
        messages = self.collected["messages"]
        if messages["message_id"].duplicated().any():
            messages = messages.drop_duplicates("message_id").reset_index(drop=True)
        roles = lookup(messages["mailbox_id"], self.user_by_id["role"])
        return messages.assign(mailbox_role=roles.astype("category"))

    @cached_property
    def participants(self) -> pd.DataFrame:
        """One row per sender and recipient of every message: msg (row in messages), kind
        (from/to/cc/bcc), folder and mailbox_role of the message, address (normalised) and the
        directory's verdict on it. Text columns are categoricals built from integer codes, so
        millions of rows cost no string work."""
        messages = self.messages
        recipients = self.collected["recipients"]
        msg_of_recipient = pd.Index(messages["message_id"]).get_indexer(recipients["message_id"])
        kept = msg_of_recipient >= 0
        msg = np.concatenate([np.arange(len(messages)), msg_of_recipient[kept]])
        entry = np.concatenate([self._entries(messages["from_address"]),
                                self._entries(recipients.loc[kept, "address"])])
        kind_codes, kinds = pd.factorize(recipients.loc[kept, "kind"])
        kind = pd.Categorical.from_codes(
            np.concatenate([np.zeros(len(messages), dtype=np.int64), kind_codes + 1]),
            categories=pd.Index(["from", *map(str, kinds)]))
        known = entry >= 0
        msg, entry, kind = msg[known], entry[known], kind[known]
        parts = pd.DataFrame({"msg": msg, "kind": kind})
        for column in ("folder", "mailbox_role"):
            codes, values = pd.factorize(messages[column])
            parts[column] = pd.Categorical.from_codes(
                codes[msg], categories=pd.Index([str(value) for value in values]))
        for column in ("address", *_DIRECTORY_COLUMNS):
            codes, values = pd.factorize(self.directory[column])
            parts[column] = pd.Categorical.from_codes(codes[entry], categories=pd.Index(values))
        parts["is_school_account"] = self.directory["is_school_account"].to_numpy(bool)[entry]
        return parts

    def _entries(self, addresses: pd.Series) -> np.ndarray:
        """Row positions in the directory of raw addresses (-1 when absent), per distinct value."""
        codes, uniques = pd.factorize(addresses)
        normalised = [normalise_address(str(value)) for value in uniques]
        positions = pd.Index(self.directory["address"]).get_indexer(normalised)
        entries: np.ndarray = np.where(codes >= 0, positions[codes] if len(positions) else -1, -1)
        return entries

    def message_column(self, name: str, msg: pd.Series) -> np.ndarray:
        """Column `name` of messages at row positions msg (only those rows are converted)."""
        values: np.ndarray = self.messages[name].take(msg.to_numpy()).to_numpy()
        return values


def as_text(rows: pd.DataFrame) -> pd.DataFrame:
    """Participant rows with their categorical columns as plain text, for building findings."""
    text = {column: str for column in rows.columns
            if isinstance(rows[column].dtype, pd.CategoricalDtype)}
    return rows.astype(text)


def base_severity(settings: RuleSettings, default: Severity) -> str:
    """The severity of a rule's main case: the policy's override or the rule's default."""
    return settings.severity or default


def shorten(text: pd.Series, limit: int = 60) -> pd.Series:
    """Subjects quoted in summaries, cut at `limit` characters."""
    text = text.fillna("").astype(str)
    cut = text.str.len() > limit
    return text.where(~cut, text.str.slice(0, limit - 1).str.rstrip() + "…")


def finding_ids(rule_id: str, object_ids: pd.Series) -> list[str]:
    """Stable ids: the first 16 hex characters of sha256(rule_id + NUL + object id)."""
    return [hashlib.sha256(f"{rule_id}\0{oid}".encode()).hexdigest()[:16] for oid in object_ids]


def make_findings(rule_id: str, clause: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Findings from rows holding every findings column but finding_id and policy_clause."""
    if rows.empty:
        return tables.empty("findings")
    out = rows.reset_index(drop=True).assign(rule_id=rule_id, policy_clause=clause)
    out["finding_id"] = finding_ids(rule_id, out["object_id"])
    return tables.conform("findings", out)


def strongest(findings: pd.DataFrame) -> pd.DataFrame:
    """One row per object_id: the most severe (first on ties)."""
    if findings.empty:
        return findings
    rank = findings["severity"].map(tables.SEVERITY_RANK)
    order = np.argsort(-rank.to_numpy(), kind="stable")
    return findings.iloc[order].drop_duplicates("object_id").sort_index()


def display(data: RuleInput, user_ids: pd.Series, fallback: pd.Series) -> pd.Series:
    """A person's display name from the tenant, else the fallback text."""
    names = user_ids.map(data.user_by_id["display_name"])
    return names.where(names.notna() & (names != ""), fallback).astype(str)

"""The rules over a night's mail on disk (m365guard/shards.py), one shard at a time.

The directory needs every address the night saw, but not every message: each shard gives
its distinct (address, name) pairs, senders and recipients apart, marked by whether the mail
is held in a staff mailbox, in the order they first appear, and the directory is built from
those (the same addresses and names in the same order, the same staff contacts, so the same
verdicts). Each rule then runs once over the
tables that are not mail (chats, inbox rules, mailbox forwarding) and once per shard with only
that shard's messages. A rule keeps one finding per object, and every copy of a message lives
in one shard (shards.shard_of), so no object's findings are split between runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import pandas as pd

from m365guard import tables
from m365guard.config import Policy
from m365guard.directory import build_directory, classify_users, normalise_addresses
from m365guard.rules.base import RuleInput
from m365guard.shards import MailShards

# what a rule reads beside mail; a shard's run sees only the directory tables and its mail
_NOT_MAIL = ("rule_forwards", "chats", "chat_members", "mailbox_forwarding")
_DIRECTORY_TABLES = ("users", "skus", "group_members", "edu_roles", "coverage")
_STAFF, _OTHER = "held in a staff mailbox", "held elsewhere"  # summary message ids


def run_streamed(rules: Sequence[ModuleType], collected: tables.Collected, mail: MailShards,
                 policy: Policy) -> list[pd.DataFrame]:
    """Each rule's findings: over the tables that are not mail, then shard by shard."""
    users = classify_users(collected, policy)
    directory = build_directory(_address_summary(collected, mail, users), policy)
    base = {name: collected[name] for name in _DIRECTORY_TABLES}
    found: dict[str, list[pd.DataFrame]] = {rule.RULE_ID: [] for rule in rules}

    def check(data: RuleInput) -> None:
        for rule in rules:
            found[rule.RULE_ID].append(
                rule.check(data, policy.rules.for_rule(rule.RULE_ID), policy))

    check(RuleInput(tables.Collected(**base, **{name: collected[name] for name in _NOT_MAIL}),
                    directory, users))
    for messages, recipients in mail:
        check(RuleInput(tables.Collected(**base, messages=messages, recipients=recipients),
                        directory, users))
    return [pd.concat(kept, ignore_index=True) if kept else tables.empty("findings")
            for kept in ([frame for frame in frames if not frame.empty]
                         for frames in found.values())]


def _address_summary(collected: tables.Collected, mail: MailShards,
                     users: pd.DataFrame) -> tables.Collected:
    """The collection with its mail replaced by one row per distinct (held in a staff
    mailbox, address, name) of senders and of recipients, in first-seen order: all
    build_directory reads of mail (the pairs seen, the first name of each address, and which
    addresses appear on mail held in a staff mailbox), at most two rows per pair however many
    messages show it. A summary message's mailbox is a staff mailbox or none, and its id (and
    its recipients' message_id) says which."""
    staff_upns = set(users.loc[users["role"] == "staff", "upn"])
    staff_mailbox = next(iter(sorted(staff_upns)), "")
    senders, recipients = [], []
    for messages, listed in mail:
        held = np.where(normalise_addresses(messages["mailbox"]).isin(staff_upns).to_numpy(),
                        _STAFF, _OTHER)
        senders.append(messages[["from_address", "from_name"]].assign(message_id=held)
                       .drop_duplicates())
        by_id = pd.Series(held, index=pd.Index(messages["message_id"]))
        by_id = by_id[~by_id.index.duplicated()]
        recipients.append(listed[["address", "name"]].assign(
            message_id=listed["message_id"].map(by_id).fillna(_OTHER)).drop_duplicates())
    columns = ["from_address", "from_name", "message_id"]
    sent = (pd.concat(senders, ignore_index=True).drop_duplicates(ignore_index=True)
            if senders else pd.DataFrame({column: [] for column in columns}))
    seen = (pd.concat(recipients, ignore_index=True).drop_duplicates(ignore_index=True)
            if recipients else pd.DataFrame({"address": [], "name": [], "message_id": []}))
    summary = {name: collected[name] for name in tables.COLLECTED
               if name not in ("messages", "recipients")}
    return tables.Collected(
        **summary,
        messages=sent.assign(mailbox_id="", mailbox=np.where(sent["message_id"] == _STAFF,
                                                             staff_mailbox, ""),
                             folder="", internet_message_id="", subject="", sent_at=None,
                             has_attachments=False),
        recipients=seen.assign(kind="to").astype({"address": tables.STR, "name": tables.STR,
                                                  "message_id": tables.STR}))

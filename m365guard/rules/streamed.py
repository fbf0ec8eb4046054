"""The rules over a night's mail on disk (m365guard/shards.py), one shard at a time.

The directory needs every address the night saw, but not every message: each shard gives
its distinct (mailbox, address, name) triples, senders and recipients apart, in the order
they first appear, and the directory is built from those (the same addresses and names in the
same order, the same staff contacts, so the same verdicts). Each rule then runs once over the
tables that are not mail (chats, inbox rules, mailbox forwarding) and once per shard with only
that shard's messages. A rule keeps one finding per object, and every copy of a message lives
in one shard (shards.shard_of), so no object's findings are split between runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import pandas as pd

from m365guard import tables
from m365guard.config import Policy
from m365guard.directory import build_directory, classify_users
from m365guard.rules.base import RuleInput
from m365guard.shards import MailShards

# what a rule reads beside mail; a shard's run sees only the directory tables and its mail
_NOT_MAIL = ("rule_forwards", "chats", "chat_members", "mailbox_forwarding")
_DIRECTORY_TABLES = ("users", "skus", "group_members", "edu_roles", "coverage")


def run_streamed(rules: Sequence[ModuleType], collected: tables.Collected, mail: MailShards,
                 policy: Policy) -> list[pd.DataFrame]:
    """Each rule's findings: over the tables that are not mail, then shard by shard."""
    users = classify_users(collected, policy)
    directory = build_directory(_address_summary(collected, mail), policy)
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


def _address_summary(collected: tables.Collected, mail: MailShards) -> tables.Collected:
    """The collection with its mail replaced by one row per distinct (mailbox, address, name)
    of senders and of recipients, in first-seen order: all build_directory reads of mail.
    A summary message's id is its mailbox, and so is its recipients' message_id, which keeps
    `which addresses appear on mail held in a staff mailbox` as it was."""
    senders, recipients = [], []
    for messages, listed in mail:
        senders.append(messages[["mailbox", "from_address", "from_name"]].drop_duplicates())
        mailbox = listed["message_id"].map(
            messages.drop_duplicates("message_id").set_index("message_id")["mailbox"])
        recipients.append(listed[["address", "name"]].assign(mailbox=mailbox)
                          .drop_duplicates())
    sent = (pd.concat(senders, ignore_index=True).drop_duplicates(ignore_index=True)
            if senders else tables.empty("messages")[["mailbox", "from_address", "from_name"]])
    seen = (pd.concat(recipients, ignore_index=True).drop_duplicates(ignore_index=True)
            if recipients else pd.DataFrame({"address": [], "name": [], "mailbox": []}))
    summary = {name: collected[name] for name in tables.COLLECTED
               if name not in ("messages", "recipients")}
    return tables.Collected(
        **summary,
        messages=sent.assign(mailbox_id="", folder="", message_id=sent["mailbox"],
                             internet_message_id="", subject="", sent_at=None,
                             has_attachments=False),
        recipients=seen.assign(message_id=seen["mailbox"], kind="to")
        .astype({"address": tables.STR, "name": tables.STR}))

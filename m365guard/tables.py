"""The tables that flow between the stages: Graph -> tables -> directory/rules -> state -> reports.

This module is the contract between `graph/` (which fills the collected tables), the emulator's
ground truth (which is written in the same shapes), `directory.py` and `rules/` (which read
them) and `state.py`/`reports/` (which read findings). Columns are Arrow-backed pandas dtypes.
Addresses are stored as Graph returns them; `directory.normalise_address` lower-cases and
normalises them where the rules compare.

`make_table(name, rows)` builds a conforming table from dicts (tests use it with small hand-built
rows); `conform(name, df)` checks and casts a table produced elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

import pandas as pd

STR = "string[pyarrow]"
BOOL = "bool[pyarrow]"
INT = "int64[pyarrow]"
TS = "timestamp[us, tz=UTC][pyarrow]"

SCHEMAS: dict[str, dict[str, str]] = {
    # /users?$select=id,userPrincipalName,mail,displayName,accountEnabled,assignedLicenses
    # sku_ids: the assignedLicenses skuIds joined with ";" (resolved to part numbers via skus).
    # has_mailbox: False when the mailbox answered MailboxNotEnabledForRESTAPI.
    "users": {
        "user_id": STR,
        "upn": STR,
        "mail": STR,
        "display_name": STR,
        "account_enabled": BOOL,
        "sku_ids": STR,
    },
    # /subscribedSkus: skuId -> skuPartNumber (e.g. M365EDU_A3_STUUSEBNFT, STANDARDWOFFPACK_FACULTY)
    "skus": {"sku_id": STR, "sku_part_number": STR},
    # /groups/{id}/transitiveMembers for every group the policy names
    "group_members": {"group_id": STR, "group_name": STR, "user_id": STR},
    # /education/users?$select=id,primaryRole
    # (student | teacher | faculty | guest | none | unknownFutureValue)
    "edu_roles": {"user_id": STR, "primary_role": STR},
    # /users/{id}/mailFolders/{sentitems|inbox}/messages (Mail.ReadBasic.All: never a body).
    # One row per message copy; message_id is Graph's id (unique per mailbox copy),
    # internet_message_id is the RFC 5322 Message-ID shared by every copy of one message.
    "messages": {
        "mailbox_id": STR,
        "mailbox": STR,  # the mailbox owner's UPN
        "folder": STR,  # "sentitems" | "inbox" (received mail, in whatever folder it was filed)
        "message_id": STR,
        "internet_message_id": STR,
        "subject": STR,
        "sent_at": TS,
        "from_address": STR,
        "from_name": STR,
        "has_attachments": BOOL,
    },
    # toRecipients / ccRecipients / bccRecipients exploded: one row per recipient.
    "recipients": {
        "message_id": STR,
        "kind": STR,  # "to" | "cc" | "bcc"
        "address": STR,
        "name": STR,
    },
    # /users/{id}/mailFolders/inbox/messageRules: one row per forwarding target of a rule.
    # action: "forwardTo" | "redirectTo" | "forwardAsAttachmentTo".
    "rule_forwards": {
        "mailbox_id": STR,
        "mailbox": STR,
        "rule_id": STR,
        "rule_name": STR,
        "is_enabled": BOOL,
        "action": STR,
        "address": STR,
        "name": STR,
    },
    # /users/{id}/chats?$expand=members: one row per chat.
    "chats": {
        "chat_id": STR,
        "chat_type": STR,  # "oneOnOne" | "group" | "meeting"
        "topic": STR,
        "created_at": TS,
        "last_updated_at": TS,
    },
    # the chat's members; roles joined with ";" ("owner", "guest"). non_entra_type: "" for an
    # Entra user (aadUserConversationMember), else the conversationMember subtype
    # ("microsoftAccountUserConversationMember", "anonymousGuestConversationMember", ...):
    # such a member is never a school account.
    "chat_members": {
        "chat_id": STR,
        "user_id": STR,
        "email": STR,
        "display_name": STR,
        "tenant_id": STR,
        "roles": STR,
        "non_entra_type": STR,
    },
    # Mailbox-level forwarding, from the audit log (Set-Mailbox ForwardingSmtpAddress /
    # ForwardingAddress) or an imported Get-EXOMailbox export. address is "" when forwarding
    # was cleared. source: "audit" | "export". record_id: the audit record id or export row.
    "mailbox_forwarding": {
        "mailbox": STR,
        "address": STR,
        "deliver_and_forward": BOOL,
        "source": STR,
        "observed_at": TS,
        "record_id": STR,
    },
    # What the directory decides about every address it has seen (directory.py builds it).
    # role: pupil | staff | parent | governor | partner | personal | external | unknown_internal
    # person_id: the tenant user id of the person an address belongs to (a personal address
    # matched to a pupil or staff member by name or roster), else "".
    "directory": {
        "address": STR,
        "role": STR,
        "is_school_account": BOOL,
        "person_id": STR,
        "person_role": STR,
        "display_name": STR,
        "evidence": STR,
    },
    # What every rule returns. finding_id is stable: the same violation has the same id in every
    # run (a hash of rule_id and the violating object). counterparts joined with ";".
    "findings": {
        "finding_id": STR,
        "rule_id": STR,
        "severity": STR,  # info | low | medium | high
        "policy_clause": STR,
        "occurred_at": TS,
        "actor": STR,
        "actor_role": STR,
        "counterparts": STR,
        # message | inbox_rule | mailbox_forwarding | chat, and the tenant's forwarding
        # posture from the Exchange export: outbound_spam_policy | remote_domain |
        # transport_rule (object id `<type>/<name>`)
        "object_type": STR,
        "object_id": STR,
        "summary": STR,
    },
}

SEVERITIES = ("info", "low", "medium", "high")
# Higher is more severe; sort by it (an unknown severity maps to NaN).
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

# What a finding is about (findings.object_type) and how its object_id is formed:
# message -> internetMessageId (Graph's id when there is none); inbox rule ->
# `<mailbox upn>/<rule id>`; mailbox forwarding -> `<mailbox upn>/<forwarding address>`;
# chat -> the chat id.
ObjectType = Literal["message", "inbox_rule", "mailbox_forwarding", "chat"]
MESSAGE: ObjectType = "message"
INBOX_RULE: ObjectType = "inbox_rule"
MAILBOX_FORWARDING: ObjectType = "mailbox_forwarding"
CHAT: ObjectType = "chat"


def message_object_ids(internet_ids: pd.Series, graph_ids: Any) -> pd.Series:
    """A message's object id: its internetMessageId, Graph's id where it has none."""
    return internet_ids.where(internet_ids != "", graph_ids)


def mailbox_object_ids(mailboxes: pd.Series, keys: pd.Series) -> pd.Series:
    """`<mailbox upn>/<key>`: the object id of an inbox rule (key: rule id) or of mailbox
    forwarding (key: the forwarding address)."""
    return mailboxes + "/" + keys


def empty(name: str) -> pd.DataFrame:
    """An empty table with the right columns and dtypes."""
    schema = SCHEMAS[name]
    return pd.DataFrame({col: pd.Series([], dtype=dtype) for col, dtype in schema.items()})


def make_table(name: str, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a table from dicts; missing string columns become "", missing booleans False."""
    schema = SCHEMAS[name]
    rows = list(rows)
    if not rows:
        return empty(name)
    unknown = {key for row in rows for key in row} - schema.keys()
    if unknown:
        raise KeyError(f"{name}: unknown columns {sorted(unknown)}")
    data: dict[str, list[Any]] = {}
    for col, dtype in schema.items():
        default: Any = "" if dtype == STR else False if dtype == BOOL else None
        data[col] = [row.get(col, default) for row in rows]
    return conform(name, pd.DataFrame(data))


def conform(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Check that df has exactly the schema's columns (extra columns dropped) and cast dtypes."""
    schema = SCHEMAS[name]
    missing = [col for col in schema if col not in df.columns]
    if missing:
        raise KeyError(f"{name}: missing columns {missing}")
    out = df.loc[:, list(schema)]
    casts = {col: dtype for col, dtype in schema.items() if str(out[col].dtype) != dtype}
    for col, dtype in casts.items():
        if dtype == TS:
            out[col] = pd.to_datetime(out[col], utc=True, format="ISO8601").astype(cast(Any, dtype))
        else:
            out[col] = out[col].astype(cast(Any, dtype))
    return out.reset_index(drop=True)


# Which mailbox folders a run read, and how it went: the proof that "no findings" means clean.
SCHEMAS["coverage"] = {
    "mailbox": STR,
    "folder": STR,  # "sentitems" | "inbox" | "messageRules" | "chats" | "auditLog" | ...
    "status": STR,  # CoverageStatus
    "reason": STR,
    "items": INT,
}

# How reading one source went (coverage.status).
CoverageStatus = Literal["ok", "resynced", "failed", "no_mailbox"]
OK: CoverageStatus = "ok"
RESYNCED: CoverageStatus = "resynced"  # read in full again after the delta link expired
FAILED: CoverageStatus = "failed"
NO_MAILBOX: CoverageStatus = "no_mailbox"  # a user without an Exchange mailbox: nothing to read
# Coverage statuses meaning "this source was read in full": only these may resolve a finding.
READ_IN_FULL: frozenset[str] = frozenset({OK, RESYNCED})
# How a coverage reason starts when the collector did not ask Graph tonight (a user found
# without an Exchange mailbox recently is checked again weekly, not nightly).
NOT_ASKED = "not asked tonight"

COLLECTED = (
    "users",
    "skus",
    "group_members",
    "edu_roles",
    "messages",
    "recipients",
    "rule_forwards",
    "chats",
    "chat_members",
    "mailbox_forwarding",
    "coverage",
)


class Collected:
    """Everything one collection produced, one table per name in COLLECTED."""

    def __init__(self, **tables: pd.DataFrame) -> None:
        unknown = tables.keys() - set(COLLECTED)
        if unknown:
            raise KeyError(f"unknown tables {sorted(unknown)}")
        self.tables = {name: conform(name, tables[name]) if name in tables else empty(name)
                       for name in COLLECTED}

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

"""What a correct collector must produce from a tenant document at a given clock.

`expected_tables(tenant, now=..., since=...)` reads the tenant file format (docs/tenant-format.md)
straight into `tables.Collected`, applying the same visibility rules the emulator serves by:
messages by receivedDateTime (sent items: sentDateTime) and x-deletedAt, rules, chats and members
by their x-visibleFrom/x-visibleUntil windows, audit records by createdDateTime. The collector's
tests compare against it and bench/accuracy.py runs the rules on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import pandas as pd

from m365guard import tables
from m365guard.emulator.resources import WELL_KNOWN_FOLDERS

Json = dict[str, Any]
FORWARD_ACTIONS = ("forwardTo", "redirectTo", "forwardAsAttachmentTo")
FORWARDING_PARAMETERS = ("ForwardingSmtpAddress", "ForwardingAddress")


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _visible(resource: Json, now: datetime) -> bool:
    """Inside the resource's x-visibleFrom/x-visibleUntil window at `now`."""
    start, end = _time(resource.get("x-visibleFrom")), _time(resource.get("x-visibleUntil"))
    return (start is None or start <= now) and (end is None or now < end)


def _address(holder: Json | None) -> tuple[str, str]:
    email = (holder or {}).get("emailAddress") or {}
    return email.get("address") or "", email.get("name") or ""


def _frame(name: str, columns: dict[str, list[Any]]) -> pd.DataFrame:
    """Columns in the schema's order and dtypes (timestamps parsed from Graph's ISO 8601)."""
    schema = tables.SCHEMAS[name]
    data: dict[str, pd.Series[Any]] = {}
    for col, dtype in schema.items():
        if dtype == tables.TS:
            parsed = pd.to_datetime(pd.Series(columns[col], dtype="string"), utc=True,
                                    format="ISO8601")
            data[col] = parsed.astype(cast(Any, dtype))
        else:
            data[col] = pd.Series(columns[col], dtype=cast(Any, dtype))
    return pd.DataFrame(data)


def expected_tables(tenant: Json, *, now: datetime, since: datetime | None = None
                    ) -> tables.Collected:
    """The tables a correct collection of `tenant` at clock `now` yields (messages dated in
    [since, now], all when since is None); coverage is left empty."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    since = since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
    users = tenant.get("users", [])
    upn_of = {u["id"]: u["userPrincipalName"] for u in users}
    with_mailbox = [u["id"] for u in users if u.get("x-hasMailbox", True)]
    messages, recipients = _messages(tenant, with_mailbox, upn_of, now, since)
    chats, members = _chats(tenant.get("chats", []), now)
    return tables.Collected(
        users=_frame("users", {
            "user_id": [u["id"] for u in users],
            "upn": [u["userPrincipalName"] for u in users],
            "mail": [u.get("mail") or "" for u in users],
            "display_name": [u.get("displayName") or "" for u in users],
            "account_enabled": [bool(u.get("accountEnabled", True)) for u in users],
            "sku_ids": [";".join(lic["skuId"] for lic in u.get("assignedLicenses", []))
                        for u in users],
        }),
        skus=_frame("skus", {
            "sku_id": [s["skuId"] for s in tenant.get("subscribedSkus", [])],
            "sku_part_number": [s["skuPartNumber"] for s in tenant.get("subscribedSkus", [])],
        }),
        group_members=_group_members(tenant.get("groups", []), set(upn_of)),
        edu_roles=_frame("edu_roles", {
            "user_id": [e["id"] for e in tenant.get("educationUsers", [])],
            "primary_role": [e.get("primaryRole") or "" for e in tenant.get("educationUsers", [])],
        }),
        messages=messages,
        recipients=recipients,
        rule_forwards=_rule_forwards(tenant.get("mailboxes", {}), with_mailbox, upn_of, now),
        chats=chats,
        chat_members=members,
        mailbox_forwarding=_mailbox_forwarding(tenant.get("auditRecords", []), now),
    )


def _group_members(groups: list[Json], user_ids: set[str]) -> pd.DataFrame:
    """Every group's transitive user members (nested groups expanded, each user once)."""
    members_of = {g["id"]: g.get("x-members", []) for g in groups}
    rows: dict[str, list[str]] = {"group_id": [], "group_name": [], "user_id": []}
    for group in groups:
        seen_groups, seen_users = {group["id"]}, set()
        pending = list(members_of[group["id"]])
        while pending:
            member = pending.pop(0)
            if member in members_of and member not in seen_groups:
                seen_groups.add(member)
                pending.extend(members_of[member])
            elif member in user_ids and member not in seen_users:
                seen_users.add(member)
                rows["group_id"].append(group["id"])
                rows["group_name"].append(group.get("displayName") or "")
                rows["user_id"].append(member)
    return _frame("group_members", rows)


def _messages(tenant: Json, with_mailbox: Iterable[str], upn_of: dict[str, str], now: datetime,
              since: datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Message copies visible at `now` and dated in the window, and their recipients."""
    columns: dict[str, list[Any]] = {col: [] for col in tables.SCHEMAS["messages"]}
    dated: list[str] = []
    deleted: list[str | None] = []
    rec: dict[str, list[str]] = {col: [] for col in tables.SCHEMAS["recipients"]}
    mailboxes = tenant.get("mailboxes", {})
    kinds = (("toRecipients", "to"), ("ccRecipients", "cc"), ("bccRecipients", "bcc"))
    for user_id in with_mailbox:
        for folder, date_field, m in _mail(mailboxes.get(user_id, {}), now):
            address, name = _address(m.get("from"))
            columns["mailbox_id"].append(user_id)
            columns["mailbox"].append(upn_of[user_id])
            columns["folder"].append(folder)
            columns["message_id"].append(m["id"])
            columns["internet_message_id"].append(m.get("internetMessageId") or "")
            columns["subject"].append(m.get("subject") or "")
            columns["sent_at"].append(m.get("sentDateTime"))
            columns["from_address"].append(address)
            columns["from_name"].append(name)
            columns["has_attachments"].append(bool(m.get("hasAttachments")))
            dated.append(m[date_field])
            deleted.append(m.get("x-deletedAt"))
            for key, kind in kinds:
                for recipient in m.get(key) or []:
                    r_address, r_name = _address(recipient)
                    rec["message_id"].append(m["id"])
                    rec["kind"].append(kind)
                    rec["address"].append(r_address)
                    rec["name"].append(r_name)
    messages = _frame("messages", columns)
    when = pd.to_datetime(pd.Series(dated, dtype="string"), utc=True, format="ISO8601")
    gone = pd.to_datetime(pd.Series(deleted, dtype="string"), utc=True, format="ISO8601")
    keep = (when <= now) & ~(gone <= now)
    if since is not None:
        keep &= when >= since
    messages = messages[keep.to_numpy()].reset_index(drop=True)
    recipients = _frame("recipients", rec)
    recipients = recipients[recipients["message_id"].isin(messages["message_id"])]
    return messages, recipients.reset_index(drop=True)


def _mail(box: Json, now: datetime) -> Iterable[tuple[str, str, Json]]:
    """(folder label, the date that dates it, message) for every stored message but drafts:
    Sent Items' by sentDateTime, every other folder's (well-known or made by a user or a rule,
    while it exists at `now`) by receivedDateTime as received mail, labelled "inbox"."""
    for name, _ in WELL_KNOWN_FOLDERS:
        if name == "drafts":
            continue
        sent = name == "sentitems"
        for message in box.get(name, []):
            yield ("sentitems" if sent else "inbox",
                   "sentDateTime" if sent else "receivedDateTime", message)
    for folder in box.get("folders", []):
        if _visible(folder, now):
            for message in folder.get("messages", []):
                yield "inbox", "receivedDateTime", message


def _rule_forwards(mailboxes: Json, with_mailbox: Iterable[str], upn_of: dict[str, str],
                   now: datetime) -> pd.DataFrame:
    """One row per forwarding target of every inbox rule visible at `now`."""
    rows: dict[str, list[Any]] = {col: [] for col in tables.SCHEMAS["rule_forwards"]}
    for user_id in with_mailbox:
        for rule in mailboxes.get(user_id, {}).get("messageRules", []):
            if not _visible(rule, now):
                continue
            for action in FORWARD_ACTIONS:
                for target in (rule.get("actions") or {}).get(action) or []:
                    address, name = _address(target)
                    rows["mailbox_id"].append(user_id)
                    rows["mailbox"].append(upn_of[user_id])
                    rows["rule_id"].append(rule["id"])
                    rows["rule_name"].append(rule.get("displayName") or "")
                    rows["is_enabled"].append(bool(rule.get("isEnabled", True)))
                    rows["action"].append(action)
                    rows["address"].append(address)
                    rows["name"].append(name)
    return _frame("rule_forwards", rows)


def _chats(chats: list[Json], now: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chats visible at `now`, and their members visible at `now`."""
    rows: dict[str, list[Any]] = {col: [] for col in tables.SCHEMAS["chats"]}
    members: dict[str, list[str]] = {col: [] for col in tables.SCHEMAS["chat_members"]}
    for chat in chats:
        if not _visible(chat, now):
            continue
        rows["chat_id"].append(chat["id"])
        rows["chat_type"].append(chat.get("chatType") or "")
        rows["topic"].append(chat.get("topic") or "")
        rows["created_at"].append(chat.get("createdDateTime"))
        rows["last_updated_at"].append(chat.get("lastUpdatedDateTime"))
        for member in chat.get("members", []):
            if _visible(member, now):
                members["chat_id"].append(chat["id"])
                members["user_id"].append(member.get("userId") or "")
                members["email"].append(member.get("email") or "")
                members["display_name"].append(member.get("displayName") or "")
                members["tenant_id"].append(member.get("tenantId") or "")
                members["roles"].append(";".join(member.get("roles") or []))
                kind = str(member.get("@odata.type") or "").removeprefix("#microsoft.graph.")
                members["non_entra_type"].append(
                    "" if kind in ("", "aadUserConversationMember") else kind)
    return _frame("chats", rows), _frame("chat_members", members)


def forwarding_address(value: str) -> str:
    """An address from a Set-Mailbox forwarding parameter: "smtp:x@y" -> "x@y"."""
    return value[5:] if value[:5].lower() == "smtp:" else value


def _mailbox_forwarding(records: list[Json], now: datetime) -> pd.DataFrame:
    """Every Set-Mailbox that set or cleared forwarding, up to `now`, oldest first."""
    rows: dict[str, list[Any]] = {col: [] for col in tables.SCHEMAS["mailbox_forwarding"]}
    for record in sorted(records, key=lambda r: (r["createdDateTime"], r["id"])):
        created = _time(record["createdDateTime"])
        if record.get("operation") != "Set-Mailbox" or created is None or created > now \
                or not _visible(record, now):
            continue
        params = {p["Name"]: p.get("Value") or "" for p in
                  (record.get("auditData") or {}).get("Parameters", [])}
        if not any(name in params for name in FORWARDING_PARAMETERS):
            continue
        value = params.get("ForwardingSmtpAddress") or params.get("ForwardingAddress") or ""
        rows["mailbox"].append(params.get("Identity") or record.get("objectId") or "")
        rows["address"].append(forwarding_address(value))
        rows["deliver_and_forward"].append(
            params.get("DeliverToMailboxAndForward", "False").lower() == "true")
        rows["source"].append("audit")
        rows["observed_at"].append(record["createdDateTime"])
        rows["record_id"].append(record["id"])
    return _frame("mailbox_forwarding", rows)

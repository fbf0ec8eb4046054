"""Per-kind page decoders: inbox rules and chats into rows, mail batches into tables.

Rules and chats pages are small and decoded generically (orjson objects, item by item: a
malformed item is left out, counted and logged, the rest of its page kept). Mail pages arrive
already flattened by Arrow (wire.py); `mail_tables` keeps the rows of the streams read in full.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from m365guard import tables
from m365guard.graph.batch import Stream

RULE_ACTIONS = ("forwardTo", "redirectTo", "forwardAsAttachmentTo")
# chat-list.md (known issue): `$expand=members` returns at most 25 members, whatever $top says;
# a chat listing that many is read again through /chats/{id}/members (chat-list-members.md)
EXPANDED_MEMBERS_CAP = 25
CHAT_MEMBERS = "chatMembers"  # the stream kind of one chat's full member list
ENTRA_MEMBER = "aadUserConversationMember"
SUB_MICROSECOND = re.compile(r"(\.\d{6})\d+")  # Exchange's 7th fraction digit (100 ns)
Rows = dict[str, list[tuple[Any, ...]]]
SkipItem = Callable[[Stream, object], None]  # one item left out of a stream, and why


class MalformedItem(Exception):
    """One item of a page that cannot be read (wrong types, missing ids)."""


def text(value: Any) -> str:
    """A string field as text: missing or null is "", an unexpected type its str()."""
    return "" if value is None else str(value)


def items(value: Any) -> list[Any]:
    """A JSON array field; null or any other type reads as empty."""
    return value if isinstance(value, list) else []


def address(recipient: Any) -> tuple[str, str]:
    """A recipient's (address, name); either may be ""."""
    email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
    if not isinstance(email, dict):
        return "", ""
    return text(email.get("address")), text(email.get("name"))


def take_page(stream: Stream, body: Any, skip: SkipItem) -> list[str]:
    """Decode one page of inbox rules, chats or one chat's members into the stream's rows; a
    malformed item is left out through `skip`, and the rest of the page is kept. Returns the
    chats whose expanded member list may have been cut (EXPANDED_MEMBERS_CAP)."""
    values = items(body.get("value")) if isinstance(body, dict) else []
    cut: list[str] = []
    for item in values:
        rows: Rows = {}
        try:
            if not isinstance(item, dict):
                raise MalformedItem(f"an item is {type(item).__name__}, not an object")
            if stream.kind == CHAT_MEMBERS:
                rows["chat_members"] = [_member_row(stream.chat_id, item)]
            elif _take_item(stream, item, rows):
                cut.append(text(item.get("id")))
        except (MalformedItem, AttributeError, TypeError, ValueError) as exc:
            skip(stream, exc)
            continue
        for name, new_rows in rows.items():
            stream.rows.setdefault(name, []).extend(new_rows)
    stream.items += len(values)
    return cut


def member_kind(member: dict[str, Any]) -> str:
    """"" for an Entra user (aadUserConversationMember, or no type given), otherwise the
    conversationMember subtype: a Teams personal account, an anonymous guest, a phone user...
    none of which is a school account (v1.0 metadata)."""
    odata_type = text(member.get("@odata.type")).removeprefix("#").removeprefix(
        "microsoft.graph.")
    return "" if odata_type in ("", ENTRA_MEMBER) else odata_type


def _member_row(chat_id: str, member: dict[str, Any]) -> tuple[Any, ...]:
    return (chat_id, text(member.get("userId")), text(member.get("email")),
            text(member.get("displayName")), text(member.get("tenantId")),
            ";".join(text(r) for r in items(member.get("roles"))), member_kind(member))


def _take_item(stream: Stream, item: dict[str, Any], rows: Rows) -> bool:
    """The rows of one inbox rule or chat; True when a chat's members may have been cut."""
    if stream.kind == "messageRules":
        out = rows.setdefault("rule_forwards", [])
        actions = item.get("actions")
        actions = actions if isinstance(actions, dict) else {}
        if item.get("isReadOnly") is True and not any(actions.values()):
            # made by an admin tool: Graph shows neither conditions nor actions (docs-contrib
            # issue 3336), so what it does is unknown here; Get-InboxRule shows it
            stream.hidden_rules.append(text(item.get("displayName")) or text(item.get("id")))
        for action in RULE_ACTIONS:
            for recipient in items(actions.get(action)):
                rule_address, name = address(recipient)
                out.append((stream.mailbox_id, stream.mailbox, text(item.get("id")),
                            text(item.get("displayName")), bool(item.get("isEnabled")),
                            action, rule_address, name))
        return False
    chats, members = rows.setdefault("chats", []), rows.setdefault("chat_members", [])
    chat_id = text(item.get("id"))
    if not chat_id:
        raise MalformedItem("a chat without an id")
    chats.append((chat_id, text(item.get("chatType")), text(item.get("topic")),
                  item.get("createdDateTime"), item.get("lastUpdatedDateTime")))
    listed = [member for member in items(item.get("members")) if isinstance(member, dict)]
    members.extend(_member_row(chat_id, member) for member in listed)
    return len(listed) >= EXPANDED_MEMBERS_CAP


def mail_tables(batches: list[tuple[pa.Table, pa.Table]], read_in_full: Mapping[int, Stream],
                skip: SkipItem) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Messages and recipients from the decoded batches: the rows of the mail streams read
    in full, each given its stream's mailbox and folder. A message without an id is left
    out (and reported); one that a delta round listed twice is kept in its last state.
    On a normal night every row is kept: each check then costs a hash, not a copy."""
    kept = pa.array(sorted(read_in_full), pa.int64())
    if not batches or not len(kept):
        return tables.empty("messages"), tables.empty("recipients")
    offsets = itertools.accumulate((len(messages) for messages, _ in batches), initial=0)
    messages = pa.concat_tables(messages for messages, _ in batches)
    listed = len(messages)
    messages = messages.append_column("row", pa.array(np.arange(listed)))
    recipients = pa.concat_tables(
        table.set_column(1, "row", pc.add(table["message"], offset))
        for (_, table), offset in zip(batches, offsets, strict=False))
    messages = _where(messages, pc.is_in(messages["stream"], value_set=kept))
    # a received-mail listing leaves out drafts and the Sent Items copies (read by delta)
    sent_folder = pc.take(pa.array([read_in_full[n].exclude_folder if n in read_in_full
                                    else "" for n in range(kept[-1].as_py() + 1)],
                                   pa.string()), messages["stream"])
    theirs = pc.and_(pc.not_equal(sent_folder, ""), pc.equal(messages["folder_id"], sent_folder))
    messages = _where(messages, pc.invert(pc.or_(theirs, messages["is_draft"])))
    has_id = pc.fill_null(pc.not_equal(messages["message_id"], ""), False)
    for number in _where(messages, pc.invert(has_id))["stream"].to_pylist():
        skip(read_in_full[number], "a message without an id")
    messages = _where(messages, has_id)
    readable = _readable_times(messages["sent_at"])
    if readable is not None:  # one unreadable date costs its message, never the folder
        for number, message_id, value in zip(
                *(_where(messages, pc.invert(readable))[column].to_pylist()
                  for column in ("stream", "message_id", "sent_at")), strict=True):
            skip(read_in_full[number], f"message {message_id}: unreadable sentDateTime"
                                       f" {str(value)[:40]!r}")
        messages = _where(messages, readable)
    streams = [read_in_full.get(number) for number in range(kept[-1].as_py() + 1)]
    for column, value in (("mailbox_id", "mailbox_id"), ("mailbox", "mailbox"),
                          ("folder", "kind")):
        by_number = pa.array([getattr(s, value) if s else "" for s in streams], pa.string())
        messages = messages.append_column(column, pc.take(by_number, messages["stream"]))
    # Graph's ids are unique per mailbox copy: the same id twice is a delta round's repeat
    if len(pc.unique(messages["message_id"])) < len(messages):
        last = messages.group_by(["mailbox_id", "message_id"], use_threads=False)\
            .aggregate([("row", "max")])["row_max"]
        messages = _where(messages, pc.is_in(messages["row"], value_set=last))
    if len(messages) < listed:
        recipients = recipients.filter(pc.is_in(recipients["row"],
                                                value_set=messages["row"]))
    return _table("messages", messages), _table("recipients", recipients)


def frame(name: str, rows: Iterable[tuple[Any, ...]]) -> pd.DataFrame:
    """A collected table from row tuples in its schema's column order (times past the
    microsecond cut to it, see _timestamps)."""
    data = pd.DataFrame(list(rows), columns=list(tables.SCHEMAS[name]))
    for column, dtype in tables.SCHEMAS[name].items():
        if dtype == tables.TS and len(data):
            data[column] = data[column].map(
                lambda value: SUB_MICROSECOND.sub(r"\1", value) if isinstance(value, str)
                else value)
    return tables.conform(name, data) if len(data) else tables.empty(name)


def _where(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    """The rows where mask is true; the table itself (no copy) when that is every row."""
    return table if pc.all(mask).as_py() is not False else table.filter(mask)


def _table(name: str, table: pa.Table) -> pd.DataFrame:
    """A collected table from Arrow columns of the same names (text, booleans, and timestamps
    as Graph's ISO 8601 text, which Arrow parses ~10x faster than pandas; a time it cannot
    parse is left to `tables.conform`)."""
    table = table.select(list(tables.SCHEMAS[name])).combine_chunks()
    data: dict[str, Any] = {}
    for column, dtype in tables.SCHEMAS[name].items():
        values = table[column]
        if dtype == tables.STR:
            data[column] = pd.arrays.ArrowStringArray(values)
        elif dtype == tables.TS:
            data[column] = _timestamps(values)
        else:
            data[column] = pd.arrays.ArrowExtensionArray(values)
    return tables.conform(name, pd.DataFrame(data, copy=False))


def _readable_times(values: pa.ChunkedArray) -> pa.Array | None:
    """None when every time casts (the normal night, one cast); otherwise which rows hold a
    time (or none) that pandas' ISO 8601 parser reads."""
    try:
        _timestamps(values, strict=True)
        return None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    text = pd.Series(values.to_pylist(), dtype=object)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    return pa.array((parsed.notna() | text.isna()).to_numpy(bool))


def _timestamps(values: pa.ChunkedArray, *, strict: bool = False) -> Any:
    """ISO 8601 text as UTC microseconds. Exchange writes up to 7 fraction digits (100 ns
    ticks) and any offset is valid: the 7th digit is cut (only if a plain cast fails, so a
    normal night pays nothing); text no cast can read is left to `tables.conform`."""
    utc = pa.timestamp("us", tz="UTC")
    try:
        return pd.arrays.ArrowExtensionArray(values.cast(utc))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        trimmed = pc.replace_substring_regex(values, SUB_MICROSECOND.pattern, r"\1")
    try:
        return pd.arrays.ArrowExtensionArray(trimmed.cast(utc))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if strict:
            raise
    # ISO 8601 forms Arrow's cast does not know (pandas does): parsed one by one
    parsed = pd.to_datetime(pd.Series(trimmed.to_pylist(), dtype=object), utc=True,
                            format="ISO8601", errors="coerce")
    return pd.arrays.ArrowExtensionArray(pa.array(parsed.dt.floor("us"), type=utc))

"""Graph's JSON shapes on the bulk path, decoded straight from the bytes.

A night's mail is a few hundred `$batch` responses of ~1 MB each. `parse_mail_batch` parses one
with Arrow's JSON reader against the schema of exactly the fields the rules use (unknown fields
are skipped): about 0.7x orjson's time on the same bytes, with no Python object per message,
and with the GIL released throughout, so the collector parses on worker threads while its
event loop reads on. `mail_batch` then flattens the pages into two tables, messages and their
recipients, with a few Arrow kernels per batch (on the event loop: each kernel call takes the
GIL, and handing it between threads dozens of times per batch cost more than the kernels).

Graph's schema types these fields, so a batch that does not fit them (a number for a subject,
a string for a recipient list) is not Graph's normal output: Arrow refuses it whole. Its pages
are then read one by one with msgspec (`message_page`), the odd items left out and reported,
and the rest written back in Graph's shape for the same Arrow path (`clean_mail_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

# ---- Arrow: the fast path ----------------------------------------------------------------
_ADDRESS = pa.struct([("emailAddress", pa.struct([("name", pa.string()),
                                                  ("address", pa.string())]))])
_MESSAGE = pa.struct([
    ("id", pa.string()),
    ("internetMessageId", pa.string()),
    ("subject", pa.string()),
    ("sentDateTime", pa.string()),
    ("from", _ADDRESS),
    ("toRecipients", pa.list_(_ADDRESS)),
    ("ccRecipients", pa.list_(_ADDRESS)),
    ("bccRecipients", pa.list_(_ADDRESS)),
    ("hasAttachments", pa.bool_()),
    ("parentFolderId", pa.string()),  # selected on a received-mail listing (mailboxes.py)
    ("isDraft", pa.bool_()),
    ("@removed", pa.struct([("reason", pa.string())])),  # a delta page's deleted message
])
# headers and error bodies are left out: the few items that are not 200 are read raw
_MAIL_BATCH = pa.schema([("responses", pa.list_(pa.struct([
    ("id", pa.string()),
    ("status", pa.int64()),
    ("body", pa.struct([("value", pa.list_(_MESSAGE)), ("@odata.nextLink", pa.string()),
                        ("@odata.deltaLink", pa.string())])),
])))])
_PARSE = pa_json.ParseOptions(explicit_schema=_MAIL_BATCH, unexpected_field_behavior="ignore",
                              newlines_in_values=True)
_RECIPIENT_KINDS = (("to", "toRecipients"), ("cc", "ccRecipients"), ("bcc", "bccRecipients"))
# the tables a batch's pages make; `response`: the index of the response a row came from
MESSAGE_ROWS = pa.schema([("response", pa.int64()), ("message_id", pa.string()),
                          ("internet_message_id", pa.string()), ("subject", pa.string()),
                          ("sent_at", pa.string()), ("from_address", pa.string()),
                          ("from_name", pa.string()), ("has_attachments", pa.bool_()),
                          ("folder_id", pa.string()), ("is_draft", pa.bool_())])
# `message`: the row of the recipient's message in the batch's messages table
RECIPIENT_ROWS = pa.schema([("response", pa.int64()), ("message", pa.int64()),
                            ("message_id", pa.string()), ("kind", pa.string()),
                            ("address", pa.string()), ("name", pa.string())])


@dataclass
class MailPage:
    """One item's page of messages: its links and how many items it listed (deleted ones and
    left-out ones included); its rows are in the batch's tables."""

    next_link: str | None = None
    delta_link: str | None = None
    items: int = 0
    # each left-out item's folder id ("" unless selected) and why it was left out
    dropped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class MailBatch:
    """A `$batch` response whose items read pages of messages. Per response, in the order
    received: its id, status and page (200s only). The tables' `response` column says which
    response a row came from; deleted messages are not in them."""

    ids: list[str | None]
    statuses: list[int | None]
    pages: list[MailPage | None]
    messages: pa.Table  # MESSAGE_ROWS; message_id is null for an item without one
    recipients: pa.Table  # RECIPIENT_ROWS


def no_mail() -> MailBatch:
    """A batch with no pages (a failed or unreadable response)."""
    return MailBatch([], [], [], MESSAGE_ROWS.empty_table(), RECIPIENT_ROWS.empty_table())


def parse_mail_batch(content: bytes) -> pa.Table | None:
    """A `$batch` response parsed against the mail schema (one row), or None if it does not
    fit (then see `clean_mail_batch`). Most of a night's decoding, all of it in Arrow with
    the GIL released: the collector runs it on worker threads."""
    try:
        table = pa_json.read_json(
            pa.py_buffer(content), parse_options=_PARSE,
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(content) + 1))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == 1 else None


def mail_batch(table: pa.Table) -> MailBatch:
    """The pages of a parsed `$batch` response flattened into tables: a few dozen Arrow
    kernels, each over the whole batch (called where the GIL is held anyway, they cost less
    than handing it to and from a worker thread for each)."""
    responses = pc.list_flatten(table.column(0).combine_chunks())
    body = pc.struct_field(responses, "body")
    values = pc.struct_field(body, "value")
    statuses = pc.struct_field(responses, "status").to_pylist()
    counts = pc.fill_null(pc.list_value_length(values), 0).to_pylist()
    next_links = pc.struct_field(body, "@odata.nextLink").to_pylist()
    delta_links = pc.struct_field(body, "@odata.deltaLink").to_pylist()
    pages = [MailPage(next_link or None, delta_link or None, count) if status == 200 else None
             for status, next_link, delta_link, count
             in zip(statuses, next_links, delta_links, counts, strict=True)]

    listed = pc.list_flatten(values)
    listed_by = pc.list_parent_indices(values)
    removed = pc.struct_field(listed, "@removed")
    if removed.null_count < len(removed):  # filtering copies every column: only if needed
        live = pc.is_null(removed)
        listed, listed_by = listed.filter(live), listed_by.filter(live)
    message_id = pc.struct_field(listed, "id")
    sender = pc.struct_field(pc.struct_field(listed, "from"), "emailAddress")
    messages = pa.Table.from_arrays([
        listed_by, message_id,
        _text(pc.struct_field(listed, "internetMessageId")),
        _text(pc.struct_field(listed, "subject")),
        pc.struct_field(listed, "sentDateTime"),
        _text(pc.struct_field(sender, "address")), _text(pc.struct_field(sender, "name")),
        pc.fill_null(pc.struct_field(listed, "hasAttachments"), False),
        _text(pc.struct_field(listed, "parentFolderId")),
        pc.fill_null(pc.struct_field(listed, "isDraft"), False),
    ], schema=MESSAGE_ROWS)
    parts = []
    for kind, name in _RECIPIENT_KINDS:
        lists = pc.struct_field(listed, name)
        rows = pc.list_parent_indices(lists)
        email = pc.struct_field(pc.list_flatten(lists), "emailAddress")
        address, display = (_text(pc.struct_field(email, part)) for part in ("address", "name"))
        part = pa.Table.from_arrays([
            pc.take(listed_by, rows), rows, pc.take(message_id, rows),
            pa.repeat(kind, len(rows)), address, display], schema=RECIPIENT_ROWS)
        named = pc.or_(pc.not_equal(address, ""), pc.not_equal(display, ""))
        parts.append(part if pc.all(named).as_py() is not False else part.filter(named))
    ids = pc.struct_field(responses, "id").to_pylist()
    return MailBatch(ids, statuses, pages, messages, pa.concat_tables(parts))


def _text(values: pa.Array) -> pa.Array:
    """A text field with missing or null read as "" (filling copies: only if needed)."""
    return pc.fill_null(values, "") if values.null_count else values


# ---- msgspec: items one by one, for a batch Arrow refused -----------------------------------
# gc=False: these hold no reference cycles, so the collector need not track them
class EmailAddress(msgspec.Struct, gc=False):
    name: str | None = None
    address: str | None = None


class Recipient(msgspec.Struct, gc=False):
    emailAddress: EmailAddress | None = None  # Graph spells its fields in camelCase


class Removed(msgspec.Struct, gc=False):
    reason: str | None = None


class Message(msgspec.Struct, gc=False, rename={"sender": "from", "removed": "@removed"}):
    """A message's metadata as the collector selects it (collect.MESSAGE_FIELDS); a delta page
    lists deleted messages as an id with `@removed`."""

    id: str | None = None
    internetMessageId: str | None = None
    subject: str | None = None
    sentDateTime: str | None = None
    sender: Recipient | None = None
    toRecipients: list[Recipient | None] | None = None
    ccRecipients: list[Recipient | None] | None = None
    bccRecipients: list[Recipient | None] | None = None
    hasAttachments: bool | None = None
    parentFolderId: str | None = None
    isDraft: bool | None = None
    removed: Removed | None = None


class MessagePage(msgspec.Struct, rename={"next_link": "@odata.nextLink",
                                          "delta_link": "@odata.deltaLink"}):
    value: list[Message] = msgspec.field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None


class BatchItem(msgspec.Struct):
    """One reply inside a `$batch` response; its body stays raw until its stream reads it."""

    id: str
    status: int
    headers: dict[str, Any] | None = None
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class BatchResponse(msgspec.Struct):
    responses: list[BatchItem] = msgspec.field(default_factory=list)


_BATCH = msgspec.json.Decoder(BatchResponse)
_MESSAGE_PAGE = msgspec.json.Decoder(MessagePage)
_ENCODER = msgspec.json.Encoder()

DecodeFailure = (msgspec.DecodeError, msgspec.ValidationError)


def batch_items(content: bytes) -> list[BatchItem]:
    """The items of a `$batch` response body with their bodies raw; none if it is not one."""
    try:
        return _BATCH.decode(content).responses
    except DecodeFailure:
        return []


def message_page(raw: bytes | msgspec.Raw) -> tuple[MessagePage, list[tuple[str, str]]]:
    """A page of messages (valid JSON: `batch_items` read it), and the folder id of each item
    that had to be left out with why. A body that is not an object reads as an empty page."""
    try:
        return _MESSAGE_PAGE.decode(raw), []
    except msgspec.ValidationError:
        pass
    body = orjson.loads(bytes(raw))
    if not isinstance(body, dict):
        return MessagePage(), []
    page = MessagePage(next_link=_link(body.get("@odata.nextLink")),
                       delta_link=_link(body.get("@odata.deltaLink")))
    dropped: list[tuple[str, str]] = []
    values = body.get("value")
    for item in values if isinstance(values, list) else []:
        try:
            page.value.append(msgspec.convert(item, Message))
        except msgspec.ValidationError as exc:
            folder = item.get("parentFolderId") if isinstance(item, dict) else None
            dropped.append((folder if isinstance(folder, str) else "", str(exc)))
    return page, dropped


def clean_mail_batch(items: list[BatchItem]
                     ) -> tuple[MailBatch, dict[str, list[tuple[str, str]]]]:
    """The 200 items of a batch Arrow refused, each page read with `message_page` and written
    back in Graph's shape, as a MailBatch; and, by item id, why items were left out."""
    pages: list[dict[str, Any]] = []
    dropped: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        if item.status == 200:
            page, dropped[item.id] = message_page(item.body or b"null")
            pages.append({"id": item.id, "status": 200, "body": page})
    parsed = parse_mail_batch(_ENCODER.encode({"responses": pages}))
    if parsed is None:  # the pages now hold only what the schema types: Arrow reads them
        raise AssertionError("Arrow refused pages written in its own schema")
    return mail_batch(parsed), dropped


def _link(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

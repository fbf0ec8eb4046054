"""Graph's JSON shapes on the bulk path, as msgspec structs: decoded straight from the bytes.

A night's mail is a few hundred `$batch` responses of ~1 MB each. Decoding them into typed
structs that name only the fields the rules use is faster than building generic dicts (orjson:
every key and value becomes a Python object, ~1.5x the time here) and leaves the collector
attribute reads instead of dict lookups and type checks. Unknown fields are skipped.

Graph's schema types these fields, so a page that does not fit them is not Graph's normal
output: `message_page` then decodes it generically and converts item by item, so one odd item
is left out (and reported) while the rest of the page is kept.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson


# gc=False: these hold no reference cycles, so the collector need not track millions of them
class EmailAddress(msgspec.Struct, gc=False):
    name: str | None = None
    address: str | None = None


class Recipient(msgspec.Struct, gc=False):
    emailAddress: EmailAddress | None = None  # Graph spells its fields in camelCase


class Message(msgspec.Struct, gc=False, rename={"sender": "from", "removed": "@removed"}):
    """A message's metadata as selected by the collector (collect.MESSAGE_FIELDS); a delta
    page lists deleted messages as an id with `@removed`."""

    id: str | None = None
    internetMessageId: str | None = None
    subject: str | None = None
    sentDateTime: str | None = None
    sender: Recipient | None = None
    toRecipients: list[Recipient | None] | None = None
    ccRecipients: list[Recipient | None] | None = None
    bccRecipients: list[Recipient | None] | None = None
    hasAttachments: bool | None = None
    removed: dict[str, Any] | None = None


class ErrorDetail(msgspec.Struct, gc=False):
    code: str | None = None
    message: str | None = None


class MessagePage(msgspec.Struct, rename={"next_link": "@odata.nextLink",
                                          "delta_link": "@odata.deltaLink"}):
    """A page of a message delta round; a failed request's body has only `error`."""

    value: list[Message] = msgspec.field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None
    error: ErrorDetail | None = None


class BatchItem(msgspec.Struct):
    """One reply inside a `$batch` response; its body stays raw until its stream reads it."""

    id: str
    status: int
    headers: dict[str, Any] | None = None
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class BatchResponse(msgspec.Struct):
    responses: list[BatchItem] = msgspec.field(default_factory=list)


class MessageBatchItem(msgspec.Struct):
    id: str
    status: int
    headers: dict[str, Any] | None = None
    body: MessagePage | None = None


class MessageBatchResponse(msgspec.Struct):
    """A `$batch` response whose items all read message pages: typed in one pass."""

    responses: list[MessageBatchItem] = msgspec.field(default_factory=list)


_BATCH = msgspec.json.Decoder(BatchResponse)
_MESSAGE_BATCH = msgspec.json.Decoder(MessageBatchResponse)
_MESSAGE_PAGE = msgspec.json.Decoder(MessagePage)

DecodeFailure = (msgspec.DecodeError, msgspec.ValidationError)


def batch_items(content: bytes, *, messages: bool = False
                ) -> list[BatchItem] | list[MessageBatchItem]:
    """The items of a `$batch` response body, none if it is not one. With `messages` (every
    item read a page of messages) the pages are typed in the same pass, unless some part is
    not in Graph's schema: then every body stays raw, for `message_page` to read one by one."""
    if messages:
        try:
            return _MESSAGE_BATCH.decode(content).responses
        except DecodeFailure:
            pass
    try:
        return _BATCH.decode(content).responses
    except DecodeFailure:
        return []


def message_page(raw: bytes | msgspec.Raw) -> tuple[MessagePage, list[str]]:
    """A page of messages, and why each item that had to be left out was (none for a page in
    Graph's schema). A body that is not an object reads as an empty page with no links."""
    try:
        return _MESSAGE_PAGE.decode(raw), []
    except msgspec.ValidationError:
        pass
    body = orjson.loads(bytes(raw))
    if not isinstance(body, dict):
        return MessagePage(), []
    page = MessagePage(next_link=_link(body.get("@odata.nextLink")),
                       delta_link=_link(body.get("@odata.deltaLink")))
    dropped: list[str] = []
    values = body.get("value")
    for item in values if isinstance(values, list) else []:
        try:
            page.value.append(msgspec.convert(item, Message))
        except msgspec.ValidationError as exc:
            dropped.append(str(exc))
    return page, dropped


def _link(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

"""A `$batch` response read item by item: each item's own status, headers and Retry-After
(json-batching.md: an outer 200 can hold throttled or failed items), and pages of messages
decoded straight into Arrow tables (wire.py) rather than into Python objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import httpx
import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from m365guard.graph import wire


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; Graph sends fractions such as "2.128". HTTP dates are ignored."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


@dataclass
class BatchReply:
    """One item of a `$batch` response: its own status and headers, and its body either still
    raw or, for a page of messages, already in its batch's tables (see `mail_replies`)."""

    status: int
    headers: Mapping[str, Any]
    raw: bytes | msgspec.Raw | None
    page: wire.MailPage | None = None

    @cached_property
    def body(self) -> Any:
        """The body decoded generically (None when absent or not JSON)."""
        if not self.raw:
            return None
        try:
            return orjson.loads(bytes(self.raw))
        except orjson.JSONDecodeError:
            return None

    @property
    def retry_after(self) -> float | None:
        """The item's own Retry-After (header names are case-insensitive)."""
        for name, value in self.headers.items():
            if name.lower() == "retry-after":
                return parse_retry_after(str(value))
        return None


_MISSING = BatchReply(502, {}, None)  # the reply of an item the response left without one


def batch_replies(response: httpx.Response, count: int) -> list[BatchReply]:
    """The replies to a `$batch` of `count` items (ids "0".."count-1"), in order, bodies raw.
    A failed outer request is every item's reply; a reply that is missing, or a response that
    is not a `$batch` response, reads as a 502 for the items it leaves without one, so they
    are retried."""
    if response.status_code != 200:
        reply = BatchReply(response.status_code, dict(response.headers), response.content)
        return [reply] * count
    replies: list[BatchReply | None] = [None] * count
    for item in wire.batch_items(response.content):
        index = _item_index(item.id, count)
        if index is not None:
            replies[index] = BatchReply(item.status, item.headers or {}, item.body)
    return [reply or _MISSING for reply in replies]


def mail_replies(response: httpx.Response, streams: Sequence[int], parsed: pa.Table | None
                 ) -> tuple[list[BatchReply], pa.Table, pa.Table]:
    """The replies to a `$batch` whose items each read a page of messages for the stream
    numbered in `streams` (item i for streams[i]), as `batch_replies` gives them but with the
    200s' pages in two tables, messages and recipients (wire.MESSAGE_ROWS, RECIPIENT_ROWS),
    whose `stream` column says which stream a row is for (-1: a reply no item asked for, or
    one replaced by a later reply with the same id). `parsed` is the body as
    `wire.parse_mail_batch` read it (None: it did not fit, or was not asked)."""
    count = len(streams)
    replies: list[BatchReply | None] = [None] * count
    batch = wire.mail_batch(parsed) if response.status_code == 200 and parsed else None
    dropped: dict[str, list[tuple[str, str]]] = {}
    if batch is None or any(status != 200 for status in batch.statuses):
        # an error, or pages not in Graph's schema: read raw, the pages one by one if need be
        replies = list(batch_replies(response, count))
        if batch is None:
            items = wire.batch_items(response.content) if response.status_code == 200 else []
            batch, dropped = wire.clean_mail_batch(items) if items else (wire.no_mail(), {})
    owner = [-1] * len(batch.ids)  # the stream each response is for
    taken: dict[int, int] = {}
    for row, (item_id, page) in enumerate(zip(batch.ids, batch.pages, strict=True)):
        index = _item_index(item_id, count)
        if index is None or page is None:
            continue
        if index in taken:
            owner[taken[index]] = -1
        taken[index], owner[row] = row, streams[index]
        page.dropped = dropped.get(str(item_id), [])
        page.items += len(page.dropped)  # listed, though left out
        replies[index] = BatchReply(200, {}, None, page)
    owners = pa.array(owner, pa.int64())
    messages, recipients = (
        table.set_column(0, "stream", pc.take(owners, table.column("response")))
        for table in (batch.messages, batch.recipients))
    return [reply or _MISSING for reply in replies], messages, recipients


def _item_index(item_id: str | None, count: int) -> int | None:
    return int(item_id) if item_id and item_id.isdigit() and int(item_id) < count else None


def json_object(content: bytes) -> dict[str, Any] | None:
    """A body decoded as a JSON object, or None (empty, HTML, truncated, an array)."""
    try:
        body = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def error_code(body: Any) -> tuple[str, str]:
    """Graph's error envelope: (code, message), or empty strings."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("code", "")), str(error.get("message", ""))[:200]
    return "", ""

"""Hostile mode (issue 18): answers changed the way real services and proxies change them.

`FaultConfig.hostile_rate` of the answers (each whole request, each `$batch` item) is changed
in one seeded way:

- *dates*: every `...DateTime` in another valid ISO 8601 form of the same instant (Exchange's
  7 fraction digits, an offset such as +01:00 or -05:00);
- *extra*: fields and annotations the collector does not know, on the page and its items;
- *duplicate*: one item of a page listed twice (the same id);
- *unreadable*: one message of a mail page with its id left out, a number for its subject or
  a string for hasAttachments (a message Graph's schema does not allow, which the collector
  can tell; leaving out a field it cannot tell from an empty one is not done to mail);
- *retry_after*: a 429 whose Retry-After is odd (0, negative, fractional, a date, not a
  number) but short;
- *html*: a gateway's HTML 502 or 503 page instead of JSON;
- *encoding* (whole requests only): a body with a UTF-8 byte order mark, or cut short;
- *empty*: `/users` answering an empty tenant.

Mail is changed only in ways a client can undo or detect; the directory, rules and chats,
which are read in full every night, the same.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from m365guard.emulator.odata import GraphResponse, HtmlPage

ODD_RETRY_AFTER = ("0", "-1", "0.05", " 0.1 ", "1e-2", "abc", "", "NaN", "inf",
                   "Wed, 21 Oct 2015 07:28:00 GMT", "0,5")
KINDS = ("dates", "extra", "duplicate", "unreadable", "retry_after", "html", "encoding", "empty")
ZULU = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class RawBody:
    """Bytes served as they are (a body no JSON parser reads)."""

    def __init__(self, content: bytes) -> None:
        self.content = content


class Hostility:
    """Changes answers at `rate`, from a seeded random source the caller owns (and locks)."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.changed: dict[str, int] = {}  # how many answers each kind changed

    def answer(self, path: str, response: GraphResponse, *, in_batch: bool) -> GraphResponse:
        """The answer as a hostile service or proxy would give it (most often unchanged)."""
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return response
        kinds = [k for k in KINDS if not (in_batch and k == "encoding")
                 and not (k == "empty" and path != "/users")
                 and not (k == "unreadable" and "/messages" not in path)]
        kind = self.rng.choice(kinds)
        changed = self._change(kind, path, response)
        if changed is not response:
            self.changed[kind] = self.changed.get(kind, 0) + 1
        return changed

    def _change(self, kind: str, path: str, response: GraphResponse) -> GraphResponse:
        if kind == "retry_after":
            body = {"error": {"code": "TooManyRequests", "message": "Hostile mode."}}
            return GraphResponse(429, body, {"Retry-After": self.rng.choice(ODD_RETRY_AFTER)})
        if kind == "html":
            return GraphResponse(self.rng.choice((502, 503)), HtmlPage(503))
        if response.status != 200 or not isinstance(response.body, dict):
            return response
        body = orjson.loads(orjson.dumps(response.body))  # plain data (pages hold fragments)
        if kind == "encoding":
            raw = orjson.dumps(body)
            cut = raw[:max(len(raw) // 2, 1)]
            return GraphResponse(200, RawBody(self.rng.choice((b"\xef\xbb\xbf" + raw, cut))),
                                 response.headers)
        items = [item for item in body.get("value") or [] if isinstance(item, dict)]
        change: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], None]] = {
            "dates": self._dates, "extra": self._extra, "duplicate": self._duplicate,
            "unreadable": self._unreadable, "empty": _empty}
        change[kind](body, items)
        return GraphResponse(200, body, response.headers)

    def _dates(self, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
        for holder in (body, *items):
            for key, value in list(holder.items()):
                if key.endswith("DateTime") and isinstance(value, str) and ZULU.match(value):
                    holder[key] = self._same_instant(value)

    def _same_instant(self, value: str) -> str:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        form = self.rng.randrange(3)
        if form == 0:
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"
        offset = timezone(timedelta(hours=1 if form == 1 else -5))
        return moment.astimezone(offset).isoformat()

    def _extra(self, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
        body["@odata.count"] = len(items)
        body["x-ms-proxy"] = {"hop": self.rng.randrange(9)}
        for item in items:
            item["@odata.etag"] = f'W/"{self.rng.getrandbits(64):x}"'
            item["unknownProperty"] = [self.rng.random(), None, "é"]

    def _duplicate(self, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
        if items and not any("@removed" in item for item in items):
            values = body["value"]
            values.insert(self.rng.randrange(len(values) + 1), dict(self.rng.choice(items)))

    def _unreadable(self, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
        live = [item for item in items if "@removed" not in item]
        if live:
            item = self.rng.choice(live)
            how = self.rng.randrange(3)
            if how == 0:
                item.pop("id", None)
            elif how == 1:
                item["subject"] = 12345
            else:
                item["hasAttachments"] = "yes"


def _empty(body: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """An empty tenant: no users, no further page."""
    body["value"] = []
    body.pop("@odata.nextLink", None)

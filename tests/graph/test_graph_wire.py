"""`$batch` replies of mail pages decoded into tables (wire.parse_mail_batch, then
replies.mail_replies).

Hand-written response bytes in Graph's documented shapes, including the odd ones a server
that is not the emulator may send: each case checks the replies and the rows read back.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from m365guard.graph import wire
from m365guard.graph.replies import BatchReply
from m365guard.graph.replies import mail_replies as replies_and_tables


def mail_replies(response: httpx.Response, streams: list[int]
                 ) -> tuple[list[BatchReply], Any, Any]:
    """As the collector calls it: the body parsed first (on its worker thread)."""
    return replies_and_tables(response, streams, wire.parse_mail_batch(response.content))


def message(message_id: str | None, **fields: Any) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.message", "id": message_id,
            "internetMessageId": f"<{message_id}@school>", "subject": "Trip",
            "sentDateTime": "2024-10-19T08:37:12Z",
            "from": {"emailAddress": {"name": "Ann Lee", "address": "ann@school.uk"}},
            "toRecipients": [{"emailAddress": {"name": "Bo", "address": "bo@home.com"}}],
            "ccRecipients": [], "bccRecipients": [], "hasAttachments": False, **fields}


def page(*items: Any, next_link: str | None = None, delta_link: str | None = "d") -> Any:
    body: dict[str, Any] = {"value": list(items)}
    if next_link:
        body["@odata.nextLink"] = next_link
    if delta_link:
        body["@odata.deltaLink"] = delta_link
    return body


def batch(*responses: dict[str, Any], raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else orjson.dumps({"responses": list(responses)})
    return httpx.Response(200, content=content)


def ok(item_id: str, body: Any) -> dict[str, Any]:
    return {"id": item_id, "status": 200, "headers": {"Content-Type": "application/json"},
            "body": body}


def rows(table: Any) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda row: (row["stream"], str(row["message_id"])))


def test_pages_become_rows_of_their_streams() -> None:
    replies, messages, recipients = mail_replies(batch(
        ok("1", page(message("m2", subject=None, hasAttachments=None,
                             ccRecipients=[{"emailAddress": {"address": "cy@x.uk"}}, None,
                                           {"emailAddress": None}]),
                     {"id": "gone", "@removed": {"reason": "deleted"}}, next_link="n",
                     delta_link=None)),
        ok("0", page(message("m1"))),
    ), streams=[7, 9])
    assert [r.status for r in replies] == [200, 200]
    first, second = (r.page for r in replies)
    assert first is not None and second is not None
    assert (first.next_link, first.delta_link, first.items) == (None, "d", 1)
    assert (second.next_link, second.delta_link, second.items) == ("n", None, 2)
    got = rows(messages)
    assert [(r["stream"], r["message_id"], r["subject"], r["has_attachments"]) for r in got] == [
        (7, "m1", "Trip", False), (9, "m2", "", False)]
    assert got[0]["from_address"] == "ann@school.uk" and got[0]["sent_at"].startswith("2024")
    assert sorted((r["stream"], r["message_id"], r["kind"], r["address"], r["name"])
                  for r in recipients.to_pylist()) == [
        (7, "m1", "to", "bo@home.com", "Bo"), (9, "m2", "cc", "cy@x.uk", ""),
        (9, "m2", "to", "bo@home.com", "Bo")]


def test_an_item_out_of_schema_is_dropped_and_the_rest_kept() -> None:
    replies, messages, recipients = mail_replies(batch(
        ok("0", page(message("m1"), message("odd", subject=42), message("m3"))),
        ok("1", page(message("m4", toRecipients="bo@home.com"))),
    ), streams=[0, 1])
    first, second = (r.page for r in replies)
    assert first is not None and second is not None
    assert first.items == 3 and len(first.dropped) == 1 and "subject" in first.dropped[0][1]
    assert second.items == 1 and len(second.dropped) == 1
    assert [(r["stream"], r["message_id"]) for r in rows(messages)] == [(0, "m1"), (0, "m3")]
    assert {r["message_id"] for r in recipients.to_pylist()} == {"m1", "m3"}


def test_errors_keep_their_status_and_headers_and_give_no_rows() -> None:
    replies, messages, _ = mail_replies(batch(
        {"id": "0", "status": 429, "headers": {"Retry-After": "2.5"},
         "body": {"error": {"code": "ApplicationThrottled", "message": "slow down"}}},
        ok("1", page(message("m1"))),
    ), streams=[3, 4])
    assert replies[0].status == 429 and replies[0].retry_after == 2.5
    assert replies[0].body["error"]["code"] == "ApplicationThrottled"
    assert [r["stream"] for r in rows(messages)] == [4]


def test_replies_nobody_asked_for_or_given_twice_own_no_stream() -> None:
    replies, messages, _ = mail_replies(batch(
        ok("0", page(message("early"))), ok("0", page(message("late"))),
        ok("5", page(message("stray"))), ok("x", page(message("stray2"))),
    ), streams=[11, 12])
    assert replies[0].status == 200 and replies[1].status == 502  # "1" never answered
    owned = {r["message_id"]: r["stream"] for r in messages.to_pylist()}
    assert owned == {"early": -1, "late": 11, "stray": -1, "stray2": -1}


def test_a_response_that_is_not_a_batch_reads_as_missing_replies() -> None:
    for content in (b"<html>busy</html>", b"", b"[1, 2]", b'{"responses": 5}'):
        replies, messages, recipients = mail_replies(batch(raw=content), streams=[1, 2])
        assert [r.status for r in replies] == [502, 502]
        assert messages.num_rows == 0 and recipients.num_rows == 0
    failed = httpx.Response(503, headers={"Retry-After": "1"}, content=b"")
    replies, messages, _ = mail_replies(failed, streams=[1])
    assert replies[0].status == 503 and replies[0].retry_after == 1.0 and messages.num_rows == 0


def test_a_batch_that_is_not_valid_json_reads_as_missing_replies() -> None:
    """A lone surrogate escape is not text: no JSON reader here takes the batch, so its items
    read as 502s, are retried, and end as failed coverage rather than as partial rows."""
    raw = (b'{"responses":[{"id":"0","status":200,"body":{"value":[{"id":"a","subject":'
           b'"\\ud83d"}],"@odata.deltaLink":"d"}},{"id":"1","status":200,"body":'
           + orjson.dumps(page(message("m1"))) + b"}]}")
    replies, messages, _ = mail_replies(batch(raw=raw), streams=[0, 1])
    assert [r.status for r in replies] == [502, 502] and messages.num_rows == 0


def test_pretty_printed_batches_read_the_same() -> None:
    body = {"responses": [ok("0", page(message("m1"), next_link="n"))]}
    compact, pretty = (mail_replies(batch(raw=orjson.dumps(body, option=option)), streams=[0])
                       for option in (0, orjson.OPT_INDENT_2))
    assert compact[1].to_pylist() == pretty[1].to_pylist()
    assert compact[0][0].page == pretty[0][0].page

"""The audit reader: Set-Mailbox forwarding changes from the unified audit log.

An audit log query is created (POST), polled until it succeeds, and its records paged. The
poll interval comes from the request (tests and the demo do not sleep); each wait doubles up
to a minute, within the request's timeout. Queries are limited per tenant and day, so a POST
whose answer was lost is never simply sent again: the queries are listed first and ours (by
its display name, unique per run) is reused. A query that stopped at its record-count limit
(isRecordCountLimitExceeded) is partial. A record's Identity is whatever the admin typed
(UPN, alias, display name, an Exchange DN ending in the name): it is resolved to the mailbox
through the directory; a record of an unexpected shape is a counted skip.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from msgraph.generated.models.security.audit_log_query import AuditLogQuery

from m365guard.errors import ExitCode, GuardError
from m365guard.exports import strip_smtp
from m365guard.graph.client import RETRYABLE_STATUS, GraphSession
from m365guard.graph.directory import DirectoryReader
from m365guard.graph.replies import json_object
from m365guard.graph.sink import RowSink, failure_reason


def iso(moment: dt.datetime) -> str:
    """A time as Graph's filters want it (UTC, whole seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MalformedRecord(Exception):
    """An audit record whose auditData or Parameters has an unexpected shape."""


Resolve = Callable[[str], str]


class AuditReader:
    """Reads one window of Set-Mailbox records into the sink's mailbox_forwarding."""

    def __init__(self, session: GraphSession, sink: RowSink, directory: DirectoryReader, *,
                 poll_seconds: float, timeout_seconds: float) -> None:
        self.session = session
        self.sink = sink
        self.directory = directory  # pages the records
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    async def read(self, since: dt.datetime, until: dt.datetime,
                   users: list[dict[str, Any]]) -> None:
        """Create the query, wait for it, read its records; a failure is one coverage row."""
        queries = self.session.client.security.audit_log.queries
        body = await self._create(since, until)
        if body is None:
            return
        query_builder = queries.by_audit_log_query_id(str(body["id"]))
        deadline = time.monotonic() + self.timeout_seconds
        pause = self.poll_seconds
        state = str(body.get("status", ""))
        while state != "succeeded":
            if state in ("failed", "cancelled") or time.monotonic() > deadline:
                self.sink.cover("", "auditLog", "failed",
                                f"audit log query {state or 'timed out'}", 0)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)
            status, body = await self.session.get_json(query_builder.to_get_request_information())
            state = str(body.get("status", "")) if status == 200 and body else "failed"
        records = await self.directory.read_all(
            "auditLog", query_builder.records.to_get_request_information())
        if records is None:
            return
        resolve = identity_resolver(users)
        for record in records:
            try:
                self.sink.rows["mailbox_forwarding"].extend(forwarding_from_audit(record, resolve))
            except MalformedRecord as exc:
                self.sink.skip("auditLog", "tenant", exc)
        if body.get("isRecordCountLimitExceeded") is True:
            self.sink.cover("", "auditLog", "failed", "the audit log query stopped at its"
                            " record-count limit (isRecordCountLimitExceeded): partial",
                            len(records))
            return
        self.sink.cover("", "auditLog", "ok", "", len(records))

    async def _create(self, since: dt.datetime, until: dt.datetime) -> dict[str, Any] | None:
        """The created query. Each POST is sent once; after a lost answer the queries are
        listed and ours reused, so a retry never makes a second query."""
        name = f"m365guard mailbox forwarding {iso(until)}"
        query = AuditLogQuery(
            odata_type="#microsoft.graph.security.auditLogQuery", display_name=name,
            filter_start_date_time=since, filter_end_date_time=until,
            operation_filters=["Set-Mailbox"])
        queries = self.session.client.security.audit_log.queries
        retry = self.session.retry
        status, body = 0, None
        for attempt in range(1, retry.attempts + 1):
            try:
                response = await self.session.send(queries.to_post_request_information(query),
                                                   retries=False)
                status, body = response.status_code, json_object(response.content)
            except GuardError as exc:
                if exc.exit_code != ExitCode.HOST_UNREACHABLE:
                    raise
                status, body = 503, None  # the connection dropped: the query may exist
            if status in (200, 201) and body and body.get("id"):
                return body
            if status not in RETRYABLE_STATUS or attempt == retry.attempts:
                break
            wait = retry.backoff(attempt)
            if not retry.fits(wait):
                break
            await asyncio.sleep(wait)
            found = await self._find(name)
            if found is not None:
                return found
        self.sink.cover("", "auditLog", "failed", failure_reason("auditLog", status, body), 0)
        return None

    async def _find(self, name: str) -> dict[str, Any] | None:
        """Our query among the tenant's (security-auditlog-list-queries.md), or None."""
        info: Any = self.session.client.security.audit_log.queries.to_get_request_information()
        while True:
            status, body = await self.session.get_json(info)
            if status != 200 or not body:
                return None
            for found in body.get("value") or []:
                if isinstance(found, dict) and found.get("displayName") == name \
                        and found.get("id"):
                    return found
            next_link = body.get("@odata.nextLink")
            if not isinstance(next_link, str):
                return None
            info = self.session.get_info(next_link)


def identity_resolver(users: list[dict[str, Any]]) -> Resolve:
    """Identity as an admin typed it -> the mailbox's UPN: the UPN or primary address, the
    alias (their local part), the display name when only one user has it, or an Exchange DN
    (.../Jane Smith: its last segment). Anything else is kept as typed."""
    names = Counter(str(u.get("displayName") or "").lower() for u in users)
    keys: dict[str, str] = {}
    for user in users:
        upn = str(user.get("userPrincipalName") or "")
        mail = str(user.get("mail") or "")
        name = str(user.get("displayName") or "").lower()
        for key in (upn, mail, upn.split("@")[0], mail.split("@")[0]):
            if key:
                keys.setdefault(key.lower(), upn)
        if name and names[name] == 1:
            keys.setdefault(name, upn)

    def resolve(identity: str) -> str:
        text = identity.strip()
        found = keys.get(text.lower())
        if found is None and "/" in text:
            found = keys.get(text.rsplit("/", 1)[-1].strip().lower())
        return found or text
    return resolve


def forwarding_from_audit(record: Mapping[str, Any],
                          resolve: Resolve = str) -> list[tuple[Any, ...]]:
    """The mailbox_forwarding row of one Set-Mailbox audit record ("" = forwarding cleared);
    MalformedRecord when its auditData or Parameters has an unexpected shape."""
    if not isinstance(record, Mapping):
        raise MalformedRecord(f"a record is {type(record).__name__}, not an object")
    if record.get("operation") != "Set-Mailbox":
        return []
    data = record.get("auditData") or {}
    parameters = (data.get("Parameters") or []) if isinstance(data, Mapping) else None
    if not isinstance(parameters, list) or not all(isinstance(p, Mapping) for p in parameters):
        raise MalformedRecord(f"record {str(record.get('id'))[:80]!r}: auditData.Parameters"
                              " is not a list of Name/Value objects")
    params = {str(p.get("Name")): p.get("Value") or "" for p in parameters}
    if not any(name in params for name in ("ForwardingSmtpAddress", "ForwardingAddress")):
        return []
    mailbox = resolve(str(params.get("Identity") or record.get("objectId") or ""))
    address = params.get("ForwardingSmtpAddress") or params.get("ForwardingAddress") or ""
    deliver = str(params.get("DeliverToMailboxAndForward", "")).lower() == "true"
    return [(mailbox, strip_smtp(address), deliver, "audit", record.get("createdDateTime"),
             str(record.get("id", "")))]

"""The audit reader: Set-Mailbox forwarding changes from the unified audit log.

An audit log query is created (POST), polled until it succeeds, and its records paged. The
poll interval comes from the request (tests and the demo do not sleep); each wait doubles up
to a minute, within the request's timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from msgraph.generated.models.security.audit_log_query import AuditLogQuery

from m365guard.exports import strip_smtp
from m365guard.graph.client import GraphSession
from m365guard.graph.directory import DirectoryReader
from m365guard.graph.sink import RowSink, failure_reason


def iso(moment: dt.datetime) -> str:
    """A time as Graph's filters want it (UTC, whole seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditReader:
    """Reads one window of Set-Mailbox records into the sink's mailbox_forwarding."""

    def __init__(self, session: GraphSession, sink: RowSink, directory: DirectoryReader, *,
                 poll_seconds: float, timeout_seconds: float) -> None:
        self.session = session
        self.sink = sink
        self.directory = directory  # pages the records
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    async def read(self, since: dt.datetime, until: dt.datetime) -> None:
        """Create the query, wait for it, read its records; a failure is one coverage row."""
        query = AuditLogQuery(
            odata_type="#microsoft.graph.security.auditLogQuery",
            display_name=f"m365guard mailbox forwarding {iso(until)}",
            filter_start_date_time=since,
            filter_end_date_time=until,
            operation_filters=["Set-Mailbox"],
        )
        queries = self.session.client.security.audit_log.queries
        status, body = await self.session.get_json(queries.to_post_request_information(query))
        if status not in (200, 201):
            self.sink.cover("", "auditLog", "failed",
                            failure_reason("auditLog", status, body), 0)
            return
        query_builder = queries.by_audit_log_query_id(body["id"])
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
            state = str(body.get("status", "")) if status == 200 else "failed"
        records = await self.directory.read_all(
            "auditLog", query_builder.records.to_get_request_information())
        if records is None:
            return
        for record in records:
            self.sink.rows["mailbox_forwarding"].extend(forwarding_from_audit(record))
        self.sink.cover("", "auditLog", "ok", "", len(records))


def forwarding_from_audit(record: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The mailbox_forwarding row of one Set-Mailbox audit record ("" = forwarding cleared)."""
    if record.get("operation") != "Set-Mailbox":
        return []
    data = record.get("auditData") or {}
    params = {str(p.get("Name")): p.get("Value") or "" for p in data.get("Parameters") or []}
    if not any(name in params for name in ("ForwardingSmtpAddress", "ForwardingAddress")):
        return []
    mailbox = str(params.get("Identity") or record.get("objectId") or "")
    address = params.get("ForwardingSmtpAddress") or params.get("ForwardingAddress") or ""
    deliver = str(params.get("DeliverToMailboxAndForward", "")).lower() == "true"
    return [(mailbox, strip_smtp(address), deliver, "audit", record.get("createdDateTime"),
             str(record.get("id", "")))]

"""Collect one night's data from Graph into `tables.Collected`.

Public API (the nightly pipeline calls exactly this)::

    with open_session(conn) as session:          # conn: settings.ConnectionSettings
        session.granted_roles                     # application permissions in the token
        result = collect(session, CollectRequest(since=..., delta_links=...), progress=None)
    result.collected   # tables.Collected: every table in tables.COLLECTED, coverage included
    result.delta_links # {(mailbox upn, folder): deltaLink} to keep for the next night
    result.requests    # HTTP requests sent;  result.errors: one line per thing not read

The parts: the directory reader (directory.py) pages users, SKUs, education roles and group
members; the per-mailbox work (mail delta per folder, inbox rules, chats) is a set of streams
(mailboxes.py) sent through one `$batch` scheduler (batch.py); the page decoders (pages.py,
wire.py) turn replies into rows; the audit reader (audit.py) reads mailbox forwarding from the
unified audit log. Local inputs (the Exchange export) were read before Graph was contacted and
arrive in the request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from m365guard import tables
from m365guard.exports import ForwardingExport
from m365guard.graph.audit import AuditReader
from m365guard.graph.batch import BatchScheduler
from m365guard.graph.client import GraphSession, open_session
from m365guard.graph.directory import DirectoryReader
from m365guard.graph.mailboxes import (
    RECEIVED,
    MailboxStreams,
    ProgressSink,
    is_guest,
    mark_key,
)
from m365guard.graph.pages import frame, mail_tables
from m365guard.graph.sink import MailSpool, RowSink
from m365guard.shards import MailShards, shard_count

__all__ = ["CollectRequest", "CollectResult", "GraphSession", "collect", "open_session"]

MAIL_TABLES = ("messages", "recipients")  # built from the decoded batches (pages.mail_tables)


@dataclass
class CollectRequest:
    """What to read tonight."""

    since: dt.datetime
    delta_links: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # users found without an Exchange mailbox, and when: not asked again for a week
    # (mailboxes.NO_MAILBOX_RECHECK), then asked for their mail since that check
    without_mailbox: Mapping[str, dt.datetime] = field(default_factory=dict)
    # "sentitems": that folder's delta; "inbox": received mail in every folder (mailboxes.py)
    folders: tuple[str, ...] = ("sentitems", "inbox")
    group_names: tuple[str, ...] = ()
    # the group whose members' mailboxes the app is scoped to read (Exchange RBAC for
    # Applications / an application access policy); None: every mailbox
    mailbox_scope_group: str | None = None
    include_rules: bool = True
    include_chats: bool = True
    include_audit: bool = True
    forwarding_export: ForwardingExport | None = None  # read before Graph is contacted
    audit_since: dt.datetime | None = None  # audit window start; None = since
    until: dt.datetime | None = None  # audit window end; None = now
    page_size: int = 250
    # $batch POSTs at once: each waits a round trip, so few in flight leave the client idle
    # (medium school, 20 ms latency: 1.0 s with 16 against 1.4 s with 6); Graph limits
    # concurrency per mailbox (mailbox_concurrency), not per app
    max_batches_in_flight: int = 16
    # requests in flight per mailbox ([collect] max_concurrency): Outlook's documented limit
    # is 4 per app and mailbox
    mailbox_concurrency: int = 4
    # Teams GETs (list chats, a chat's members) a second, each $batch item counted: under
    # Graph's 30 per app per tenant (batch.Pacer)
    teams_requests_per_second: float = 25.0
    audit_poll_seconds: float = 0.5  # first wait; doubles up to a minute
    audit_timeout_seconds: float = 1800.0
    # where each stream was last read in full, by (mailbox upn lowercased or "" tenant-wide,
    # kind: the folder name, "messageRules", "chats", "auditLog"): a stream reads from its own
    # mark (a failed night's mail is read the next night), `since` when it has none
    read_marks: Mapping[tuple[str, str], dt.datetime] = field(default_factory=dict)
    # where to write the night's mail as it is read, in shards (m365guard/shards.py): the
    # collected messages and recipients tables are then empty and CollectResult.mail names
    # the shards; None keeps them in memory
    mail_dir: Path | None = None
    mail_shards: int | None = None  # how many; None: shards.shard_count of the mailboxes


@dataclass
class CollectResult:
    """What one collection produced."""

    collected: tables.Collected
    delta_links: dict[tuple[str, str], str]
    requests: int
    batch_requests: int  # the $batch POSTs among `requests` (the per-mailbox work)
    errors: list[str]
    skipped: int = 0  # malformed items left out of the tables (each one logged)
    # $batch items each per-mailbox stream sent, by (mailbox upn, kind): the chain of round
    # trips it needed, retries included (the benchmark's latency bound is built from these)
    round_trips: dict[tuple[str, str], int] = field(default_factory=dict)
    # `until` for each stream read in full tonight (keys as CollectRequest.read_marks)
    read_marks: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    mail: MailShards | None = None  # the night's mail on disk (CollectRequest.mail_dir)

    @property
    def message_count(self) -> int:
        """Messages collected, in memory or in the shards."""
        return self.mail.messages if self.mail else len(self.collected["messages"])

    @property
    def recipient_count(self) -> int:
        return self.mail.recipients if self.mail else len(self.collected["recipients"])


async def gather(*work: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run these together; when one fails (a GuardError ends the night), the others are
    cancelled and awaited, so none is left to print "Task exception was never retrieved"
    with a traceback when the loop closes."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Night:
    """One run's readers, wired to one sink."""

    def __init__(self, session: GraphSession, request: CollectRequest,
                 progress: ProgressSink | None, decoder: ThreadPoolExecutor) -> None:
        self.request = request
        self.sink = RowSink()
        self.directory = DirectoryReader(session, self.sink)
        self.streams = MailboxStreams(session, self.sink, delta_links=request.delta_links,
                                      page_size=request.page_size, progress=progress)
        self.scheduler = BatchScheduler(
            session, decoder, max_batches_in_flight=request.max_batches_in_flight,
            mailbox_concurrency=request.mailbox_concurrency,
            teams_rate=request.teams_requests_per_second)
        self.streams.spawn = self.scheduler.add
        self.spool: MailSpool | None = None
        self.audit = AuditReader(session, self.sink, self.directory,
                                 poll_seconds=request.audit_poll_seconds,
                                 timeout_seconds=request.audit_timeout_seconds)

    async def run(self) -> None:
        request, streams = self.request, self.streams
        directory = self.directory
        scope_group = request.mailbox_scope_group
        groups = tuple(dict.fromkeys((*request.group_names,
                                      *((scope_group,) if scope_group else ()))))
        users = (await gather(directory.read_users(), directory.read_skus(),
                              directory.read_edu_roles(), directory.read_groups(groups)))[0]
        everyone = [(user.get("userPrincipalName") or "", user.get("id", "")) for user in users]
        kinds = (*request.folders, *(("messageRules",) if request.include_rules else ()))
        now = request.until or dt.datetime.now(dt.UTC)
        scope = None
        if scope_group:
            scope = (scope_group, {row[2] for row in self.sink.rows["group_members"]
                                   if row[1] == scope_group})
        mailboxes = streams.asked_tonight(everyone, request.without_mailbox, now, kinds, scope)
        if request.mail_dir is not None:
            self.spool = MailSpool(MailShards.prepare(request.mail_dir),
                                   request.mail_shards or shard_count(len(mailboxes)))
            self.scheduler.on_mail = self.spool.append
        # kind by kind: a $batch holds mail only or no mail (see batch.py), so few are part-full
        todo = [streams.received_stream(upn, user_id, self.window_start(upn, folder), now)
                if folder == RECEIVED else
                streams.mail_stream(upn, user_id, folder, self.window_start(upn, folder))
                for upn, user_id in mailboxes for folder in request.folders]
        if request.include_rules:
            todo.extend(streams.rules_stream(upn, user_id) for upn, user_id in mailboxes)
        if request.include_chats:  # Teams chats need no Exchange mailbox; a guest's chats
            # with the school are read through the school's members
            todo.extend(streams.chats_stream(upn, user_id) for upn, user_id in everyone
                        if not is_guest(upn))
        streams.total += len(todo)
        reading = self.scheduler.run(todo, streams.handle)
        if request.include_audit:
            audit_since = min(request.audit_since or request.since,
                              request.read_marks.get(("", "auditLog"), request.since))
            await gather(reading, self.audit.read(audit_since, now, users))
        else:
            await reading

    def window_start(self, upn: str, folder: str) -> dt.datetime:
        """Where a folder's window starts: its own read mark (else `since`), or earlier when
        the user was last found without a mailbox (their mail since that check)."""
        request = self.request
        start = request.read_marks.get(mark_key(upn, folder), request.since)
        return min(start, request.without_mailbox.get(upn, start))

    def read_marks(self) -> dict[tuple[str, str], dt.datetime]:
        """`until` for each stream read in full (the audit log by its coverage row)."""
        until = self.request.until or dt.datetime.now(dt.UTC)
        streams = self.streams
        keys = streams.read_in_full_keys - streams.not_read_keys
        audit = [row[2] for row in self.sink.rows["coverage"] if row[1] == "auditLog"]
        if audit and set(audit) <= tables.READ_IN_FULL:
            keys.add(("", "auditLog"))
        marks = dict.fromkeys(sorted(keys), until)
        for key, start in streams.held.items():  # left an item out: read again from there
            if key in marks:
                marks[key] = start
        return marks

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every collected table, from the rows and columns the streams kept."""
        sink, export = self.sink, self.request.forwarding_export
        if export is not None:
            sink.rows["mailbox_forwarding"].extend(export.rows)
            sink.cover("", "forwardingExport", "ok", "", len(export.rows))
        frames = {name: frame(name, rows) for name, rows in sink.rows.items()
                  if name not in MAIL_TABLES}
        if self.spool is None:
            batches, self.scheduler.mail = self.scheduler.mail, []
            frames["messages"], frames["recipients"] = mail_tables(
                batches, self.streams.read_in_full, self.streams.skip)
        frames["chats"] = frames["chats"].drop_duplicates("chat_id", ignore_index=True)
        frames["chat_members"] = frames["chat_members"].drop_duplicates(ignore_index=True)
        return frames

    def mail_shards(self) -> MailShards | None:
        """The spooled mail as the night's shards: each shard's rows as `tables` keeps them
        (streams read in full, delta repeats dropped), one shard in memory at a time."""
        spool = self.spool
        if spool is None:
            return None
        spool.close()
        counts = [0, 0]
        for number in range(spool.count):
            messages, recipients = mail_tables(spool.batches(number),
                                               self.streams.read_in_full, self.streams.skip)
            MailShards(spool.directory, spool.count, 0, 0).write_shard(
                number, messages, recipients)
            spool.remove(number)
            counts[0], counts[1] = counts[0] + len(messages), counts[1] + len(recipients)
        shards = MailShards(spool.directory, spool.count, *counts)
        shards.write_manifest()
        return shards


def collect(session: GraphSession, request: CollectRequest,
            progress: ProgressSink | None = None) -> CollectResult:
    """Read everything one night needs; failures of single mailboxes land in coverage."""
    before, batches_before = session.counter.http_requests, session.counter.batches
    # Arrow releases the GIL while it parses: one thread per core beside the event loop
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                            thread_name_prefix="m365guard-decode") as decoder:
        night = _Night(session, request, progress, decoder)
        session.run(night.run())
        frames = night.tables()
        mail = night.mail_shards()
    return CollectResult(
        collected=tables.Collected(**frames),
        delta_links={key: link for key, link in night.streams.delta_links.items()
                     if mark_key(*key) not in night.streams.held},
        requests=session.counter.http_requests - before,
        batch_requests=session.counter.batches - batches_before,
        errors=night.sink.errors,
        skipped=night.sink.skipped,
        round_trips=night.streams.round_trips,
        read_marks=night.read_marks(),
        mail=mail,
    )

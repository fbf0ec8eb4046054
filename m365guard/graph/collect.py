"""Collect one night's data from Graph into `tables.Collected`.

Public API (the nightly pipeline calls exactly this)::

    with open_session(conn) as session:          # conn: settings.ConnectionSettings
        session.granted_roles                     # application permissions in the token
        result = collect(session, CollectRequest(since=..., delta_links=...), progress=None)
    result.collected   # tables.Collected: every table in tables.COLLECTED, coverage included
    result.delta_links # {(mailbox upn, folder): deltaLink} to keep for the next night
    result.requests    # HTTP requests sent;  result.errors: one line per thing not read

How: directory lists (users, skus, education roles, group members) are paged directly; the
per-mailbox work (mail delta per folder, inbox rules, chats) is a set of *streams*, each a chain
of GETs, sent 20 at a time through `$batch` with at most 4 in flight per mailbox and a global cap.
Pages of mail are parsed by Arrow on worker threads while the event loop reads on, then
flattened into tables (wire.py); a stream keeps only its links and counts, and the tables keep
the rows of the streams read in full.
Throttled items wait for their own Retry-After (fractions too), failed mailboxes are recorded in
coverage and the run goes on. Delta rounds follow nextLinks through empty pages and end only at
the deltaLink; an expired delta link (410 / syncStateNotFound) means a full resync of that
folder from `since`. Mailbox-level forwarding comes from the unified audit log (Set-Mailbox) and
an optional Get-EXOMailbox export. Only the fields the rules need are selected, never a body.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import heapq
import itertools
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.security.audit_log_query import AuditLogQuery

from m365guard import tables
from m365guard.errors import ExitCode, GuardError
from m365guard.graph import wire
from m365guard.graph.client import (
    BATCH_LIMIT,
    RETRYABLE_STATUS,
    BatchReply,
    GraphSession,
    batch_replies,
    error_code,
    mail_replies,
    open_session,
)
from m365guard.graph.permissions import REQUIRED_PERMISSIONS

__all__ = ["CollectRequest", "CollectResult", "GraphSession", "collect", "open_session"]

log = logging.getLogger(__name__)

MESSAGE_FIELDS = (
    "id", "internetMessageId", "subject", "sentDateTime",
    "from", "toRecipients", "ccRecipients", "bccRecipients", "hasAttachments",
)
USER_FIELDS = ("id", "userPrincipalName", "mail", "displayName", "accountEnabled",
               "assignedLicenses")
USER_TYPE = "#microsoft.graph.user"
RULE_ACTIONS = ("forwardTo", "redirectTo", "forwardAsAttachmentTo")
NO_MAILBOX_RECHECK = dt.timedelta(days=7)
PER_MAILBOX_IN_FLIGHT = 4  # Outlook's documented concurrency limit per app and mailbox
USER_SLOT = "m365guard-user-slot"  # stands for the user id in a per-mailbox URL template
SYNC_STATE_GONE = frozenset({"syncstatenotfound", "syncstateinvalid", "resyncrequired"})
ProgressSink = Callable[[int, int], None]
MAIL_TABLES = ("messages", "recipients")  # built from the decoded batches (see mail_tables)


@dataclass
class CollectRequest:
    """What to read tonight."""

    since: dt.datetime
    delta_links: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # users found without an Exchange mailbox, and when: not asked again for a week
    # (NO_MAILBOX_RECHECK), then asked for their mail since that check
    without_mailbox: Mapping[str, dt.datetime] = field(default_factory=dict)
    folders: tuple[str, ...] = ("sentitems", "inbox")
    group_names: tuple[str, ...] = ()
    include_rules: bool = True
    include_chats: bool = True
    include_audit: bool = True
    forwarding_export: Path | None = None
    audit_since: dt.datetime | None = None  # audit window start; None = since
    until: dt.datetime | None = None  # audit window end; None = now
    page_size: int = 250
    # $batch POSTs at once: each waits a round trip, so few in flight leave the client idle
    # (medium school, 20 ms latency: 1.0 s with 16 against 1.4 s with 6); Graph limits
    # concurrency per mailbox (PER_MAILBOX_IN_FLIGHT), not per app
    max_batches_in_flight: int = 16
    audit_poll_seconds: float = 0.5  # first wait; doubles up to a minute
    audit_timeout_seconds: float = 1800.0


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


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _address(recipient: Any) -> tuple[str, str]:
    email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
    if not isinstance(email, dict):
        return "", ""
    return _text(email.get("address")), _text(email.get("name"))


def _text(value: Any) -> str:
    """A string field as text: missing or null is "", an unexpected type its str()."""
    return "" if value is None else str(value)


def _items(value: Any) -> list[Any]:
    """A JSON array field; null or any other type reads as empty."""
    return value if isinstance(value, list) else []


class MalformedItem(Exception):
    """One item of a page that cannot be read (wrong types, missing ids)."""


@dataclass
class _Stream:
    """One chain of GETs for one mailbox and kind (a folder's delta round, rules, chats)."""

    mailbox: str
    mailbox_id: str
    kind: str
    start_url: str
    url: str
    headers: dict[str, str]
    delta: bool
    # names the stream's rows in the decoded mail tables; a restart takes a new one, so the
    # rows read before it are left out
    number: int = 0
    resynced: bool = False
    attempts: int = 0
    items: int = 0
    round_trips: int = 0  # replies received, retries and resyncs included
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def restart(self, number: int) -> None:
        self.url, self.resynced, self.items, self.rows = self.start_url, True, 0, {}
        self.number = number


class _Collector:
    """The state of one run: accumulated rows, coverage and the stream scheduler."""

    def __init__(self, session: GraphSession, request: CollectRequest,
                 progress: ProgressSink | None) -> None:
        self.session = session
        self.request = request
        self.progress = progress
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in tables.COLLECTED}
        # each mail $batch's (messages, recipients) tables, as decoded (see mail_replies)
        self.mail: list[tuple[pa.Table, pa.Table]] = []
        self.numbers = itertools.count()  # stream numbers, see _Stream.number
        self.read_in_full: dict[int, _Stream] = {}  # mail streams whose rows are kept
        # Arrow releases the GIL while it parses: one thread per core beside the event loop
        self.decoder = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                          thread_name_prefix="m365guard-decode")
        self.delta_links: dict[tuple[str, str], str] = {}
        self.errors: list[str] = []
        self.finished = 0
        self.total = 0
        self.skipped = 0  # malformed items left out (logged one by one)
        self.url_templates: dict[str, str] = {}  # per-mailbox URLs, see user_url
        self.round_trips: dict[tuple[str, str], int] = {}

    # ---- coverage -------------------------------------------------------------------------
    def cover(self, mailbox: str, kind: str, status: str, reason: str, items: int) -> None:
        self.rows["coverage"].append((mailbox, kind, status, reason, items))
        if status == "failed":
            self.errors.append(f"{mailbox or 'tenant'} {kind}: {reason}")

    def failure_reason(self, kind: str, status: int, body: Any) -> str:
        code, message = error_code(body)
        if status == 403:
            return f"access denied ({code or 403}): grant {REQUIRED_PERMISSIONS[kind]}"
        if status == 404:
            return f"not found ({code or 404})"
        return f"HTTP {status} {code} {message}".strip()

    # ---- directory lists -------------------------------------------------------------------
    async def read_all(self, kind: str, first: Any, mailbox: str = "") -> list[Any] | None:
        """Every item of a paged list (following nextLinks through empty pages)."""
        info: Any = first
        items: list[Any] = []
        while True:
            status, body = await self.session.get_json(info)
            if status != 200:
                self.cover(mailbox, kind, "failed", self.failure_reason(kind, status, body), 0)
                return None
            items.extend(body.get("value", []))
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return items
            info = self.session.get_info(next_link)

    async def read_users(self) -> list[dict[str, Any]]:
        config = RequestConfiguration(
            query_parameters=self.session.client.users.UsersRequestBuilderGetQueryParameters(
                select=list(USER_FIELDS), top=999))
        users = await self.read_all("users", self.session.client.users
                                    .to_get_request_information(config))
        if users is None:
            reason = next((row[3] for row in reversed(self.rows["coverage"])
                           if row[1] == "users"), "")
            if reason.startswith("access denied"):
                raise GuardError(
                    "cannot list users: grant the application permission User.Read.All"
                    " (run `m365guard doctor`)", ExitCode.PERMISSION_MISSING)
            # a 5xx or 429 that outlived every retry: nothing can be read, say so (not 403)
            raise GuardError(f"cannot list users: Graph kept failing ({reason}); nothing was"
                             " read, try again later", ExitCode.HOST_UNREACHABLE)
        good: list[dict[str, Any]] = []
        seen: set[str] = set()
        for user in users:
            if not isinstance(user, dict) or not user.get("id") or not isinstance(
                    user.get("userPrincipalName"), str) or str(user["id"]) in seen:
                self.skipped += 1
                log.warning("skipped a malformed or repeated user (no id or"
                            " userPrincipalName, or an id seen before): %.200r", user)
                continue
            seen.add(str(user["id"]))
            skus = ";".join(_text(lic.get("skuId")) for lic in _items(
                user.get("assignedLicenses")) if isinstance(lic, dict))
            self.rows["users"].append((
                _text(user.get("id")), user["userPrincipalName"], _text(user.get("mail")),
                _text(user.get("displayName")), user.get("accountEnabled") is True, skus))
            good.append(user)
        self.cover("", "users", "ok", "", len(good))
        return good

    async def read_skus(self) -> None:
        builder = self.session.client.subscribed_skus
        config = RequestConfiguration(query_parameters=builder
                                      .SubscribedSkusRequestBuilderGetQueryParameters(
                                          select=["skuId", "skuPartNumber"]))
        skus = await self.read_all("skus", builder.to_get_request_information(config))
        if skus is not None:
            self.rows["skus"].extend((s.get("skuId", ""), s.get("skuPartNumber") or "")
                                     for s in skus)
            self.cover("", "skus", "ok", "", len(skus))

    async def read_edu_roles(self) -> None:
        builder = self.session.client.education.users
        config = RequestConfiguration(query_parameters=builder
                                      .UsersRequestBuilderGetQueryParameters(
                                          select=["id", "primaryRole"], top=999))
        users = await self.read_all("edu_roles", builder.to_get_request_information(config))
        if users is not None:
            self.rows["edu_roles"].extend((u.get("id", ""), u.get("primaryRole") or "")
                                          for u in users)
            self.cover("", "edu_roles", "ok", "", len(users))

    async def read_groups(self) -> None:
        for name in self.request.group_names:
            builder = self.session.client.groups
            escaped = name.replace("'", "''")
            config = RequestConfiguration(query_parameters=builder
                                          .GroupsRequestBuilderGetQueryParameters(
                                              filter=f"displayName eq '{escaped}'",
                                              select=["id", "displayName"]))
            found = await self.read_all("group_members", builder.to_get_request_information(config))
            if found is None:
                continue
            if not found:
                raise GuardError(f"policy names group {name!r}, which the tenant does not have;"
                                 " fix the group name in policies.toml", ExitCode.CONFIG_ERROR)
            for group in found:
                members = self.session.client.groups.by_group_id(group["id"]).transitive_members
                config_members = RequestConfiguration(query_parameters=members
                                                      .TransitiveMembersRequestBuilderGetQueryParameters(
                                                          select=["id"], top=999))
                found_members = await self.read_all(
                    "group_members", members.to_get_request_information(config_members))
                if found_members is None:
                    continue
                users = [m for m in found_members
                         if m.get("@odata.type", USER_TYPE) == USER_TYPE]  # not nested groups
                self.rows["group_members"].extend((group["id"], name, u.get("id", ""))
                                                  for u in users)
                self.cover("", f"group:{name}", "ok", "", len(users))

    # ---- per-mailbox streams -------------------------------------------------------------
    def user_url(self, key: str, user_id: str, build: Callable[[str], str]) -> str:
        """A per-mailbox URL. The SDK's builders expand their URI template once per kind, for a
        placeholder id (an expansion costs ~1 ms: seconds for a large tenant); each user's id
        is then put in its place, encoded as the template's simple expansion `{user%2Did}`
        encodes it (every character but the unreserved ones percent-encoded)."""
        template = self.url_templates.get(key)
        if template is None:
            template = self.url_templates[key] = self.session.relative(build(USER_SLOT))
        return template.replace(USER_SLOT, quote(user_id, safe=""))

    def mail_stream(self, upn: str, user_id: str, folder: str, since: dt.datetime) -> _Stream:
        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).mail_folders \
                .by_mail_folder_id(folder).messages.delta
            config = RequestConfiguration(
                query_parameters=builder.DeltaRequestBuilderGetQueryParameters(
                    select=list(MESSAGE_FIELDS),
                    filter=f"receivedDateTime ge {_iso(since)}"))
            # Graph documents .../messages/delta; the SDK's template writes OData's delta().
            return str(builder.to_get_request_information(config).url) \
                .replace("/delta()?", "/delta?")

        start = self.user_url(f"delta:{folder}:{_iso(since)}", user_id, build)
        saved = self.request.delta_links.get((upn, folder))
        headers = {"Prefer": f"odata.maxpagesize={self.request.page_size}"}
        url = self.session.relative(saved) if saved else start
        return _Stream(upn, user_id, folder, start, url, headers, delta=True,
                       number=next(self.numbers))

    def rules_stream(self, upn: str, user_id: str) -> _Stream:
        def build(slot: str) -> str:
            return str(self.session.client.users.by_user_id(slot).mail_folders
                       .by_mail_folder_id("inbox").message_rules
                       .to_get_request_information().url)

        url = self.user_url("messageRules", user_id, build)
        return _Stream(upn, user_id, "messageRules", url, url, {}, delta=False)

    def chats_stream(self, upn: str, user_id: str) -> _Stream:
        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).chats
            config = RequestConfiguration(
                query_parameters=builder.ChatsRequestBuilderGetQueryParameters(
                    expand=["members"]))
            return str(builder.to_get_request_information(config).url)

        url = self.user_url("chats", user_id, build)
        return _Stream(upn, user_id, "chats", url, url, {}, delta=False)

    def take_page(self, stream: _Stream, body: Any) -> None:
        """Decode one page of inbox rules or chats into the stream's rows; a malformed item is
        logged, counted in `skipped` and left out, and the rest of the page is kept."""
        values = _items(body.get("value")) if isinstance(body, dict) else []
        for item in values:
            rows: dict[str, list[tuple[Any, ...]]] = {}
            try:
                if not isinstance(item, dict):
                    raise MalformedItem(f"an item is {type(item).__name__}, not an object")
                self.take_item(stream, item, rows)
            except (MalformedItem, AttributeError, TypeError, ValueError) as exc:
                self.skip(stream, exc)
                continue
            for name, new_rows in rows.items():
                stream.rows.setdefault(name, []).extend(new_rows)
        stream.items += len(values)

    def skip(self, stream: _Stream, reason: object) -> None:
        self.skipped += 1
        log.warning("skipped a malformed %s item in %s: %s", stream.kind, stream.mailbox, reason)

    def take_item(self, stream: _Stream, item: dict[str, Any],
                  rows: dict[str, list[tuple[Any, ...]]]) -> None:
        """The rows of one inbox rule or chat."""
        if stream.kind == "messageRules":
            out = rows.setdefault("rule_forwards", [])
            actions = item.get("actions")
            actions = actions if isinstance(actions, dict) else {}
            for action in RULE_ACTIONS:
                for recipient in _items(actions.get(action)):
                    address, name = _address(recipient)
                    out.append((stream.mailbox_id, stream.mailbox, _text(item.get("id")),
                                _text(item.get("displayName")), bool(item.get("isEnabled")),
                                action, address, name))
        else:
            chats, members = rows.setdefault("chats", []), rows.setdefault("chat_members", [])
            chat_id = _text(item.get("id"))
            if not chat_id:
                raise MalformedItem("a chat without an id")
            chats.append((chat_id, _text(item.get("chatType")), _text(item.get("topic")),
                          item.get("createdDateTime"), item.get("lastUpdatedDateTime")))
            for member in _items(item.get("members")):
                if not isinstance(member, dict):
                    continue
                members.append((chat_id, _text(member.get("userId")), _text(member.get("email")),
                                _text(member.get("displayName")), _text(member.get("tenantId")),
                                ";".join(_text(r) for r in _items(member.get("roles")))))

    def finish(self, stream: _Stream, status: str, reason: str = "") -> None:
        self.round_trips[(stream.mailbox, stream.kind)] = stream.round_trips
        if status in tables.READ_IN_FULL:
            for name, rows in stream.rows.items():
                self.rows[name].extend(rows)
            if stream.delta:
                self.read_in_full[stream.number] = stream
        self.cover(stream.mailbox, stream.kind, status, reason, stream.items)
        self.finished += 1
        if self.progress is not None:
            self.progress(self.finished, self.total)

    def handle(self, stream: _Stream, reply: BatchReply) -> float | None:
        """Apply one item's reply; returns a delay before the stream's next GET, or None if done."""
        stream.round_trips += 1
        if reply.status == 200:
            stream.attempts = 0
            if stream.delta:
                page = reply.page or wire.MailPage()
                for reason in page.dropped:
                    self.skip(stream, reason)
                stream.items += page.items
                next_link, delta_link = page.next_link, page.delta_link
            else:
                body = reply.body if isinstance(reply.body, dict) else {}
                self.take_page(stream, body)
                next_link, delta_link = body.get("@odata.nextLink"), None
            if next_link:
                stream.url = self.session.relative(next_link)
                return 0.0
            if stream.delta:
                if not delta_link:
                    self.finish(stream, "failed", "delta page with neither nextLink nor deltaLink")
                    return None
                self.delta_links[(stream.mailbox, stream.kind)] = delta_link
            self.finish(stream, "resynced" if stream.resynced else "ok")
            return None
        body = reply.body
        code, _ = error_code(body)
        if stream.delta and (reply.status == 410 or code.lower() in SYNC_STATE_GONE):
            if stream.resynced and stream.url == stream.start_url:
                self.finish(stream, "failed", f"delta resync refused ({code or reply.status})")
                return None
            stream.restart(next(self.numbers))
            return 0.0
        if "mailboxnotenabled" in code.lower():
            self.finish(stream, "no_mailbox", code)
            return None
        if reply.status in RETRYABLE_STATUS:
            stream.attempts += 1
            if stream.attempts >= self.session.retry.attempts:
                self.finish(stream, "failed", f"retries exhausted (HTTP {reply.status} {code})")
                return None
            return self.session.retry.backoff(stream.attempts, reply.retry_after)
        self.finish(stream, "failed", self.failure_reason(
            "messages" if stream.delta else stream.kind, reply.status, body))
        return None

    async def run_streams(self, streams: list[_Stream]) -> None:
        """Send every stream's GETs through $batch until each one is done."""
        self.total += len(streams)
        ready: deque[_Stream] = deque(streams)
        waiting: list[tuple[float, int, _Stream]] = []
        order = itertools.count()
        in_flight: Counter[str] = Counter()
        active: dict[asyncio.Task[list[BatchReply]], list[_Stream]] = {}
        while ready or waiting or active:
            now = time.monotonic()
            while waiting and waiting[0][0] <= now:
                ready.append(heapq.heappop(waiting)[2])
            while ready and len(active) < self.request.max_batches_in_flight:
                picked: list[_Stream] = []
                skipped: list[_Stream] = []
                while ready and len(picked) < BATCH_LIMIT:
                    stream = ready.popleft()
                    # a $batch reads mail only, or no mail (see exchange)
                    if (in_flight[stream.mailbox_id] < PER_MAILBOX_IN_FLIGHT
                            and (not picked or picked[0].delta == stream.delta)):
                        in_flight[stream.mailbox_id] += 1
                        picked.append(stream)
                    else:
                        skipped.append(stream)
                ready.extendleft(reversed(skipped))
                if not picked:
                    break
                active[asyncio.ensure_future(self.exchange(picked))] = picked
            timeout = max(waiting[0][0] - time.monotonic(), 0.0) if waiting else None
            if not active:
                await asyncio.sleep(timeout or 0.0)
                continue
            done, _ = await asyncio.wait(active, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                picked = active.pop(task)
                for stream, reply in zip(picked, task.result(), strict=True):
                    in_flight[stream.mailbox_id] -= 1
                    delay = self.handle(stream, reply)
                    if delay is None:
                        continue
                    if delay <= 0:
                        ready.append(stream)
                    else:
                        heapq.heappush(waiting, (time.monotonic() + delay, next(order), stream))

    async def exchange(self, picked: list[_Stream]) -> list[BatchReply]:
        """One $batch for these streams (all mail, or none): each one's reply. Pages of mail
        are parsed on a worker thread (wire.parse_mail_batch), their rows kept in `mail`
        under the stream numbers."""
        items = [(str(i), stream.url, stream.headers) for i, stream in enumerate(picked)]
        try:
            response = await self.session.post_batch(items)
        except GuardError as exc:
            if exc.exit_code != ExitCode.HOST_UNREACHABLE:
                raise
            # transport errors outlived the request's retries: these streams retry
            # on their own count and end uncovered, rather than ending the whole run
            return [BatchReply(503, {}, None)] * len(picked)
        if not picked[0].delta:
            return batch_replies(response, len(picked))
        parsed = None
        if response.status_code == 200:
            parsed = await asyncio.get_running_loop().run_in_executor(
                self.decoder, wire.parse_mail_batch, response.content)
        replies, messages, recipients = mail_replies(
            response, [stream.number for stream in picked], parsed)
        self.mail.append((messages, recipients))
        return replies

    def skip_recently_without_mailbox(self, mailboxes: list[tuple[str, str]]
                                      ) -> list[tuple[str, str]]:
        """The mailboxes to read tonight. A user found without an Exchange mailbox (a service
        account, an unlicensed leaver) within NO_MAILBOX_RECHECK is not asked again (one
        $batch item per folder a night, which alone would make a quiet night cost more than
        0.1 requests per mailbox); their coverage says so. Once asked again, their mail is read
        from that check on (see `run`), so a mailbox created in between loses nothing."""
        now = self.request.until or dt.datetime.now(dt.UTC)
        asked: list[tuple[str, str]] = []
        for upn, user_id in mailboxes:
            checked = self.request.without_mailbox.get(upn)
            if checked is None or now - checked >= NO_MAILBOX_RECHECK:
                asked.append((upn, user_id))
                continue
            reason = (f"{tables.NOT_ASKED}: no Exchange mailbox on {checked:%Y-%m-%d};"
                      f" asked again from {checked + NO_MAILBOX_RECHECK:%Y-%m-%d}")
            for kind in (*self.request.folders,
                         *(("messageRules",) if self.request.include_rules else ())):
                self.cover(upn, kind, "no_mailbox", reason, 0)
        return asked

    # ---- tables ---------------------------------------------------------------------------
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every collected table, from the rows and columns the streams kept."""
        if self.request.forwarding_export is not None:
            exported = read_forwarding_export(self.request.forwarding_export)
            self.rows["mailbox_forwarding"].extend(exported)
            self.cover("", "forwardingExport", "ok", "", len(exported))
        frames = {name: _frame(name, rows) for name, rows in self.rows.items()
                  if name not in MAIL_TABLES}
        frames["messages"], frames["recipients"] = self.mail_tables()
        frames["chats"] = frames["chats"].drop_duplicates("chat_id", ignore_index=True)
        frames["chat_members"] = frames["chat_members"].drop_duplicates(ignore_index=True)
        return frames

    def mail_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Messages and recipients from the decoded batches: the rows of the mail streams read
        in full, each given its stream's mailbox and folder. A message without an id is left
        out (and reported); one that a delta round listed twice is kept in its last state.
        On a normal night every row is kept: each check then costs a hash, not a copy."""
        kept = pa.array(sorted(self.read_in_full), pa.int64())
        batches, self.mail = self.mail, []
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
        has_id = pc.fill_null(pc.not_equal(messages["message_id"], ""), False)
        for number in _where(messages, pc.invert(has_id))["stream"].to_pylist():
            self.skip(self.read_in_full[number], "a message without an id")
        messages = _where(messages, has_id)
        streams = [self.read_in_full.get(number) for number in range(kept[-1].as_py() + 1)]
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

    # ---- audit log ---------------------------------------------------------------------
    async def read_audit(self) -> None:
        """Set-Mailbox forwarding changes from the unified audit log (a query, then its records)."""
        until = self.request.until or dt.datetime.now(dt.UTC)
        query = AuditLogQuery(
            odata_type="#microsoft.graph.security.auditLogQuery",
            display_name=f"m365guard mailbox forwarding {_iso(until)}",
            filter_start_date_time=self.request.audit_since or self.request.since,
            filter_end_date_time=until,
            operation_filters=["Set-Mailbox"],
        )
        queries = self.session.client.security.audit_log.queries
        status, body = await self.session.get_json(queries.to_post_request_information(query))
        if status not in (200, 201):
            self.cover("", "auditLog", "failed", self.failure_reason("auditLog", status, body), 0)
            return
        query_builder = queries.by_audit_log_query_id(body["id"])
        deadline = time.monotonic() + self.request.audit_timeout_seconds
        pause = self.request.audit_poll_seconds
        state = str(body.get("status", ""))
        while state != "succeeded":
            if state in ("failed", "cancelled") or time.monotonic() > deadline:
                self.cover("", "auditLog", "failed", f"audit log query {state or 'timed out'}", 0)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)
            status, body = await self.session.get_json(query_builder.to_get_request_information())
            state = str(body.get("status", "")) if status == 200 else "failed"
        records = await self.read_all("auditLog",
                                      query_builder.records.to_get_request_information())
        if records is None:
            return
        for record in records:
            self.rows["mailbox_forwarding"].extend(forwarding_from_audit(record))
        self.cover("", "auditLog", "ok", "", len(records))

    # ---- the whole run ---------------------------------------------------------------
    async def run(self) -> None:
        users = (await asyncio.gather(self.read_users(), self.read_skus(),
                                      self.read_edu_roles(), self.read_groups()))[0]
        # kind by kind: a $batch holds mail only or no mail (see exchange), so few are part-full
        everyone = [(user.get("userPrincipalName") or "", user.get("id", "")) for user in users]
        mailboxes = self.skip_recently_without_mailbox(everyone)
        streams = [self.mail_stream(upn, user_id, folder,
                                    min(self.request.since,
                                        self.request.without_mailbox.get(upn, self.request.since)))
                   for upn, user_id in mailboxes for folder in self.request.folders]
        if self.request.include_rules:
            streams.extend(self.rules_stream(upn, user_id) for upn, user_id in mailboxes)
        if self.request.include_chats:  # Teams chats need no Exchange mailbox
            streams.extend(self.chats_stream(upn, user_id) for upn, user_id in everyone)
        if self.request.include_audit:
            await asyncio.gather(self.run_streams(streams), self.read_audit())
        else:
            await self.run_streams(streams)


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
    return [(mailbox, _strip_smtp(address), deliver, "audit", record.get("createdDateTime"),
             str(record.get("id", "")))]


def _strip_smtp(value: Any) -> str:
    text = str(value or "").strip()
    return text[5:] if text.lower().startswith("smtp:") else text


def read_forwarding_export(path: Path) -> list[tuple[Any, ...]]:
    """Rows from `Get-EXOMailbox ... | Export-Csv` (Windows PowerShell's #TYPE line allowed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        observed = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardError(f"forwarding export {path}: cannot read it ({exc});"
                         " export it again with Export-Csv -Encoding UTF8",
                         ExitCode.INPUT_FILE_ERROR) from exc
    lines = [line for line in text.splitlines() if not line.startswith("#TYPE")]
    reader = csv.DictReader(lines)
    columns = set(reader.fieldnames or [])
    identity = next((c for c in ("UserPrincipalName", "PrimarySmtpAddress") if c in columns), None)
    if identity is None or not columns & {"ForwardingSmtpAddress", "ForwardingAddress"}:
        raise GuardError(
            f"forwarding export {path}: needs columns UserPrincipalName, ForwardingSmtpAddress,"
            " ForwardingAddress, DeliverToMailboxAndForward (see docs/graph-access.md)",
            ExitCode.INPUT_FILE_ERROR)
    rows: list[tuple[Any, ...]] = []
    for number, row in enumerate(reader, start=1):
        deliver = str(row.get("DeliverToMailboxAndForward") or "").lower() == "true"
        for name in ("ForwardingSmtpAddress", "ForwardingAddress"):
            address = _strip_smtp(row.get(name))
            if address:
                rows.append((row[identity] or "", address, deliver, "export", observed,
                             f"{path.name}:{number}"))
    return rows


def _frame(name: str, rows: Iterable[tuple[Any, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(tables.SCHEMAS[name]))
    return tables.conform(name, frame) if len(frame) else tables.empty(name)


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
            try:
                data[column] = pd.arrays.ArrowExtensionArray(
                    values.cast(pa.timestamp("us", tz="UTC")))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                data[column] = values.to_pylist()
        else:
            data[column] = pd.arrays.ArrowExtensionArray(values)
    return tables.conform(name, pd.DataFrame(data, copy=False))


def collect(session: GraphSession, request: CollectRequest,
            progress: ProgressSink | None = None) -> CollectResult:
    """Read everything one night needs; failures of single mailboxes land in coverage."""
    collector = _Collector(session, request, progress)
    before, batches_before = session.counter.http_requests, session.counter.batches
    with collector.decoder:
        session.run(collector.run())
        frames = collector.tables()
    return CollectResult(
        collected=tables.Collected(**frames),
        delta_links=collector.delta_links,
        requests=session.counter.http_requests - before,
        batch_requests=session.counter.batches - batches_before,
        errors=collector.errors,
        skipped=collector.skipped,
        round_trips=collector.round_trips,
    )


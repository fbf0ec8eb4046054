"""One `$batch` scheduler for every per-mailbox stream (mail delta rounds, inbox rules, chats).

A stream is a chain of GETs; the scheduler sends up to 20 streams' next GETs in one `$batch`,
keeps `max_batches_in_flight` batches in flight and at most `mailbox_concurrency` requests per
mailbox (Outlook's documented limit is 4 per app and mailbox), and hands each item's reply to
the caller's `handle`, which says when the stream's next GET may go (or that it is done).
Pages of mail are parsed by Arrow on worker threads (wire.parse_mail_batch) while the loop
reads on; their rows are kept here, batch by batch, under the stream numbers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from m365guard.errors import ExitCode, GuardError
from m365guard.graph import wire
from m365guard.graph.client import BATCH_LIMIT, GraphSession
from m365guard.graph.replies import BatchReply, batch_replies, mail_replies

# a reply applied to its stream: seconds before the stream's next GET, or None when it is done
ReplyHandler = Callable[["Stream", BatchReply], float | None]


@dataclass
class Stream:
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
    chat_id: str = ""  # the chat whose full member list a chatMembers stream reads
    hidden_rules: list[str] = field(default_factory=list)  # read-only rules Graph cannot show
    # a plain listing of the window (no delta): read when a filtered delta round may have
    # stopped at FILTERED_DELTA_CAP; its pages end without a deltaLink
    listing: bool = False
    since: dt.datetime | None = None  # the window start a mail stream's filter uses
    # a received-mail listing (GET /users/{id}/messages): the id of the mailbox's Sent Items,
    # whose messages it leaves to the sentitems delta ("" when it listed nothing)
    exclude_folder: str = ""
    dropped: list[tuple[str, str]] = field(default_factory=list)  # its items left out, so far
    paced: bool = False  # a Teams GET: at most `teams_rate` a second (see Pacer)

    def restart(self, number: int) -> None:
        self.url, self.resynced, self.items, self.rows = self.start_url, True, 0, {}
        self.number = number


class Pacer:
    """At most `rate` requests in any second as the server counts them, each `$batch` item on
    its own (json-batching.md). Teams' "other GETs" (list chats, a chat's members) are limited
    to 30 a second per app per tenant (concepts/throttling-limits.md,
    includes/throttling-teams.md). Graph counts an item when it handles it, somewhere between
    sending and the answer, so an item holds its place from being sent until a second after
    its answer: however the round trips vary, no second at the server sees more than `rate`."""

    def __init__(self, rate: float) -> None:
        self.limit = max(int(rate), 1)
        self.in_flight = 0
        self.answered: deque[float] = deque()  # when each of the last second's answers came

    def free(self, now: float) -> int:
        while self.answered and now - self.answered[0] >= 1.0:
            self.answered.popleft()
        return self.limit - self.in_flight - len(self.answered)

    def spend(self, count: int) -> None:
        self.in_flight += count

    def done(self, count: int, now: float) -> None:
        self.in_flight -= count
        self.answered.extend([now] * count)

    def next_free(self) -> float | None:
        """When a place frees (monotonic time); None: when an answer comes."""
        return self.answered[0] + 1.0 if self.answered else None


class BatchScheduler:
    """Sends streams' GETs through `$batch` until each is done; keeps the mail pages' tables."""

    def __init__(self, session: GraphSession, decoder: ThreadPoolExecutor, *,
                 max_batches_in_flight: int, mailbox_concurrency: int,
                 teams_rate: float = 25.0) -> None:
        self.session = session
        self.pacer = Pacer(teams_rate)
        self.paced_out = False  # the last pick left Teams GETs for the pacer
        self.decoder = decoder  # Arrow releases the GIL while it parses
        self.max_batches_in_flight = max_batches_in_flight
        self.mailbox_concurrency = mailbox_concurrency
        # each mail $batch's (messages, recipients) tables, as decoded (see mail_replies)
        self.mail: list[tuple[pa.Table, pa.Table]] = []
        # where each decoded mail batch goes: kept in `mail`, or a sink.MailSpool's disk
        self.on_mail: Callable[[tuple[pa.Table, pa.Table]], None] = self.mail.append
        self.ready: deque[Stream] = deque()

    def add(self, stream: Stream) -> None:
        """A stream found while reading (a chat's full member list), sent with the rest."""
        self.ready.append(stream)

    async def run(self, streams: list[Stream], handle: ReplyHandler) -> None:
        """Send every stream's GETs until `handle` says each one is done."""
        ready = self.ready
        ready.extend(streams)
        waiting: list[tuple[float, int, Stream]] = []
        order = itertools.count()
        in_flight: Counter[str] = Counter()
        active: dict[asyncio.Task[list[BatchReply]], list[Stream]] = {}
        while ready or waiting or active:
            now = time.monotonic()
            while waiting and waiting[0][0] <= now:
                ready.append(heapq.heappop(waiting)[2])
            while ready and len(active) < self.max_batches_in_flight:
                picked = self._pick(ready, in_flight)
                if not picked:
                    break
                active[asyncio.ensure_future(self.exchange(picked))] = picked
            wakes = [waiting[0][0]] if waiting else []
            free_at = self.pacer.next_free() if self.paced_out else None
            if free_at is not None:  # ready Teams GETs wait for the pacer
                wakes.append(free_at)
            timeout = max(min(wakes) - time.monotonic(), 0.0) if wakes else None
            if not active:
                await asyncio.sleep(timeout or 0.0)
                continue
            done, _ = await asyncio.wait(active, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                picked = active.pop(task)
                self.pacer.done(sum(stream.paced for stream in picked), time.monotonic())
                for stream, reply in zip(picked, task.result(), strict=True):
                    in_flight[stream.mailbox_id] -= 1
                    delay = handle(stream, reply)
                    if delay is None:
                        continue
                    if delay <= 0:
                        ready.append(stream)
                    else:
                        heapq.heappush(waiting, (time.monotonic() + delay, next(order), stream))

    def _pick(self, ready: deque[Stream], in_flight: Counter[str]) -> list[Stream]:
        """Up to BATCH_LIMIT ready streams, all mail or none, within each mailbox's limit and
        the pacer's."""
        picked: list[Stream] = []
        skipped: list[Stream] = []
        now = time.monotonic()
        paced = self.pacer.free(now)
        self.paced_out = False
        while ready and len(picked) < BATCH_LIMIT:
            stream = ready.popleft()
            if stream.paced and paced <= 0:
                self.paced_out = True
                skipped.append(stream)
            elif (in_flight[stream.mailbox_id] < self.mailbox_concurrency
                    and (not picked or picked[0].delta == stream.delta)):
                in_flight[stream.mailbox_id] += 1
                picked.append(stream)
                paced -= stream.paced
            else:
                skipped.append(stream)
        ready.extendleft(reversed(skipped))
        self.pacer.spend(sum(stream.paced for stream in picked))
        return picked

    async def exchange(self, picked: list[Stream]) -> list[BatchReply]:
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
        self.on_mail((messages, recipients))
        return replies

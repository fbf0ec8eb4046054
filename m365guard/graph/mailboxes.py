"""The per-mailbox streams: what each one GETs first and what each reply does to it.

Sent mail is a delta round on Sent Items (nextLinks through empty pages, ending only at the
deltaLink; an expired link, 410 / syncStateNotFound, restarts the folder from the window
start). Received mail is one listing of the whole mailbox's window (`GET /users/{id}/messages`,
every folder a rule or a person filed it in, Junk Email and Deleted Items too), leaving out
drafts and the Sent Items copies (that folder's id is asked once the listing holds mail);
docs/graph-access.md says why. Inbox rules and chats are plain paged lists. Throttled items
wait for their own Retry-After (fractions too); a mailbox that fails is recorded in coverage
and the run goes on. Only the fields the rules need are selected, never a body.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from kiota_abstractions.base_request_configuration import RequestConfiguration

from m365guard import tables
from m365guard.graph import wire
from m365guard.graph.audit import iso
from m365guard.graph.batch import Stream
from m365guard.graph.client import RETRYABLE_STATUS, GraphSession
from m365guard.graph.pages import CHAT_MEMBERS, take_page
from m365guard.graph.replies import BatchReply, error_code
from m365guard.graph.sink import RowSink, failure_reason

MESSAGE_FIELDS = (
    "id", "internetMessageId", "subject", "sentDateTime",
    "from", "toRecipients", "ccRecipients", "bccRecipients", "hasAttachments",
)
# what a received-mail listing adds: which folder holds a message, and whether it is a draft
FOLDER_FIELDS = ("parentFolderId", "isDraft")
RECEIVED = "inbox"  # the kind of the received-mail listing: mail in any folder but Sent Items
SENT_FOLDER = "sentFolderId"  # the kind of the lookup of a mailbox's Sent Items id
NO_MAILBOX_RECHECK = dt.timedelta(days=7)
USER_SLOT = "m365guard-user-slot"  # stands for the user id in a per-mailbox URL template
SYNC_STATE_GONE = frozenset({"syncstatenotfound", "syncstateinvalid", "resyncrequired"})
# delta-query-messages.md: "Applying $filter in a delta query returns only up to 5,000
# messages"; every round we make is filtered (the filter lives on in the deltaLink)
FILTERED_DELTA_CAP = 5000
ProgressSink = Callable[[int, int], None]
# a B2B guest's UPN carries #EXT# (user-list.md); their mailbox, if any, is in their own tenant
GUEST_MARK = "#EXT#"
GUEST_REASON = f"{tables.NOT_ASKED}: a guest ({GUEST_MARK}) has no mailbox in this tenant"


def mark_key(mailbox: str, kind: str) -> tuple[str, str]:
    """The read-mark key of a stream: (mailbox upn lowercased, "" tenant-wide; its kind, a
    chat's member list counting as the mailbox's chats)."""
    return mailbox.lower(), "chats" if kind == CHAT_MEMBERS else kind


def is_guest(upn: str) -> bool:
    """A B2B guest account (never read: it has no mailbox or chats list in this tenant)."""
    return GUEST_MARK in upn.upper()


class MailboxStreams:
    """Builds the streams of one night and applies their replies (see `handle`)."""

    def __init__(self, session: GraphSession, sink: RowSink, *,
                 delta_links: Mapping[tuple[str, str], str], page_size: int,
                 progress: ProgressSink | None) -> None:
        self.session = session
        self.sink = sink
        self.saved_links = delta_links
        self.page_size = page_size
        self.progress = progress
        self.numbers = itertools.count()  # stream numbers, see Stream.number
        self.read_in_full: dict[int, Stream] = {}  # mail streams whose rows are kept
        self.delta_links: dict[tuple[str, str], str] = {}
        self.round_trips: dict[tuple[str, str], int] = {}
        self.url_templates: dict[str, str] = {}  # per-mailbox URLs, see user_url
        self.finished = 0
        self.total = 0
        self.spawn: Callable[[Stream], None] = lambda stream: None  # the scheduler's add
        # (mailbox upn lowercased, kind) of each stream read in full, and of each that was not
        # (a later success of the same kind, e.g. a window listing, cannot undo a failure)
        self.read_in_full_keys: set[tuple[str, str]] = set()
        self.not_read_keys: set[tuple[str, str]] = set()
        self.members_asked: set[str] = set()  # chats whose full member list is being read
        # per mailbox id: its Sent Items id, "" while asked, None when it could not be read
        # (with why); received-mail listings that ended before the answer wait here
        self.sent_folders: dict[str, str | None] = {}
        self.sent_folder_failure: dict[str, str] = {}
        self.parked: dict[str, Stream] = {}
        self.held: dict[tuple[str, str], dt.datetime] = {}  # see skip

    def user_url(self, key: str, user_id: str, build: Callable[[str], str]) -> str:
        """A per-mailbox URL. The SDK's builders expand their URI template once per kind, for a
        placeholder id (an expansion costs ~1 ms: seconds for a large tenant); each user's id
        is then put in its place, encoded as the template's simple expansion `{user%2Did}`
        encodes it (every character but the unreserved ones percent-encoded)."""
        template = self.url_templates.get(key)
        if template is None:
            template = self.url_templates[key] = self.session.relative(build(USER_SLOT))
        return template.replace(USER_SLOT, quote(user_id, safe=""))

    def mail_stream(self, upn: str, user_id: str, folder: str, since: dt.datetime) -> Stream:
        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).mail_folders \
                .by_mail_folder_id(folder).messages.delta
            config = RequestConfiguration(
                query_parameters=builder.DeltaRequestBuilderGetQueryParameters(
                    select=list(MESSAGE_FIELDS),
                    filter=f"receivedDateTime ge {iso(since)}"))
            # Graph documents .../messages/delta; the SDK's template writes OData's delta().
            return str(builder.to_get_request_information(config).url) \
                .replace("/delta()?", "/delta?")

        start = self.user_url(f"delta:{folder}:{iso(since)}", user_id, build)
        saved = self.saved_links.get((upn, folder))
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}"}
        url = self.session.relative(saved) if saved else start
        return Stream(upn, user_id, folder, start, url, headers, delta=True,
                      number=next(self.numbers), since=since)

    def window_stream(self, cut: Stream) -> Stream:
        """The whole window of a folder whose delta round may have been cut at
        FILTERED_DELTA_CAP, as a plain listing (user-list-messages.md: no such limit)."""
        folder, since = cut.kind, cut.since or dt.datetime.now(dt.UTC)

        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).mail_folders \
                .by_mail_folder_id(folder).messages
            config = RequestConfiguration(
                query_parameters=builder.MessagesRequestBuilderGetQueryParameters(
                    select=list(MESSAGE_FIELDS),
                    filter=f"receivedDateTime ge {iso(since)}"))
            return str(builder.to_get_request_information(config).url)

        url = self.user_url(f"list:{folder}:{iso(since)}", cut.mailbox_id, build)
        return Stream(cut.mailbox, cut.mailbox_id, folder, url, url, cut.headers, delta=True,
                      number=next(self.numbers), listing=True, since=since)

    def received_stream(self, upn: str, user_id: str, since: dt.datetime,
                        until: dt.datetime) -> Stream:
        """Received mail of the window [since, until] in every folder of the mailbox, one
        listing (user-list-messages.md: the whole mailbox; no cap like a filtered delta's)."""
        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).messages
            config = RequestConfiguration(
                query_parameters=builder.MessagesRequestBuilderGetQueryParameters(
                    select=[*MESSAGE_FIELDS, *FOLDER_FIELDS],
                    filter=f"receivedDateTime ge {iso(since)} and receivedDateTime le"
                           f" {iso(until)}"))
            return str(builder.to_get_request_information(config).url)

        url = self.user_url(f"received:{iso(since)}:{iso(until)}", user_id, build)
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}"}
        return Stream(upn, user_id, RECEIVED, url, url, headers, delta=True,
                      number=next(self.numbers), listing=True, since=since)

    def sent_folder_stream(self, upn: str, user_id: str) -> Stream:
        """The mailbox's Sent Items id (mailfolder-get.md, by its well-known name)."""
        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).mail_folders \
                .by_mail_folder_id("sentitems")
            config = RequestConfiguration(
                query_parameters=builder.MailFolderItemRequestBuilderGetQueryParameters(
                    select=["id"]))
            return str(builder.to_get_request_information(config).url)

        url = self.user_url(SENT_FOLDER, user_id, build)
        return Stream(upn, user_id, SENT_FOLDER, url, url, {}, delta=False)

    def _sent_folder_found(self, stream: Stream, folder_id: str | None, reason: str) -> None:
        """The lookup's answer: a listing waiting for it ends now."""
        self.sent_folders[stream.mailbox_id] = folder_id
        if folder_id is None:
            self.sent_folder_failure[stream.mailbox_id] = reason
        self.finished += 1
        parked = self.parked.pop(stream.mailbox_id, None)
        if parked is not None:
            self._end_received(parked)

    def _end_received(self, stream: Stream) -> None:
        """A received-mail listing read to its end, once its Sent Items id is known."""
        if stream.items == 0:
            self.finish(stream, "ok")
            return
        folder_id = self.sent_folders.get(stream.mailbox_id)
        if folder_id == "":
            self.parked[stream.mailbox_id] = stream
        elif folder_id is None:
            self.finish(stream, "failed", "Sent Items not readable, so received mail cannot be"
                        f" told from sent: {self.sent_folder_failure[stream.mailbox_id]}")
        else:
            stream.exclude_folder = folder_id
            for folder, reason in stream.dropped:  # a Sent Items item is the delta's to count
                if folder != folder_id:
                    self.skip(stream, reason)
            self.finish(stream, "ok")

    def rules_stream(self, upn: str, user_id: str) -> Stream:
        def build(slot: str) -> str:
            return str(self.session.client.users.by_user_id(slot).mail_folders
                       .by_mail_folder_id("inbox").message_rules
                       .to_get_request_information().url)

        url = self.user_url("messageRules", user_id, build)
        return Stream(upn, user_id, "messageRules", url, url, {}, delta=False)

    def chats_stream(self, upn: str, user_id: str) -> Stream:
        def build(slot: str) -> str:
            builder = self.session.client.users.by_user_id(slot).chats
            config = RequestConfiguration(
                query_parameters=builder.ChatsRequestBuilderGetQueryParameters(
                    expand=["members"]))
            return str(builder.to_get_request_information(config).url)

        url = self.user_url("chats", user_id, build)
        return Stream(upn, user_id, "chats", url, url, {}, delta=False, paced=True)

    def chat_members_stream(self, upn: str, chat_id: str) -> Stream:
        """One chat's full member list (chat-list-members.md: one page, no query options)."""
        def build(slot: str) -> str:
            return str(self.session.client.chats.by_chat_id(slot).members
                       .to_get_request_information().url)

        url = self.user_url(CHAT_MEMBERS, chat_id, build)
        return Stream(upn, chat_id, CHAT_MEMBERS, url, url, {}, delta=False, chat_id=chat_id,
                      paced=True)

    def skip(self, stream: Stream, reason: object) -> None:
        """One item of the stream left out (counted and logged). A mail stream's mark then
        stays at its window's start (`held`) and its delta link is not kept: the next night
        reads the window again, so a message served unreadably once is read when it reads."""
        self.sink.skip(stream.kind, stream.mailbox, reason)
        if stream.delta and stream.since is not None:
            key = mark_key(stream.mailbox, stream.kind)
            self.held[key] = min(stream.since, self.held.get(key, stream.since))

    def finish(self, stream: Stream, status: str, reason: str = "") -> None:
        if stream.kind == SENT_FOLDER:  # a lookup, not a stream of its own in coverage
            self._sent_folder_found(stream, None, reason or status)
            return
        self.round_trips[(stream.mailbox, stream.kind)] = stream.round_trips
        if status in tables.READ_IN_FULL and stream.hidden_rules:
            # the rules Graph shows are kept; the mailbox is not clean while some are hidden
            for name, rows in stream.rows.items():
                self.sink.rows[name].extend(rows)
            status, reason = "failed", (
                f"{len(stream.hidden_rules)} inbox rule(s) not readable through Graph"
                f" (isReadOnly, made by an admin tool: {', '.join(stream.hidden_rules[:3])});"
                " check them with Get-InboxRule in Exchange Online PowerShell")
        elif status in tables.READ_IN_FULL:
            for name, rows in stream.rows.items():
                self.sink.rows[name].extend(rows)
            if stream.delta:
                self.read_in_full[stream.number] = stream
        key = mark_key(stream.mailbox, stream.kind)
        if status in tables.READ_IN_FULL:
            self.read_in_full_keys.add(key)
        else:
            self.not_read_keys.add(key)
        self.sink.cover(stream.mailbox, stream.kind, status, reason, stream.items)
        self.finished += 1
        if self.progress is not None:
            self.progress(self.finished, self.total)

    def handle(self, stream: Stream, reply: BatchReply) -> float | None:
        """Apply one item's reply; returns a delay before the stream's next GET, or None if done."""
        stream.round_trips += 1
        if reply.status == 200:
            return self._page(stream, reply)
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
            wait = self.session.retry.backoff(stream.attempts, reply.retry_after)
            if not self.session.retry.fits(wait):
                self.finish(stream, "failed", f"HTTP {reply.status} {code}: Retry-After"
                            f" {wait:.0f} s would pass the run deadline".replace("  ", " "))
                return None
            return wait
        # a chat's members are read with the chats' permission (chat-list-members.md lists
        # Chat.ReadBasic.All among those that serve it)
        kind = "messages" if stream.delta else "chats" if stream.kind == CHAT_MEMBERS \
            else stream.kind
        self.finish(stream, "failed", failure_reason(kind, reply.status, body,
                                                     self.session.granted_roles))
        return None

    def _page(self, stream: Stream, reply: BatchReply) -> float | None:
        stream.attempts = 0
        if stream.kind == SENT_FOLDER:
            folder_id = reply.body.get("id") if isinstance(reply.body, dict) else None
            self._sent_folder_found(stream, folder_id if isinstance(folder_id, str) and folder_id
                                    else None, "a Sent Items folder without an id")
            return None
        if stream.delta:
            page = reply.page or wire.MailPage()
            if stream.kind == RECEIVED:  # counted once its Sent Items id is known
                stream.dropped.extend(page.dropped)
            else:
                for _, reason in page.dropped:
                    self.skip(stream, reason)
            stream.items += page.items
            next_link, delta_link = page.next_link, page.delta_link
            if (stream.kind == RECEIVED and page.items
                    and stream.mailbox_id not in self.sent_folders):
                self.sent_folders[stream.mailbox_id] = ""
                self.total += 1
                self.spawn(self.sent_folder_stream(stream.mailbox, stream.mailbox_id))
        else:
            body: Any = reply.body if isinstance(reply.body, dict) else {}
            for chat_id in take_page(stream, body, self.skip):
                if chat_id not in self.members_asked:
                    self.members_asked.add(chat_id)
                    self.total += 1
                    self.spawn(self.chat_members_stream(stream.mailbox, chat_id))
            next_link, delta_link = body.get("@odata.nextLink"), None
        if next_link:
            stream.url = self.session.relative(next_link)
            return 0.0
        if stream.delta and not stream.listing:
            if not delta_link:
                self.finish(stream, "failed", "delta page with neither nextLink nor deltaLink")
                return None
            self.delta_links[(stream.mailbox, stream.kind)] = delta_link
            if stream.items >= FILTERED_DELTA_CAP:  # may be cut: read the window in full
                self.total += 1
                self.spawn(self.window_stream(stream))
        if stream.kind == RECEIVED:
            self._end_received(stream)
            return None
        self.finish(stream, "resynced" if stream.resynced else "ok")
        return None

    def asked_tonight(self, mailboxes: list[tuple[str, str]],
                      without_mailbox: Mapping[str, dt.datetime], now: dt.datetime,
                      kinds: tuple[str, ...], scope: tuple[str, set[str]] | None = None
                      ) -> list[tuple[str, str]]:
        """The mailboxes to read tonight. A user found without an Exchange mailbox (a service
        account, an unlicensed leaver) within NO_MAILBOX_RECHECK is not asked again (one
        $batch item per folder a night, which alone would make a quiet night cost more than
        0.1 requests per mailbox); their coverage says so, for each of `kinds`. Once asked
        again, their mail is read from that check on, so a mailbox created in between loses
        nothing. Guests are never asked: they have no mailbox here; nor are mailboxes outside
        the policy's scope group (`scope`: its name and member ids), reported as excluded."""
        asked: list[tuple[str, str]] = []
        for upn, user_id in mailboxes:
            if scope is not None and user_id not in scope[1]:
                reason = (f"{tables.NOT_ASKED}: excluded by policy (not in [collect]"
                          f" mailbox_scope_group {scope[0]!r})")
                for kind in kinds:
                    self.sink.cover(upn, kind, "no_mailbox", reason, 0)
                continue
            if is_guest(upn):
                for kind in kinds:
                    self.sink.cover(upn, kind, "no_mailbox", GUEST_REASON, 0)
                continue
            checked = without_mailbox.get(upn)
            if checked is None or now - checked >= NO_MAILBOX_RECHECK:
                asked.append((upn, user_id))
                continue
            reason = (f"{tables.NOT_ASKED}: no Exchange mailbox on {checked:%Y-%m-%d};"
                      f" asked again from {checked + NO_MAILBOX_RECHECK:%Y-%m-%d}")
            for kind in kinds:
                self.sink.cover(upn, kind, "no_mailbox", reason, 0)
        return asked

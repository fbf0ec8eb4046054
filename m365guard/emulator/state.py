"""The emulated tenant's data and operations, with no HTTP (the moto "backend").

A `Tenant` is loaded from the documented tenant file format (docs/tenant-format.md) into the
resources of resources.py, and answers for them at its clock: delta rounds and their tokens,
chats, the audit log's queries, and moving the clock.
"""

from __future__ import annotations

import gzip
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from m365guard.emulator.resources import (
    FOLDER_DATE_FIELD,
    WELL_KNOWN_FOLDERS,
    Folder,
    Json,
    Mailbox,
    Message,
    Window,
    format_time,
    mailbox_folders,
    parse_time,
    public,
)
from m365guard.errors import ExitCode, GuardError

DELTA_TOKEN_LIFETIME = timedelta(days=30)


@dataclass
class DeltaState:
    """What one delta round saw: the clock when it finished and its optional filter."""

    user_id: str
    folder: str
    synced_at: float
    since: float | None  # receivedDateTime lower bound from the first round's $filter


@dataclass
class AuditQuery:
    """A created audit log query: its resource, how often it was polled, its matched records."""

    resource: Json
    records: list[Json]
    polls: int = 0


class Tenant:
    """One school's tenant: directory, mailboxes, chats, audit log and the clock."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        if doc.get("formatVersion") != 1:
            raise GuardError(
                "tenant file: formatVersion must be 1 (see docs/tenant-format.md)",
                ExitCode.INPUT_FILE_ERROR,
            )
        info = doc["tenant"]
        self.id: str = info["id"]
        self.display_name: str = info.get("displayName", "")
        self.domains: list[str] = list(info.get("verifiedDomains", []))
        self._now = parse_time(doc["clock"]["start"])
        self.skus: list[Json] = [public(s) for s in doc.get("subscribedSkus", [])]
        self.users: list[Json] = [public(u) for u in doc.get("users", [])]
        # a B2B guest (#EXT# in the UPN) has no mailbox in this tenant: Exchange answers
        # MailboxNotEnabledForRESTAPI, as for any user without one
        self.has_mailbox = {u["id"]: bool(u.get("x-hasMailbox", "#EXT#" not in str(
            u.get("userPrincipalName", "")).upper())) for u in doc["users"]}
        self.users_by_id = {u["id"]: u for u in self.users}
        self.users_by_upn = {u["userPrincipalName"].lower(): u for u in self.users}
        self.groups: list[Json] = [public(g) for g in doc.get("groups", [])]
        self.group_members = {g["id"]: list(g.get("x-members", [])) for g in doc.get("groups", [])}
        self.groups_by_id = {g["id"]: g for g in self.groups}
        self.education_users: list[Json] = [public(e) for e in doc.get("educationUsers", [])]
        self.mailboxes: dict[str, Mailbox] = {}
        for user_id, box in doc.get("mailboxes", {}).items():
            folders = mailbox_folders(user_id, box)
            rules = [(Window.of(r), public(r)) for r in box.get("messageRules", [])]
            settings = box.get("mailboxSettings", {})
            self.mailboxes[user_id] = Mailbox(user_id, folders, rules, settings)
        self.chats: list[tuple[Window, Json, list[tuple[Window, Json]]]] = [
            (Window.of(c), public({k: v for k, v in c.items() if k != "members"}),
             [(Window.of(m), public(m)) for m in c.get("members", [])])
            for c in doc.get("chats", [])
        ]
        self.audit_records: list[tuple[float, Window, Json]] = sorted(
            ((parse_time(r["createdDateTime"]).timestamp(), Window.of(r), public(r))
             for r in doc.get("auditRecords", [])),
            key=lambda item: item[0],
        )
        self.delta_states: dict[str, DeltaState] = {}
        self.audit_queries: dict[str, AuditQuery] = {}
        self._lock = threading.Lock()

    # -- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Tenant:
        """Build from a parsed tenant document; a malformed one is the user's input error."""
        try:
            return cls(doc)
        except GuardError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GuardError(
                f"tenant document is malformed ({type(exc).__name__}: {exc}); "
                "see docs/tenant-format.md",
                ExitCode.INPUT_FILE_ERROR,
            ) from exc

    @classmethod
    def load(cls, path: Path) -> Tenant:
        """Read a .json or .json.gz tenant file."""
        try:
            raw = path.read_bytes()
            if path.name.endswith(".gz"):
                raw = gzip.decompress(raw)
            doc = orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError, gzip.BadGzipFile) as exc:
            raise GuardError(
                f"cannot read tenant file {path}: {exc}", ExitCode.INPUT_FILE_ERROR
            ) from exc
        if not isinstance(doc, dict):
            raise GuardError(f"tenant file {path}: not a JSON object", ExitCode.INPUT_FILE_ERROR)
        return cls.from_document(doc)

    def to_document(self) -> Json:
        """The tenant in the file format (including bookkeeping), with the current clock."""
        users = [{**u, "x-hasMailbox": self.has_mailbox[u["id"]]} for u in self.users]
        groups = [{**g, "x-members": self.group_members[g["id"]]} for g in self.groups]
        mailboxes: Json = {}
        for user_id, box in self.mailboxes.items():
            well_known = dict(WELL_KNOWN_FOLDERS)
            entry: Json = {name: [_with_bookkeeping(m) for m in f.messages]
                           for name, f in box.folders.items()
                           if name in well_known and (f.messages or name in FOLDER_DATE_FIELD)}
            made = [{"id": f.id, "displayName": f.display_name, "parentFolderId": f.parent_id,
                     **_window_keys(f.window),
                     "messages": [_with_bookkeeping(m) for m in f.messages]}
                    for name, f in box.folders.items() if name not in well_known]
            if made:
                entry["folders"] = made
            entry["messageRules"] = [{**r, **_window_keys(w)} for w, r in box.rules]
            entry["mailboxSettings"] = box.settings
            mailboxes[user_id] = entry
        chats = [{**c, **_window_keys(w), "members": [{**m, **_window_keys(mw)} for mw, m in ms]}
                 for w, c, ms in self.chats]
        return {
            "formatVersion": 1,
            "tenant": {"id": self.id, "displayName": self.display_name,
                       "verifiedDomains": self.domains},
            "clock": {"start": format_time(self._now)},
            "subscribedSkus": self.skus,
            "users": users,
            "groups": groups,
            "educationUsers": self.education_users,
            "mailboxes": mailboxes,
            "chats": chats,
            "auditRecords": [{**r, **_window_keys(w)} for _, w, r in self.audit_records],
        }

    def save(self, path: Path) -> None:
        """Write the tenant file (gzip when the name ends in .gz)."""
        raw = orjson.dumps(self.to_document())
        path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)

    # -- the clock ---------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The tenant's current time."""
        return self._now

    @property
    def now_epoch(self) -> float:
        return self._now.timestamp()

    def advance_to(self, moment: datetime) -> None:
        """Move the clock forward (never back: Graph has no time travel)."""
        if moment.tzinfo is None:
            raise ValueError("advance_to needs an aware datetime")
        if moment < self._now:
            raise ValueError(f"clock cannot go back from {self._now} to {moment}")
        self._now = moment.astimezone(UTC)

    # -- directory ---------------------------------------------------------------------------

    def user(self, id_or_upn: str) -> Json | None:
        """Graph addresses users by id or by userPrincipalName."""
        return self.users_by_id.get(id_or_upn) or self.users_by_upn.get(id_or_upn.lower())

    def transitive_members(self, group_id: str) -> list[Json]:
        """Users and groups reachable from the group, each once, nested groups expanded."""
        seen: set[str] = set()
        found: list[Json] = []
        pending = list(self.group_members.get(group_id, []))
        while pending:
            member_id = pending.pop(0)
            if member_id in seen:
                continue
            seen.add(member_id)
            if member_id in self.groups_by_id:
                found.append({"@odata.type": "#microsoft.graph.group",
                              **self.groups_by_id[member_id]})
                pending.extend(self.group_members.get(member_id, []))
            elif member_id in self.users_by_id:
                found.append({"@odata.type": "#microsoft.graph.user",
                              **self.users_by_id[member_id]})
        return found

    # -- mail --------------------------------------------------------------------------------

    def mailbox(self, user_id: str) -> Mailbox | None:
        """The user's mailbox, or None when they have no Exchange mailbox."""
        if not self.has_mailbox.get(user_id, False):
            return None
        mailbox = self.mailboxes.get(user_id)
        if mailbox is None:  # a mailbox with no mail yet: its folders are made once
            mailbox = self.mailboxes.setdefault(
                user_id, Mailbox(user_id, mailbox_folders(user_id, {}), [], {}))
        return mailbox

    def message_rules(self, mailbox: Mailbox) -> list[Json]:
        now = self.now_epoch
        return [rule for window, rule in mailbox.rules if window.contains(now)]

    def start_delta(self, user_id: str, folder: str, since: float | None,
                    synced_at: float) -> str:
        """Record a finished delta round (as of synced_at) and return its opaque token."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.delta_states[token] = DeltaState(user_id, folder, synced_at, since)
        return token

    def delta_state(self, token: str) -> DeltaState | None:
        """The round a token names, unless unknown or expired (Graph then answers 410)."""
        state = self.delta_states.get(token)
        if state is None or self.now_epoch - state.synced_at > DELTA_TOKEN_LIFETIME.total_seconds():
            return None
        return state

    def expire_delta_tokens(self) -> None:
        """Forget every delta round, as Exchange does after a mailbox move (tests use it)."""
        with self._lock:
            self.delta_states.clear()

    def delta_changes(self, folder: Folder, state: DeltaState | None,
                      since: float | None) -> list[Json]:
        """Messages added/changed since the round (all visible ones for a first round),
        then `@removed` entries for those deleted since."""
        now = self.now_epoch
        visibility_field = FOLDER_DATE_FIELD.get(folder.name, "receivedDateTime")
        if state is None:
            low = since
            return [m.data for m in folder.range(visibility_field, low, now) if m.visible(now)]
        synced = state.synced_at
        changed: list[Json] = []
        removed: list[Json] = []
        for message in folder.messages:
            if message.visible(now):
                modified = message.dates.get("lastModifiedDateTime", 0.0)
                is_new = message.visible_at > synced or synced < modified <= now
                in_scope = (state.since is None
                            or message.dates.get("receivedDateTime", 0.0) >= state.since)
                if is_new and in_scope:
                    changed.append(message.data)
            elif (message.deleted_at is not None and synced < message.deleted_at <= now
                  and message.visible_at <= synced):
                removed.append({"@odata.type": "#microsoft.graph.message", "id": message.id,
                                "@removed": {"reason": "deleted"}})
        changed.sort(key=lambda m: str(m.get(visibility_field, "")))
        return changed + removed

    # -- Teams -------------------------------------------------------------------------------

    def chats_of(self, user_id: str) -> Iterator[tuple[Json, list[Json]]]:
        """Visible chats the user is a visible member of, with their visible members."""
        now = self.now_epoch
        for window, chat, members in self.chats:
            if not window.contains(now):
                continue
            present = [m for w, m in members if w.contains(now)]
            if any(m.get("userId") == user_id for m in present):
                yield chat, present

    def chat(self, chat_id: str) -> tuple[Json, list[Json]] | None:
        now = self.now_epoch
        for window, chat, members in self.chats:
            if chat["id"] == chat_id and window.contains(now):
                return chat, [m for w, m in members if w.contains(now)]
        return None

    # -- audit log ---------------------------------------------------------------------------

    def create_audit_query(self, request: Mapping[str, Any], services: set[str] | None,
                           record_limit: int | None = None) -> Json:
        """Create a query over the audit records visible now; records are matched at once,
        the status moves notStarted -> running -> succeeded as it is polled."""
        start = parse_time(request["filterStartDateTime"]).timestamp()
        end = parse_time(request["filterEndDateTime"]).timestamp()
        operations = {op.lower() for op in request.get("operationFilters") or []}
        upns = {u.lower() for u in request.get("userPrincipalNameFilters") or []}
        now = self.now_epoch
        records = [
            record for created, window, record in self.audit_records
            if start <= created < end and created <= now and window.contains(now)
            and (not operations or str(record.get("operation", "")).lower() in operations)
            and (not upns or str(record.get("userPrincipalName", "")).lower() in upns)
            and (services is None or record.get("service") in services)
        ]
        query_id = secrets.token_hex(16)
        resource: Json = {
            "id": query_id,
            "displayName": request.get("displayName"),
            "filterStartDateTime": format_time(parse_time(request["filterStartDateTime"])),
            "filterEndDateTime": format_time(parse_time(request["filterEndDateTime"])),
            "recordTypeFilters": list(request.get("recordTypeFilters") or []),
            "keywordFilter": request.get("keywordFilter"),
            "serviceFilter": request.get("serviceFilter"),
            "operationFilters": list(request.get("operationFilters") or []),
            "userPrincipalNameFilters": list(request.get("userPrincipalNameFilters") or []),
            "ipAddressFilters": list(request.get("ipAddressFilters") or []),
            "objectIdFilters": list(request.get("objectIdFilters") or []),
            "administrativeUnitIdFilters": list(request.get("administrativeUnitIdFilters") or []),
            "status": "notStarted",
            "isRecordCountLimitExceeded": record_limit is not None and len(records) > record_limit,
        }
        if record_limit is not None:
            records = records[:record_limit]
        with self._lock:
            self.audit_queries[query_id] = AuditQuery(resource, records)
        return resource

    def poll_audit_query(self, query_id: str) -> Json | None:
        """The query resource; each poll moves it one step towards succeeded."""
        query = self.audit_queries.get(query_id)
        if query is None:
            return None
        with self._lock:
            statuses = ("notStarted", "running", "succeeded")
            query.resource["status"] = statuses[min(query.polls, len(statuses) - 1)]
            query.polls += 1
        return query.resource


def _window_keys(window: Window) -> Json:
    keys: Json = {}
    if window.start is not None:
        keys["x-visibleFrom"] = format_time(datetime.fromtimestamp(window.start, UTC))
    if window.end is not None:
        keys["x-visibleUntil"] = format_time(datetime.fromtimestamp(window.end, UTC))
    return keys


def _with_bookkeeping(message: Message) -> Json:
    if message.deleted_at is None:
        return message.data
    return {**message.data,
            "x-deletedAt": format_time(datetime.fromtimestamp(message.deleted_at, UTC))}


"""The tenant's stored resources, as the handlers read them: Graph's timestamps, visibility
windows, and mailboxes whose folders keep their messages pre-indexed and sorted by date, so that
a page of 1,000 messages is a bisect and a slice. A resource dated after the tenant's clock, or
outside its `x-visibleFrom`/`x-visibleUntil` window, does not exist yet (or any more).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

Json = dict[str, Any]

FOLDER_DATE_FIELD = {"sentitems": "sentDateTime", "inbox": "receivedDateTime"}
# The folders directly under the root of every mailbox, as user-list-mailfolders.md's first
# example lists them (well-known name, displayName); a tenant document stores each one's
# messages under its well-known name, and further folders under "folders"
WELL_KNOWN_FOLDERS = (
    ("archive", "Archive"), ("conversationhistory", "Conversation History"),
    ("deleteditems", "Deleted Items"), ("drafts", "Drafts"), ("inbox", "Inbox"),
    ("junkemail", "Junk Email"), ("outbox", "Outbox"), ("sentitems", "Sent Items"))
ROOT_FOLDER = "msgfolderroot"
MESSAGE_DATE_FIELDS = (
    "sentDateTime", "receivedDateTime", "createdDateTime", "lastModifiedDateTime")

def parse_time(value: str) -> datetime:
    """ISO 8601 (with Z or an offset) -> aware UTC datetime."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Graph's timestamp style: UTC with a Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def public(resource: Mapping[str, Any]) -> Json:
    """The resource as Graph serves it: without the emulator's own x- bookkeeping."""
    return {key: value for key, value in resource.items() if not key.startswith("x-")}


def _epoch(resource: Mapping[str, Any], key: str) -> float | None:
    value = resource.get(key)
    return parse_time(value).timestamp() if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Window:
    """When a time-bounded resource exists: from <= now < until (either side open)."""

    start: float | None
    end: float | None

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> Window:
        return cls(_epoch(resource, "x-visibleFrom"), _epoch(resource, "x-visibleUntil"))

    def contains(self, now: float) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


@dataclass(slots=True)
class Message:
    """One stored message with its dates pre-parsed (epoch seconds) for fast filtering."""

    data: Json  # public properties only
    dates: dict[str, float]
    visible_at: float
    deleted_at: float | None
    folder_window: Window  # a message exists only while its folder does
    # this message's JSON per $select, serialised once (messages never change once loaded;
    # re-serialising each page was most of the emulator's CPU): see messages.message_json
    rendered: dict[tuple[bool, tuple[str, ...] | None], orjson.Fragment] = field(
        default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    def visible(self, now: float) -> bool:
        return (self.visible_at <= now and (self.deleted_at is None or now < self.deleted_at)
                and self.folder_window.contains(now))


ALWAYS = Window(None, None)


class Folder:
    """A mail folder: messages kept sorted by each date property, for bisecting pages. `name`
    is its well-known name (user-list-mailfolders.md), or its id for a folder a user or a rule
    made; such a folder may exist only for a window (x-visibleFrom/x-visibleUntil: made
    tonight, deleted with its mail)."""

    def __init__(self, folder_id: str, name: str, messages: Sequence[Json], *,
                 display_name: str = "", parent_id: str = "",
                 window: Window = ALWAYS) -> None:
        self.id = folder_id
        self.name = name
        self.display_name = display_name or dict(WELL_KNOWN_FOLDERS).get(name, name)
        self.parent_id = parent_id
        self.window = window
        visibility_field = FOLDER_DATE_FIELD.get(name, "receivedDateTime")
        self.messages: list[Message] = []
        for raw in messages:
            dates = {k: v for k in MESSAGE_DATE_FIELDS if (v := _epoch(raw, k)) is not None}
            data = public(raw)
            data["parentFolderId"] = folder_id
            self.messages.append(Message(data, dates, dates.get(visibility_field, 0.0),
                                         _epoch(raw, "x-deletedAt"), window))
        self.by_id = {message.id: message for message in self.messages}
        self._orders: dict[str, tuple[list[float], list[Message]]] = {}

    def order(self, date_field: str) -> tuple[list[float], list[Message]]:
        """Messages sorted ascending by date_field (then id), with the parallel key list."""
        if date_field not in self._orders:
            ranked = sorted(self.messages, key=lambda m: (m.dates.get(date_field, 0.0), m.id))
            self._orders[date_field] = ([m.dates.get(date_field, 0.0) for m in ranked], ranked)
        return self._orders[date_field]

    def range(self, date_field: str, low: float | None, high: float | None) -> list[Message]:
        """Messages with low <= date <= high (either side open), ascending."""
        keys, ranked = self.order(date_field)
        start = 0 if low is None else bisect.bisect_left(keys, low)
        stop = len(keys) if high is None else bisect.bisect_right(keys, high)
        return ranked[start:stop]


@dataclass
class Mailbox:
    """A user's Exchange mailbox: folders, inbox rules and settings."""

    user_id: str
    folders: dict[str, Folder]  # by well-known name, or by id
    rules: list[tuple[Window, Json]]
    settings: Json
    _everything: dict[str, tuple[list[float], list[Message]]] = field(default_factory=dict)

    def folder(self, name_or_id: str, now: float | None = None) -> Folder | None:
        """Well-known names are case-insensitive (as in Graph); ids are exact. With `now`,
        only a folder that exists then."""
        found = self.folders.get(name_or_id.lower()) or self.folders.get(name_or_id) or next(
            (f for f in self.folders.values() if f.id == name_or_id), None)
        if found is None or (now is not None and not found.window.contains(now)):
            return None
        return found

    def children(self, parent_id: str, now: float) -> list[Folder]:
        """The folders directly under a folder (the root: its id), that exist at `now`."""
        return [f for f in self.folders.values()
                if f.parent_id == parent_id and f.window.contains(now)]

    def order(self, date_field: str) -> tuple[list[float], list[Message]]:
        """Every folder's messages sorted by date_field, as `GET /users/{id}/messages` lists
        them (user-list-messages.md: the whole mailbox, Deleted Items included)."""
        if date_field not in self._everything:
            ranked = sorted((m for f in self.folders.values() for m in f.messages),
                            key=lambda m: (m.dates.get(date_field, 0.0), m.id))
            self._everything[date_field] = ([m.dates.get(date_field, 0.0) for m in ranked],
                                            ranked)
        return self._everything[date_field]


def mailbox_folders(user_id: str, box: Mapping[str, Any]) -> dict[str, Folder]:
    """A mailbox's folders from its tenant document entry: the well-known ones (each always
    there, its messages under its well-known name) and `folders`, each
    `{"id", "displayName", "parentFolderId" (a well-known name or a folder id), "messages",
    "x-visibleFrom", "x-visibleUntil"}`."""
    root = folder_id_for(user_id, ROOT_FOLDER)
    folders = {name: Folder(folder_id_for(user_id, name), name, box.get(name, []),
                            parent_id=root) for name, _ in WELL_KNOWN_FOLDERS}
    for entry in box.get("folders", []):
        parent = str(entry.get("parentFolderId") or ROOT_FOLDER)
        parent = folders[parent].id if parent in folders else (
            root if parent == ROOT_FOLDER else parent)
        folders[entry["id"]] = Folder(entry["id"], entry["id"], entry.get("messages", []),
                                      display_name=entry.get("displayName", ""),
                                      parent_id=parent, window=Window.of(entry))
    return folders


def folder_id_for(user_id: str, name: str) -> str:
    """A stable opaque folder id (real ids are base64 blobs; ours are recognisably fake)."""
    return f"AAMkFolder-{name}-{user_id}"

"""Mailbox handlers: the user's mailbox and folder lookups, message $filter and $orderby, each
message serialised once per $select, folder delta rounds (delta-query-messages.md), Inbox rules
and mailbox settings. Listings and the folder tree are in mail.py.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from m365guard.emulator.odata import (
    GraphError,
    GraphRequest,
    GraphResponse,
    collection,
    decode_token,
    encode_token,
    page_size,
    project,
    select_of,
)
from m365guard.emulator.resources import Folder, Json, Mailbox, Message, parse_time
from m365guard.emulator.service import Call, DeltaSnapshot
from m365guard.emulator.state import Tenant

MESSAGE_PROPERTIES = frozenset({
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories",
    "receivedDateTime", "sentDateTime", "hasAttachments", "internetMessageId", "subject",
    "bodyPreview", "importance", "parentFolderId", "conversationId", "conversationIndex",
    "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
    "inferenceClassification", "body", "uniqueBody", "sender", "from", "toRecipients",
    "ccRecipients", "bccRecipients", "replyTo", "flag", "internetMessageHeaders",
})
MESSAGE_DATES = ("sentDateTime", "receivedDateTime")

def mailbox_of(tenant: Tenant, id_or_upn: str) -> tuple[Json, Mailbox]:
    """The user and their mailbox, or the 404 Exchange gives."""
    user = tenant.user(id_or_upn)
    if user is None:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{id_or_upn}' is invalid.")
    mailbox = tenant.mailbox(user["id"])
    if mailbox is None:
        raise GraphError(404, "MailboxNotEnabledForRESTAPI",
                         "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
    return user, mailbox


def folder_of(mailbox: Mailbox, name_or_id: str, now: float | None = None) -> Folder:
    """The folder (one deleted before `now` is gone: 404, as Exchange answers)."""
    folder = mailbox.folder(name_or_id, now)
    if folder is None:
        raise GraphError(404, "ErrorItemNotFound",
                         "The specified object was not found in the store.")
    return folder


MESSAGE_CLAUSE = re.compile(
    r"^\s*(?P<field>sentDateTime|receivedDateTime)\s+(?P<op>ge|gt|le|lt|eq)\s+"
    r"(?P<value>\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)?)\s*$"
)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: float

    def holds(self, dates: Mapping[str, float]) -> bool:
        actual = dates.get(self.field)
        if actual is None:
            return False
        return {"ge": actual >= self.value, "gt": actual > self.value, "le": actual <= self.value,
                "lt": actual < self.value, "eq": actual == self.value}[self.op]


def message_filter(query: Mapping[str, str]) -> list[Condition]:
    """$filter on sentDateTime/receivedDateTime comparisons joined by 'and'."""
    raw = query.get("$filter")
    if raw is None:
        return []
    conditions = []
    for clause in re.split(r"\s+and\s+", raw.strip()):
        match = MESSAGE_CLAUSE.match(clause)
        if match is None:
            raise GraphError(400, "ErrorInvalidUrlQueryFilter",
                             f"The query filter '{clause}' is not supported by the emulator.")
        conditions.append(Condition(match.group("field"), match.group("op"),
                                    parse_time(match.group("value")).timestamp()))
    return conditions


def message_order(query: Mapping[str, str], conditions: Sequence[Condition]) -> tuple[str, bool]:
    """$orderby (field, descending), enforcing Graph's rule for $filter with $orderby:
    ordered properties must appear in $filter first and in the same order."""
    raw = query.get("$orderby")
    if raw is None:
        return (conditions[0].field if conditions else "receivedDateTime"), True
    terms = [term.split() for term in raw.split(",")]
    if len(terms) != 1 or terms[0][0] not in MESSAGE_DATES or len(terms[0]) > 2 or (
            len(terms[0]) == 2 and terms[0][1] not in ("asc", "desc")):
        raise GraphError(400, "ErrorInvalidUrlQuery",
                         f"The $orderby value '{raw}' is not supported by the emulator.")
    ordered = terms[0][0]
    if conditions and conditions[0].field != ordered:
        raise GraphError(400, "InefficientFilter",
                         "The restriction or sort order is too complex for this operation.")
    return ordered, len(terms[0]) == 2 and terms[0][1] == "desc"


def messages_delta(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET .../mailFolders/{folder}/messages/delta: skiptoken pages, then a deltaLink."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    folder = folder_of(mailbox, params["folder"], call.tenant.now_epoch)
    service, request = call.service, call.request
    base = f"{request.base_url}/v1.0{request.path}"
    skip = request.query.get("$skiptoken")
    if skip is not None:
        payload = decode_token(skip)
        with service.lock:
            snapshot = service.delta_rounds.get(str(payload.get("round")))
        if snapshot is None or snapshot.user_id != user["id"] or snapshot.folder != folder.name:
            raise GraphError(410, "syncStateNotFound",
                             "The sync state generation is not found or has expired.")
        offset = int(payload.get("offset", 0))
        round_id = str(payload["round"])
        after_empty = bool(payload.get("empty"))
    else:
        round_id, snapshot = start_delta_round(call, user["id"], folder)
        offset, after_empty = 0, False
    if offset < len(snapshot.items) and not after_empty and service.faults.empty_delta_page():
        token = encode_token({"round": round_id, "offset": offset, "empty": True})
        return delta_page(request, [], {"@odata.nextLink": f"{base}?$skiptoken={token}"})
    chunk = snapshot.items[offset:offset + snapshot.page_size]
    key, by_id = selected(snapshot.select), folder.by_id
    items = [item if "@removed" in item else message_json(by_id[item["id"]], key)
             for item in chunk]
    offset += len(chunk)
    if offset < len(snapshot.items):
        link = f"{base}?$skiptoken={encode_token({'round': round_id, 'offset': offset})}"
        return delta_page(request, items, {"@odata.nextLink": link})
    with service.lock:
        service.delta_rounds.pop(round_id, None)
    token = call.tenant.start_delta(user["id"], folder.name, snapshot.since, snapshot.asof)
    return delta_page(request, items,
                      {"@odata.deltaLink": f"{base}?$deltatoken={token}"})


def selected(select: Sequence[str] | None) -> tuple[str, ...] | None:
    """A $select as the key of `message_json`'s cache."""
    return None if select is None else tuple(select)


def message_json(message: Message, key: tuple[str, ...] | None, *,
                 typed: bool = True) -> orjson.Fragment:
    """A message as a page lists it with the $select `key` (see `selected`), serialised once
    per $select and reused; a delta page names each item's `@odata.type`
    (delta-query-messages.md), a listing does not (user-list-messages.md)."""
    rendered = message.rendered.get((typed, key))
    if rendered is None:
        resource = project(message.data, key)
        if typed:
            resource = {"@odata.type": "#microsoft.graph.message", **resource}
        rendered = message.rendered[(typed, key)] = orjson.Fragment(orjson.dumps(resource))
    return rendered


def start_delta_round(call: Call, user_id: str, folder: Folder) -> tuple[str, DeltaSnapshot]:
    """A first round (no token) or a later one ($deltatoken): snapshot the changes to serve."""
    request = call.request
    size, _ = page_size({}, request.headers, default=10, maximum=1000)
    delta_token = request.query.get("$deltatoken")
    state = None
    if delta_token is not None:
        state = call.tenant.delta_state(delta_token)
        if state is None or state.user_id != user_id or state.folder != folder.name:
            raise GraphError(410, "syncStateNotFound",
                             "The sync state generation is not found or has expired.")
        since, select = state.since, select_of(request.query, MESSAGE_PROPERTIES)
    else:
        select = select_of(request.query, MESSAGE_PROPERTIES)
        since = None
        for condition in message_filter(request.query):
            if condition.field != "receivedDateTime" or condition.op not in ("ge", "gt"):
                raise GraphError(400, "ErrorInvalidUrlQueryFilter",
                                 "Delta on messages supports only receivedDateTime ge/gt.")
            since = condition.value
    asof = call.tenant.now_epoch
    changes = call.tenant.delta_changes(folder, state, since)
    if since is not None:  # delta-query-messages.md: with $filter, only up to 5,000 messages
        changes = changes[:call.service.faults.config.filtered_delta_cap]
    snapshot = DeltaSnapshot(user_id, folder.name, changes, select, size, since, asof)
    round_id = secrets.token_urlsafe(12)
    with call.service.lock:
        call.service.delta_rounds[round_id] = snapshot
    return round_id, snapshot


def delta_page(request: GraphRequest, items: Sequence[Json | orjson.Fragment],
               link: Json) -> GraphResponse:
    body: Json = {"@odata.context": f"{request.base_url}/v1.0/$metadata#Collection(message)",
                  **link, "value": items}
    return GraphResponse(200, body)


def list_message_rules(call: Call, params: dict[str, str]) -> GraphResponse:
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    if folder_of(mailbox, params["folder"]).name != "inbox":
        raise GraphError(400, "ErrorInvalidRequest", "Message rules exist only on the Inbox.")
    # served as stored: a rule made by an admin tool can come back isReadOnly with neither
    # conditions nor actions (docs-contrib issue 3336); a tenant document plants it so
    rules = call.tenant.message_rules(mailbox)
    select = select_of(call.request.query)
    return collection(call.request,
                      f"users('{user['id']}')/mailFolders('inbox')/messageRules",
                      [project(rule, select) for rule in rules])


def get_mailbox_settings(call: Call, params: dict[str, str]) -> GraphResponse:
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    select = select_of(call.request.query)
    settings = {key: value for key, value in mailbox.settings.items()
                if select is None or key in select}
    body = {"@odata.context":
            f"{call.request.base_url}/v1.0/$metadata#users('{user['id']}')/mailboxSettings",
            **settings}
    return GraphResponse(200, body)

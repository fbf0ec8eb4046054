"""Graph v1.0 request handlers: OData query options in, Graph-shaped JSON out.

Each handler takes the parsed request and the path parameters and returns a `GraphResponse`,
or raises `GraphError`, which becomes Graph's error envelope. Handlers know nothing about
Starlette or sockets, so `$batch` runs them in-process. Paging tokens are opaque: the original
query travels inside the `$skiptoken`, and the tenant clock at the first page (`asof`) keeps
later pages consistent while the clock moves.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from m365guard.emulator.faults import FaultEngine
from m365guard.emulator.identity import Claims
from m365guard.emulator.state import (
    Folder,
    Json,
    Mailbox,
    Message,
    Tenant,
    parse_time,
)

MESSAGE_PROPERTIES = frozenset({
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories",
    "receivedDateTime", "sentDateTime", "hasAttachments", "internetMessageId", "subject",
    "bodyPreview", "importance", "parentFolderId", "conversationId", "conversationIndex",
    "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
    "inferenceClassification", "body", "uniqueBody", "sender", "from", "toRecipients",
    "ccRecipients", "bccRecipients", "replyTo", "flag", "internetMessageHeaders",
})
MESSAGE_DATES = ("sentDateTime", "receivedDateTime")
# What GET /users returns without $select (Graph's default user properties).
USER_DEFAULT_PROPERTIES = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


class GraphError(Exception):
    """A Graph error response: status, code and message (rendered as Graph's envelope)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class GraphRequest:
    """One Graph call, from HTTP or from inside a $batch."""

    method: str
    path: str  # after /v1.0, starting with "/"
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # https://127.0.0.1:PORT
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def client_request_id(self) -> str:
        return self.headers.get("client-request-id", self.request_id)


@dataclass
class GraphResponse:
    """Status, headers and a JSON-able body (None for no body)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def error_body(error: GraphError, request: GraphRequest) -> Json:
    """Graph's error envelope with innerError date and request ids."""
    return {"error": {
        "code": error.code,
        "message": error.message,
        "innerError": {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request.request_id,
            "client-request-id": request.client_request_id,
        },
    }}


@dataclass
class DeltaSnapshot:
    """The changes one delta round serves page by page."""

    user_id: str
    folder: str
    items: list[Json]
    select: list[str] | None
    page_size: int
    since: float | None
    asof: float


@dataclass
class GraphService:
    """What handlers share: the tenant, the faults, and delta rounds in progress."""

    tenant: Tenant
    faults: FaultEngine
    delta_rounds: dict[str, DeltaSnapshot] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Call:
    """A request as a handler sees it: who calls, and the service."""

    service: GraphService
    request: GraphRequest
    claims: Claims

    @property
    def tenant(self) -> Tenant:
        return self.service.tenant


Handler = Callable[[Call, dict[str, str]], GraphResponse]


# -- OData helpers ---------------------------------------------------------------------------


def encode_token(payload: Json) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


def decode_token(token: str) -> Json:
    """The payload of a $skiptoken we issued; anything else is Graph's 400."""
    try:
        if not TOKEN_PATTERN.match(token):
            raise ValueError(token)
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(payload, dict):
            raise ValueError(token)
        return payload
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise GraphError(400, "BadRequest", "The $skiptoken value is invalid.") from exc


def resume(request: GraphRequest) -> tuple[dict[str, str], Json | None]:
    """The query options and cursor: from the $skiptoken on later pages."""
    token = request.query.get("$skiptoken")
    if token is None:
        return request.query, None
    payload = decode_token(token)
    query, cursor = payload.get("q"), payload.get("c")
    if not isinstance(query, dict) or not isinstance(cursor, dict):
        raise GraphError(400, "BadRequest", "The $skiptoken value is invalid.")
    return {str(k): str(v) for k, v in query.items()}, cursor


def next_link(request: GraphRequest, query: Mapping[str, str], cursor: Json) -> str:
    return (f"{request.base_url}/v1.0{request.path}?$skiptoken="
            f"{encode_token({'q': dict(query), 'c': cursor})}")


def select_of(query: Mapping[str, str], allowed: frozenset[str] | None = None) -> list[str] | None:
    """$select as a list (None when absent); unknown properties are Graph's 400."""
    raw = query.get("$select")
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if allowed is not None:
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise GraphError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{unknown[0]}' on type "
                             "'microsoft.graph.message'.")
    return names


def project(resource: Json, select: Sequence[str] | None, *, always: str = "id") -> Json:
    """The resource cut down to $select (Graph always returns the key property)."""
    if select is None:
        return resource
    out = {key: resource[key] for key in ("@odata.type", always) if key in resource}
    for name in select:
        if name in resource:
            out[name] = resource[name]
    return out


def page_size(query: Mapping[str, str], headers: Mapping[str, str], *, default: int,
              maximum: int, code: str = "BadRequest") -> tuple[int, dict[str, str]]:
    """$top, else Prefer: odata.maxpagesize, else the endpoint's default."""
    applied: dict[str, str] = {}
    size = default
    prefer = headers.get("prefer", "")
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
    if match:
        size = min(int(match.group(1)), maximum)
        applied["Preference-Applied"] = f"odata.maxpagesize={size}"
    top = query.get("$top")
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= maximum:
            raise GraphError(400, code, f"Invalid page size specified: '{top}'. "
                                        f"Must be between 1 and {maximum} inclusive.")
        size = int(top)
    return max(size, 1), applied


def collection(request: GraphRequest, context: str, items: Sequence[Json | orjson.Fragment],
               link: str | None = None, *, extra: Json | None = None,
               headers: Mapping[str, str] | None = None) -> GraphResponse:
    body: Json = {"@odata.context": f"{request.base_url}/v1.0/$metadata#{context}"}
    if extra:
        body.update(extra)
    if link is not None:
        body["@odata.nextLink"] = link
    body["value"] = items
    return GraphResponse(200, body, dict(headers or {}))


def offset_page(call: Call, context: str, rows: Sequence[Json], *, default: int, maximum: int,
                default_select: Sequence[str] | None = None,
                filter_fn: Callable[[Mapping[str, str]], Callable[[Json], bool]] | None = None,
                ) -> GraphResponse:
    """A directory-style collection: $select, $top, $filter, opaque $skiptoken pages."""
    query, cursor = resume(call.request)
    size, applied = page_size(query, call.request.headers, default=default, maximum=maximum,
                              code="Request_BadRequest")
    select = select_of(query)
    if select is None and default_select is not None:
        select = list(default_select)
    if filter_fn is not None and "$filter" in query:
        keep = filter_fn(query)
        rows = [row for row in rows if keep(row)]
    elif "$filter" in query:
        raise GraphError(400, "Request_UnsupportedQuery", "Unsupported query.")
    start = int(cursor["offset"]) if cursor else 0
    chunk = rows[start:start + size]
    link = next_link(call.request, query, {"offset": start + size}) \
        if start + size < len(rows) else None
    return collection(call.request, context, [project(r, select) for r in chunk], link,
                      headers=applied)


DIRECTORY_CLAUSE = re.compile(
    r"^\s*(?:(?P<prop>[A-Za-z]+)\s+(?P<op>eq|ne)\s+(?P<value>'(?:[^']|'')*'|true|false|null)"
    r"|startswith\(\s*(?P<sprop>[A-Za-z]+)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\))\s*$"
)


def directory_filter(query: Mapping[str, str]) -> Callable[[Json], bool]:
    """Graph's basic directory $filter: eq/ne and startswith, joined by 'and'."""
    tests: list[Callable[[Json], bool]] = []
    for clause in re.split(r"\s+and\s+", query["$filter"]):
        match = DIRECTORY_CLAUSE.match(clause)
        if match is None:
            raise GraphError(400, "Request_UnsupportedQuery",
                             f"Unsupported or invalid query filter clause specified: '{clause}'.")
        if match.group("sprop"):
            prop, prefix = match.group("sprop"), match.group("prefix").replace("''", "'").lower()

            def starts(row: Json, p: str = prop, x: str = prefix) -> bool:
                return str(row.get(p) or "").lower().startswith(x)

            tests.append(starts)
            continue
        literal = match.group("value")
        expected: Any = {"true": True, "false": False, "null": None}.get(
            literal, literal[1:-1].replace("''", "'"))
        prop, negate = match.group("prop"), match.group("op") == "ne"

        def equal(row: Json, p: str = prop, e: Any = expected, n: bool = negate) -> bool:
            value = row.get(p)
            same = (value.lower() == e.lower() if isinstance(value, str) and isinstance(e, str)
                    else value == e)
            return same != n

        tests.append(equal)
    return lambda row: all(test(row) for test in tests)


# -- directory -------------------------------------------------------------------------------


def list_users(call: Call, _: dict[str, str]) -> GraphResponse:
    return offset_page(call, "users", call.tenant.users, default=100, maximum=999,
                       default_select=USER_DEFAULT_PROPERTIES, filter_fn=directory_filter)


def get_user(call: Call, params: dict[str, str]) -> GraphResponse:
    user = directory_user(call.tenant, params["user_id"])
    select = select_of(call.request.query)
    body = {"@odata.context": f"{call.request.base_url}/v1.0/$metadata#users/$entity",
            **project(user, select if select is not None else USER_DEFAULT_PROPERTIES)}
    return GraphResponse(200, body)


def directory_user(tenant: Tenant, id_or_upn: str) -> Json:
    user = tenant.user(id_or_upn)
    if user is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{id_or_upn}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    return user


def list_skus(call: Call, _: dict[str, str]) -> GraphResponse:
    if "$filter" in call.request.query:
        raise GraphError(400, "Request_UnsupportedQuery", "This request does not support $filter.")
    select = select_of(call.request.query)
    return collection(call.request, "subscribedSkus",
                      [project(s, select) for s in call.tenant.skus])


def list_groups(call: Call, _: dict[str, str]) -> GraphResponse:
    return offset_page(call, "groups", call.tenant.groups, default=100, maximum=999,
                       filter_fn=directory_filter)


def group_transitive_members(call: Call, params: dict[str, str]) -> GraphResponse:
    group_id = params["group_id"]
    if group_id not in call.tenant.groups_by_id:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{group_id}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    members = call.tenant.transitive_members(group_id)
    return offset_page(call, "directoryObjects", members, default=100, maximum=999)


def list_education_users(call: Call, _: dict[str, str]) -> GraphResponse:
    return offset_page(call, "education/users", call.tenant.education_users,
                       default=100, maximum=999, filter_fn=directory_filter)


# -- mail ------------------------------------------------------------------------------------


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


# -- Teams -----------------------------------------------------------------------------------


EXPANDED_MEMBERS_CAP = 25


def list_user_chats(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/chats (optionally $expand=members), at most 50 per page."""
    user = directory_user(call.tenant, params["user_id"])
    query, cursor = resume(call.request)
    size, applied = page_size(query, call.request.headers, default=50, maximum=50)
    expand = query.get("$expand", "")
    if expand not in ("", "members"):
        raise GraphError(400, "BadRequest", f"Expand '{expand}' is not supported.")
    select = select_of(query)
    chats = sorted(call.tenant.chats_of(user["id"]),
                   key=lambda pair: str(pair[0].get("lastUpdatedDateTime", "")), reverse=True)
    start = int(cursor["offset"]) if cursor else 0
    items = []
    for chat, members in chats[start:start + size]:
        item = project(chat, select)
        if expand == "members":  # chat-list.md, known issue: at most 25 members expanded
            item["members"] = members[:EXPANDED_MEMBERS_CAP]
        items.append(item)
    link = next_link(call.request, query, {"offset": start + size}) \
        if start + size < len(chats) else None
    return collection(call.request, f"users('{user['id']}')/chats", items, link, headers=applied)


def list_chat_members(call: Call, params: dict[str, str]) -> GraphResponse:
    found = call.tenant.chat(params["chat_id"])
    if found is None:
        raise GraphError(404, "NotFound", f"Chat '{params['chat_id']}' was not found.")
    _, members = found
    return collection(call.request, f"chats('{params['chat_id']}')/members", members,
                      extra={"@odata.count": len(members)})


# -- audit log -------------------------------------------------------------------------------

AUDIT_SERVICES_BY_ROLE = {"AuditLogsQuery-Exchange.Read.All": "Exchange"}


def create_audit_query(call: Call, _: dict[str, str]) -> GraphResponse:
    """POST /security/auditLog/queries: 201 with the query, status notStarted."""
    try:
        request = orjson.loads(call.request.body or b"{}")
        if not isinstance(request, dict):
            raise ValueError("not an object")
        parse_time(request["filterStartDateTime"])
        parse_time(request["filterEndDateTime"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise GraphError(400, "BadRequest",
                         "filterStartDateTime and filterEndDateTime are required ISO 8601 "
                         f"dates ({exc}).") from exc
    services = None if "AuditLogsQuery.Read.All" in call.claims.roles else {
        service for role, service in AUDIT_SERVICES_BY_ROLE.items() if role in call.claims.roles}
    resource = call.tenant.create_audit_query(request, services,
                                              call.service.faults.config.audit_record_limit)
    if call.service.faults.lose_created_query():
        raise GraphError(504, "GatewayTimeout", "The gateway timed out (the query was created).")
    body = {"@odata.context":
            f"{call.request.base_url}/v1.0/$metadata#security/auditLog/queries/$entity",
            "@odata.type": "#microsoft.graph.security.auditLogQuery", **resource}
    return GraphResponse(201, body)


def list_audit_queries(call: Call, _: dict[str, str]) -> GraphResponse:
    """GET /security/auditLog/queries (security-auditlog-list-queries.md): every query."""
    queries = [query.resource for query in list(call.tenant.audit_queries.values())]
    return offset_page(call, "security/auditLog/queries", queries, default=100, maximum=1000)


def audit_query(call: Call, query_id: str) -> Json:
    resource = call.tenant.poll_audit_query(query_id)
    if resource is None:
        raise GraphError(404, "NotFound", f"Audit log query '{query_id}' was not found.")
    return resource


def get_audit_query(call: Call, params: dict[str, str]) -> GraphResponse:
    resource = audit_query(call, params["query_id"])
    body = {"@odata.context":
            f"{call.request.base_url}/v1.0/$metadata#security/auditLog/queries/$entity",
            "@odata.type": "#microsoft.graph.security.auditLogQuery", **resource}
    return GraphResponse(200, body)


def list_audit_records(call: Call, params: dict[str, str]) -> GraphResponse:
    """Records of a query; empty until the query has succeeded, paged like other lists."""
    query = call.tenant.audit_queries.get(params["query_id"])
    if query is None:
        raise GraphError(404, "NotFound", f"Audit log query '{params['query_id']}' was not found.")
    records = query.records if query.resource["status"] == "succeeded" else []
    return offset_page(call, f"security/auditLog/queries('{params['query_id']}')/records",
                       records, default=150, maximum=1000)

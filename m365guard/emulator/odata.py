"""Graph's request and response shapes and its OData query options, shared by every handler.

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
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from m365guard.emulator.resources import Json

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


@dataclass(frozen=True)
class HtmlPage:
    """A gateway's error page (not JSON), as load balancers in front of Graph send."""

    status: int

    def html(self) -> bytes:
        return (f"<html><head><title>{self.status} Service Unavailable</title></head><body>"
                f"<h1>{self.status}</h1><p>The gateway could not reach the service.</p>"
                "</body></html>").encode()


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


def offset_page(request: GraphRequest, context: str, rows: Sequence[Json], *, default: int,
                maximum: int,
                default_select: Sequence[str] | None = None,
                filter_fn: Callable[[Mapping[str, str]], Callable[[Json], bool]] | None = None,
                ) -> GraphResponse:
    """A directory-style collection: $select, $top, $filter, opaque $skiptoken pages."""
    query, cursor = resume(request)
    size, applied = page_size(query, request.headers, default=default, maximum=maximum,
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
    link = next_link(request, query, {"offset": start + size}) \
        if start + size < len(rows) else None
    return collection(request, context, [project(r, select) for r in chunk], link,
                      headers=applied)

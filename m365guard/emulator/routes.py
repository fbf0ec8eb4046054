"""The Starlette app: the gate every Graph request passes, `$batch`, and the token endpoint.

Every Graph request passes the same gate, in Graph's order: bearer token (401), role (403),
faults and Outlook throttling (429/5xx, resets, latency), then the handler. `$batch` items go
through the same gate one by one, so a single item can be throttled inside an outer 200.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from m365guard.emulator import odata as h
from m365guard.emulator import sendmail
from m365guard.emulator.faults import FaultKind
from m365guard.emulator.hostile import RawBody
from m365guard.emulator.identity import Claims, Identity, IdentityAnswer, TokenRejected
from m365guard.emulator.route_table import EXCHANGE_DENIED, match_route
from m365guard.emulator.service import Call, GraphService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
MAX_BATCH = 20


@dataclass
class EmulatorStats:
    """Request counts: every HTTP request to Graph, per route, per mailbox, 429s served."""

    total: int = 0
    per_route: Counter[str] = field(default_factory=Counter)
    per_mailbox: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    faults_injected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, route: str | None = None, mailbox: str | None = None) -> None:
        with self.lock:
            if route is not None:
                self.per_route[route] += 1
            if mailbox is not None:
                self.per_mailbox[mailbox] += 1

    def bump(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class ConnectionDropped(Exception):
    """Raised mid-response so the server drops the connection (an injected reset)."""


class GraphGate:
    """The ASGI app under /v1.0: auth, permissions, faults, throttling, handlers, $batch."""

    def __init__(self, service: GraphService, identity: Identity, stats: EmulatorStats) -> None:
        self.service = service
        self.identity = identity
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        graph_request = h.GraphRequest(
            method=request.method,
            # the SDK calls functions with parentheses (".../delta()"); Graph accepts both
            path=(request.url.path.removeprefix("/v1.0") or "/").replace("/delta()", "/delta"),
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=f"{request.url.scheme}://{request.url.netloc}",
        )
        self.stats.bump("total")
        response = await self.answer(graph_request, send)
        if response is not None:
            response = self.service.faults.hostile(graph_request.path, response, in_batch=False)
            await self.render(graph_request, response)(scope, receive, send)

    async def answer(self, request: h.GraphRequest, send: Send) -> h.GraphResponse | None:
        """The response for one HTTP request (None when the connection was dropped)."""
        faults = self.service.faults
        try:
            claims = self.authenticate(request)
            kind, status = faults.draw()
            if kind is FaultKind.ERROR:
                self.stats.bump("faults_injected")
                return self.random_error(status)
            if kind is FaultKind.RESET:
                self.stats.bump("faults_injected")
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", b"4096")]})
                await send({"type": "http.response.body", "body": b'{"value": [',
                            "more_body": True})
                raise ConnectionDropped
            if kind is FaultKind.SLOW:
                self.stats.bump("faults_injected")
                await asyncio.sleep(faults.config.slow_seconds)
            if request.method == "POST" and request.path == "/$batch":
                self.stats.count("POST /$batch")
                await self.latency()
                return await self.batch(request, claims)
            return await self.dispatch(request, claims, in_batch=False)
        except h.GraphError as error:
            return h.GraphResponse(error.status, h.error_body(error, request), error.headers)

    def authenticate(self, request: h.GraphRequest) -> Claims:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise h.GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            return self.identity.verify_access_token(token.strip())
        except TokenRejected as exc:
            raise h.GraphError(401, "InvalidAuthenticationToken", str(exc)) from exc

    async def latency(self) -> None:
        delay = self.service.faults.config.latency_ms
        if delay:
            await asyncio.sleep(delay / 1000)

    async def dispatch(self, request: h.GraphRequest, claims: Claims, *,
                       in_batch: bool) -> h.GraphResponse:
        """Route, check the role, apply Outlook's limits, and run the handler; the injected
        latency is spent while the request counts against its mailbox's concurrency."""
        route, params = match_route(request.method, request.path)
        self.stats.count(f"{route.method} {route.template}")
        # a route with no roles authorises in its handler (RBAC for Applications: sendmail.py)
        if route.roles and not claims.roles.intersection(route.roles):
            code, message = route.denied
            raise h.GraphError(403, code, message.format(", ".join(route.roles),
                                                         ", ".join(sorted(claims.roles))))
        if route.teams:
            refused = self.service.faults.admit_teams(claims.app_id)
            if refused is not None:
                raise self.throttled(refused.code, refused.message, refused.retry_after)
        if not route.per_mailbox:
            if not in_batch:
                await self.latency()
            return route.handler(Call(self.service, request, claims), params)
        user = self.service.tenant.user(params["user_id"])
        mailbox = user["id"] if user else params["user_id"].lower()
        self.stats.count(mailbox=mailbox)
        faults = self.service.faults
        scope = faults.config.mailbox_scope
        if scope is not None and mailbox not in scope:  # outside the app's Exchange scope
            raise h.GraphError(403, *EXCHANGE_DENIED)
        if in_batch and faults.batch_item_throttled():
            raise self.throttled("TooManyRequests", "Too many requests.", faults.retry_after())
        refused = faults.admit(claims.app_id, mailbox)
        if refused is not None:
            raise self.throttled(refused.code, refused.message, refused.retry_after)
        try:
            if not in_batch:
                await self.latency()
            return route.handler(Call(self.service, request, claims), params)
        finally:
            faults.release(claims.app_id, mailbox)

    def throttled(self, code: str, message: str, retry_after: str) -> h.GraphError:
        self.stats.bump("throttled")
        return h.GraphError(429, code, message, {"Retry-After": retry_after})

    def random_error(self, status: int) -> h.GraphResponse:
        """Dev Proxy GraphRandomErrorPlugin-style failure."""
        codes = {429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway",
                 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        headers = {}
        if status in (502, 503, 504) and self.service.faults.html_error():
            return h.GraphResponse(status, h.HtmlPage(status))
        if status == 429:
            self.stats.bump("throttled")
            headers["Retry-After"] = self.service.faults.retry_after()
        raise h.GraphError(status, codes.get(status, "UnknownError"),
                           "Injected failure (emulator fault injection).", headers)

    # -- $batch ------------------------------------------------------------------------------

    async def batch(self, request: h.GraphRequest, claims: Claims) -> h.GraphResponse:
        """JSON batching: up to 20 requests, dependsOn honoured, one response per item."""
        try:
            payload = orjson.loads(request.body)
            items = payload["requests"]
            if not isinstance(items, list):
                raise TypeError("requests must be a list")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise h.GraphError(400, "BadRequest", "Invalid batch payload format.") from exc
        if len(items) > MAX_BATCH:
            raise h.GraphError(400, "BadRequest",
                               f"Number of batch request steps exceeds the maximum of {MAX_BATCH}.")
        ids = [str(item.get("id", "")) for item in items if isinstance(item, dict)]
        if len(ids) != len(items) or "" in ids or len(set(ids)) != len(ids):
            raise h.GraphError(400, "BadRequest", "Batch request ids must be present and unique.")
        results: dict[str, h.GraphResponse] = {}
        order = batch_order(items)
        for item in order:
            item_id = str(item["id"])
            sub = self.batch_request(request, item)
            failed = [d for d in depends_on(item) if d not in results or results[d].status >= 400]
            if failed:
                error = h.GraphError(424, "FailedDependency",
                                     f"Dependent request(s) {', '.join(failed)} failed.")
                results[item_id] = h.GraphResponse(424, h.error_body(error, sub))
                continue
            try:
                result = await self.dispatch(sub, claims, in_batch=True)
            except h.GraphError as error:
                result = h.GraphResponse(error.status, h.error_body(error, sub), error.headers)
            result = self.service.faults.hostile(sub.path, result, in_batch=True)
            if isinstance(result.body, h.HtmlPage):  # a batch item's body that is not JSON
                result = h.GraphResponse(result.status, result.body.html().decode())
            results[item_id] = result
        responses = []
        for item_id in ids:
            result = results[item_id]
            headers = {"Content-Type": "application/json", **result.headers}
            entry: dict[str, Any] = {"id": item_id, "status": result.status, "headers": headers}
            if result.body is not None:
                entry["body"] = result.body
            responses.append(entry)
        return h.GraphResponse(200, {"responses": responses})

    def batch_request(self, outer: h.GraphRequest, item: dict[str, Any]) -> h.GraphRequest:
        """A batch item as a request: relative ('/users', 'users') or absolute URLs."""
        url = str(item.get("url", ""))
        parts = urlsplit(url)
        path = parts.path
        if parts.scheme:
            path = path.removeprefix("/v1.0")
        elif not path.startswith("/"):
            path = "/" + path
        path = unquote(path)  # percent-encoded segments (a chat id's ':' and '@'), as HTTP's
        body = item.get("body")
        return h.GraphRequest(
            method=str(item.get("method", "GET")).upper(),
            path=path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()},
            body=orjson.dumps(body) if body is not None else b"",
            base_url=outer.base_url,
        )

    def render(self, request: h.GraphRequest, response: h.GraphResponse) -> Response:
        headers = {"request-id": request.request_id,
                   "client-request-id": request.client_request_id, **response.headers}
        if response.body is None:
            return Response(status_code=response.status, headers=headers)
        if isinstance(response.body, RawBody):
            return Response(response.body.content, status_code=response.status, headers=headers,
                            media_type=JSON_TYPE)
        if isinstance(response.body, h.HtmlPage):
            return Response(response.body.html(), status_code=response.status, headers=headers,
                            media_type="text/html; charset=utf-8")
        return Response(orjson.dumps(response.body), status_code=response.status,
                        headers=headers, media_type=JSON_TYPE)


def depends_on(item: dict[str, Any]) -> list[str]:
    """The ids an item waits for; `depends_on` is the spelling some SDK serialisers send."""
    return [str(d) for d in item.get("dependsOn") or item.get("depends_on") or []]


def batch_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items with each after what it depends on; unknown or circular dependencies are 400."""
    by_id = {str(item["id"]): item for item in items}
    done: list[dict[str, Any]] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(item_id: str) -> None:
        if item_id in placed:
            return
        if item_id in visiting or item_id not in by_id:
            raise h.GraphError(400, "BadRequest",
                               f"Invalid dependsOn: request '{item_id}' is unknown or circular.")
        visiting.add(item_id)
        for dependency in depends_on(by_id[item_id]):
            place(dependency)
        visiting.discard(item_id)
        placed.add(item_id)
        done.append(by_id[item_id])

    for item_id in by_id:
        place(item_id)
    return done


def build_app(service: GraphService, identity: Identity, stats: EmulatorStats) -> Starlette:
    """The whole emulator: the Entra-like identity endpoints and Graph under /v1.0."""

    def base_url(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    async def openid_configuration(request: Request) -> Response:
        return _json(identity.openid_configuration(base_url(request),
                                                   request.path_params["tenant"]))

    async def instance_discovery(request: Request) -> Response:
        endpoint = request.query_params.get("authorization_endpoint", "")
        return _json(identity.instance_discovery(base_url(request), endpoint))

    async def keys(_: Request) -> Response:
        return _json(identity.jwks())

    async def token(request: Request) -> Response:
        # application/x-www-form-urlencoded, parsed here (no python-multipart dependency)
        fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        return _json(identity.token(base_url(request), request.path_params["tenant"], fields))

    gate = GraphGate(service, identity, stats)
    return Starlette(routes=[
        Route("/common/discovery/instance", instance_discovery),
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
        Route("/{tenant}/discovery/v2.0/keys", keys),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/v1.0/{path:path}", gate, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        sendmail.webhook_route(service.tenant),
    ])


def _json(answer: IdentityAnswer) -> Response:
    return Response(orjson.dumps(answer.body), status_code=answer.status,
                    media_type="application/json; charset=utf-8",
                    headers={"Cache-Control": "no-store, no-cache"})


class DropLogFilter(logging.Filter):
    """Keep injected connection resets out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))

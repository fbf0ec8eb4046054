"""The Graph transport: msgraph-sdk builds and authenticates requests, we send them and keep bytes.

`GraphSession` owns one event loop (uvloop where available), one httpx.AsyncClient on an aiohttp
transport (our CA bundle, timeouts, proxies from the environment) wrapped in msgraph-sdk's
middleware pipeline, and a `GraphServiceClient` whose base URL is set on the request adapter
(setting it on the client gives `.../v1.0//users`). Request builders produce
`RequestInformation`; `send` turns one into an authenticated httpx request through the adapter
and returns the raw response, so bulk pages are decoded by Arrow (mail, see wire.py) or orjson
instead of kiota's model parsing (~440x slower here).

The SDK's own retry handler is switched off: it cannot parse fractional Retry-After values and
never retries throttled `$batch` items. `send` retries whole requests (429/500/502/503/504 and
transport errors) with exponential backoff and jitter up to a bound; replies.py gives each
$batch item's own status so the caller can retry items after their own Retry-After.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from m365guard.errors import ExitCode, GuardError
from m365guard.graph.auth import TokenSource
from m365guard.graph.replies import json_object, parse_retry_after
from m365guard.graph.settings import ConnectionSettings

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
BATCH_LIMIT = 20  # Graph's documented maximum number of requests in one $batch


@dataclass
class RetryPolicy:
    """How hard to retry: bounded attempts, exponential backoff with jitter, capped waits."""

    attempts: int = 6
    base_seconds: float = 1.0
    max_seconds: float = 60.0  # the longest backoff of our own (a Retry-After is not capped)
    request_timeout: float = 100.0
    connect_timeout: float = 15.0
    # time.monotonic() past which no retry waits ([collect] run_deadline_minutes): a
    # Retry-After that would end later gives up on that request instead
    deadline: float | None = None

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based). A Retry-After is honoured
        as sent (throttling-limits.md: wait that long); otherwise exponential with jitter."""
        if retry_after is not None:
            return float(retry_after)
        ceiling = min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    def fits(self, wait: float) -> bool:
        """Whether waiting `wait` seconds still ends before the run's deadline."""
        return self.deadline is None or time.monotonic() + wait <= self.deadline


@dataclass
class RequestCounter:
    """HTTP requests actually sent (a $batch counts once; retries count)."""

    http_requests: int = 0
    batches: int = 0
    batch_items: int = 0
    bytes_received: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class _MsalTokenProvider(AccessTokenProvider):
    """kiota's token hook, backed by our msal TokenSource; only the Graph host gets tokens."""

    def __init__(self, tokens: TokenSource, graph_host: str) -> None:
        self._tokens = tokens
        self._validator = AllowedHostsValidator([graph_host])

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        if not self._validator.is_url_host_valid(uri):
            return ""
        cached = self._tokens.cached()
        return cached if cached else await asyncio.to_thread(self._tokens.token)

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._validator


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it exists (Linux, macOS): its TLS and socket handling in C take ~10% off
    a large night's CPU; asyncio's own loop elsewhere (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def tls_context(conn: ConnectionSettings) -> ssl.SSLContext:
    """Verification always on; an explicit CA bundle replaces the system store."""
    if conn.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(conn.ca_bundle))
    return ssl.create_default_context()


def _transport_error(exc: httpx.TransportError, host: str) -> GuardError:
    text = repr(exc) + repr(exc.__cause__ or "") + repr(exc.__context__ or "")
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__context__, ssl.SSLError):
        return GuardError(
            f"TLS verification failed for {host}: set ca_bundle / M365GUARD_CA_BUNDLE to the CA"
            " that signs it",
            ExitCode.TLS_ERROR,
        )
    return GuardError(
        f"cannot reach {host}: check graph_endpoint, the network and HTTPS_PROXY",
        ExitCode.HOST_UNREACHABLE,
    )


class GraphSession:
    """One authenticated connection to Graph for a run; use as a context manager."""

    def __init__(
        self, conn: ConnectionSettings, tokens: TokenSource, retry: RetryPolicy | None = None
    ) -> None:
        self.conn = conn
        self.tokens = tokens
        self.retry = retry or RetryPolicy()
        self.counter = RequestCounter()
        # Optional observer of every raw response body, as received (before decoding); the
        # benchmark uses it to time orjson on exactly these bytes. None: no cost.
        self.on_body: Callable[[bytes], None] | None = None
        self.base_url = f"{conn.graph_endpoint}/v1.0"
        self._loop = new_event_loop()
        # httpx's API (which the SDK's middleware wraps) over aiohttp's C HTTP parser: reading
        # a night's ~220 MB costs about 2.4x less CPU than httpx's own pure-Python stack.
        # httpx reads proxies from the environment only for transports it builds itself, so
        # aiohttp does (trust_env: HTTPS_PROXY / NO_PROXY); TLS is verified by our context.
        context = tls_context(conn)
        self._transport = AiohttpTransport(client=lambda: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=64), trust_env=True))
        self.http = httpx.AsyncClient(
            transport=self._transport,
            verify=context,
            timeout=httpx.Timeout(self.retry.request_timeout, connect=self.retry.connect_timeout),
        )
        no_sdk_retries = RetryHandlerOption(max_retries=0, should_retry=False)
        GraphClientFactory.create_with_default_middleware(
            client=self.http, options={RetryHandlerOption.get_key(): no_sdk_retries}
        )
        auth = BaseBearerTokenAuthenticationProvider(_MsalTokenProvider(tokens, conn.graph_host))
        self.adapter = GraphRequestAdapter(auth, client=self.http)
        self.adapter.base_url = self.base_url  # on the ADAPTER, never on the client
        self.client = GraphServiceClient(request_adapter=self.adapter)

    @property
    def granted_roles(self) -> frozenset[str]:
        """Application permissions in the current token."""
        return self.tokens.granted_roles

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run async collection work on the session's own loop (the httpx pool lives there)."""
        return self._loop.run_until_complete(work)

    def close(self) -> None:
        """Close connections and the loop."""
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.http.aclose())
            # the SDK's transport wrapper does not pass aclose on to the transport it wraps
            self._loop.run_until_complete(self._transport.aclose())
            self._loop.close()

    def __enter__(self) -> GraphSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def relative(self, url: str) -> str:
        """A Graph URL as a $batch item wants it: the part after /v1.0."""
        if url.startswith(self.base_url):
            return url[len(self.base_url):]
        path = urlsplit(url)
        marker = "/v1.0"
        index = url.find(marker, len(path.scheme) + 3)
        return url[index + len(marker):] if index >= 0 else url

    def get_info(self, url: str) -> RequestInformation:
        """A GET for an absolute Graph URL (nextLink / deltaLink), built by the SDK's builders."""
        return self.client.users.with_url(url).to_get_request_information()

    async def _send_once(self, info: RequestInformation) -> httpx.Response:
        self.adapter.set_base_url_for_request_information(info)
        request = await self.adapter.convert_to_native_async(info)
        self.counter.http_requests += 1
        response = await self.http.send(request)
        await response.aread()
        self.counter.bytes_received += len(response.content)
        if self.on_body is not None:
            self.on_body(response.content)
        status = response.status_code
        self.counter.by_status[status] = self.counter.by_status.get(status, 0) + 1
        return response

    async def send(self, info: RequestInformation, *, retries: bool = True) -> httpx.Response:
        """Send with whole-request retries (none: once); returns the last response (maybe an
        error status)."""
        host = self.conn.graph_endpoint
        attempts = self.retry.attempts if retries else 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._send_once(info)
            except httpx.TransportError as exc:
                error = _transport_error(exc, host)
                if error.exit_code == ExitCode.TLS_ERROR or attempt == attempts:
                    raise error from exc
                await asyncio.sleep(self.retry.backoff(attempt))
                continue
            if response.status_code not in RETRYABLE_STATUS or attempt == attempts:
                return response
            wait = self.retry.backoff(attempt, parse_retry_after(
                response.headers.get("Retry-After")))
            if not self.retry.fits(wait):
                return response  # the caller records it as not read; the run ends in time
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    async def get_json(self, info: RequestInformation) -> tuple[int, Any]:
        """Send a request and decode the raw body with orjson. A body that is not a JSON object
        (a gateway's HTML error page, a truncated body) is None; a success without one reads
        as a 502, so every call path treats it as the transient fault it is."""
        response = await self.send(info)
        body = json_object(response.content)
        if 200 <= response.status_code < 300 and body is None:
            return 502, None
        return response.status_code, body

    async def post_batch(
        self, items: Sequence[tuple[str, str, Mapping[str, str]]]
    ) -> httpx.Response:
        """POST one $batch (with whole-request retries); the raw response, for replies.py."""
        if len(items) > BATCH_LIMIT:
            raise ValueError(f"a $batch holds at most {BATCH_LIMIT} requests")
        body = {
            "requests": [
                {"id": item_id, "method": "GET", "url": url, "headers": dict(headers)}
                for item_id, url, headers in items
            ]
        }
        info = RequestInformation(Method.POST, "{+baseurl}/$batch")
        info.headers.try_add("Content-Type", "application/json")
        info.headers.try_add("Accept", "application/json")
        info.content = orjson.dumps(body)
        self.counter.batches += 1
        self.counter.batch_items += len(items)
        return await self.send(info)


def open_session(conn: ConnectionSettings, retry: RetryPolicy | None = None) -> GraphSession:
    """Authenticate (the first token is fetched now, so bad settings fail here) and connect."""
    tokens = TokenSource(conn)
    tokens.token()
    return GraphSession(conn, tokens, retry)

"""Proxies from the environment: with HTTPS_PROXY set, the token request (msal over requests)
and every Graph call (msgraph-sdk over httpx) go through the proxy, and our own CA bundle still
verifies the emulator's certificate inside the tunnel."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import socketserver
import threading
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import urlsplit

import pytest
from graph_support import FAST_RETRY, assert_same_table, clock, secret_conn

from m365guard.emulator import synth
from m365guard.emulator.server import RunningEmulator
from m365guard.emulator.truth import expected_tables
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.auth import TokenSource
from m365guard.graph.client import GraphSession, open_session
from m365guard.graph.collect import CollectRequest, CollectResult, collect

MAIL_ONLY = {"include_rules": False, "include_chats": False, "include_audit": False}
_HEAD_LIMIT = 64 * 1024


class ConnectProxy(socketserver.ThreadingTCPServer):
    """A minimal HTTP CONNECT proxy on 127.0.0.1, serving in a background thread.

    It exists to prove that proxies from the environment (HTTPS_PROXY) keep working: it accepts
    only `CONNECT host:port`, records each target, and pipes bytes both ways without looking at
    them, so TLS runs end to end between the client and the emulator (as through a corporate
    proxy that does not inspect TLS). Use it as a context manager; leaving closes open tunnels
    and joins every thread.
    """

    daemon_threads = False  # server_close() joins the tunnel threads
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TunnelHandler)
        self.targets: list[str] = []  # "host:port" of each CONNECT, in order
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="connect-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def seen(self) -> list[str]:
        """The CONNECT targets so far (a copy)."""
        with self._lock:
            return list(self.targets)

    def record(self, target: str) -> None:
        with self._lock:
            self.targets.append(target)

    def track(self, sock: socket.socket, *, keep: bool = True) -> None:
        with self._lock:
            if keep:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()  # no new tunnels
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # wake the pipes of tunnels still open
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server_close()  # joins the tunnel threads
        self._thread.join(timeout=5)


class _TunnelHandler(socketserver.BaseRequestHandler):
    """One client connection: read the request head, open the tunnel, pipe until closed."""

    server: ConnectProxy
    request: socket.socket

    def handle(self) -> None:
        client = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk or len(head) > _HEAD_LIMIT:
                return
            head += chunk
        head, early = head.split(b"\r\n\r\n", 1)
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        target = rest.split(" ", 1)[0]
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not host or not port.isdigit():
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.server.record(target)
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        upstream.settimeout(None)
        with upstream:
            for sock in (client, upstream):
                self.server.track(sock)
            try:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if early:  # a client may send its TLS hello before reading our answer
                    upstream.sendall(early)
                back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                back.start()
                _pipe(client, upstream)
                back.join()
            finally:
                for sock in (client, upstream):
                    self.server.track(sock, keep=False)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until `source` ends (or fails), then pass the end on to `sink` (half-close)."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as running:
        yield running


def use_proxy(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """HTTPS_PROXY for every client; NO_PROXY removed (some setups exempt 127.0.0.1 there)."""
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment at all (whatever the machine running the tests has)."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def refused_url() -> str:
    """A proxy URL on a local port that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def endpoint_target(emulator: RunningEmulator) -> str:
    parts = urlsplit(emulator.settings.graph_endpoint)
    return f"{parts.hostname}:{parts.port}"


def mail_night(session: GraphSession, since: dt.datetime) -> CollectResult:
    request = CollectRequest(since=since, page_size=40, audit_poll_seconds=0.0,
                             **MAIL_ONLY)  # type: ignore[arg-type]
    return collect(session, request)


def test_the_token_request_goes_through_the_proxy(
        emulator: RunningEmulator, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    use_proxy(monkeypatch, proxy.url)
    TokenSource(secret_conn(emulator.settings)).token()
    seen = proxy.seen()
    assert seen, "msal's token request did not go through HTTPS_PROXY"
    assert set(seen) == {endpoint_target(emulator)}


def test_a_night_goes_through_the_proxy_and_equals_truth(
        emulator: RunningEmulator, school: synth.SyntheticSchool, proxy: ConnectProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_proxy(monkeypatch, proxy.url)
    target = endpoint_target(emulator)
    now = clock(school)
    since = now - dt.timedelta(days=30)
    with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
        after_token = proxy.seen()
        assert after_token, "msal's token request did not go through HTTPS_PROXY"
        result = mail_night(session, since)
    # the token is cached by now: every later tunnel was opened by a Graph call
    graph_tunnels = proxy.seen()[len(after_token):]
    assert graph_tunnels, "Graph calls bypassed HTTPS_PROXY (no CONNECT after the token)"
    assert set(after_token + graph_tunnels) == {target}
    assert result.errors == []
    assert_same_table("messages", result.collected["messages"],
                      expected_tables(school.tenant, now=now, since=since)["messages"])


def test_a_refusing_proxy_fails_the_token_request_as_host_unreachable(
        emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use_proxy(monkeypatch, refused_url())
    with pytest.raises(GuardError) as caught:
        open_session(secret_conn(emulator.settings), FAST_RETRY)
    assert caught.value.exit_code == ExitCode.HOST_UNREACHABLE


def test_a_refusing_proxy_fails_the_graph_calls_as_host_unreachable(
        emulator: RunningEmulator, school: synth.SyntheticSchool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the token is fetched directly, HTTPS_PROXY is set only afterwards: only Graph can fail
    conn = secret_conn(emulator.settings)
    no_proxy(monkeypatch)
    tokens = TokenSource(conn)
    tokens.token()
    use_proxy(monkeypatch, refused_url())
    with GraphSession(conn, tokens, FAST_RETRY) as session, \
            pytest.raises(GuardError) as caught:
        mail_night(session, clock(school) - dt.timedelta(days=30))
    assert caught.value.exit_code == ExitCode.HOST_UNREACHABLE


def test_no_proxy_exempts_the_graph_host(
        emulator: RunningEmulator, school: synth.SyntheticSchool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the proxy refuses every connection: only hosts exempted by NO_PROXY can be reached
    use_proxy(monkeypatch, refused_url())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    now = clock(school)
    with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
        result = mail_night(session, now - dt.timedelta(days=30))
    assert result.errors == []
    assert len(result.collected["messages"]) > 0

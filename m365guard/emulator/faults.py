"""Throttling, latency and random faults, modelled on Graph's limits and Dev Proxy's plugins.

Outlook limits per app and mailbox (throttling-limits.md): 4 concurrent requests and 10,000
requests per 10 minutes; beyond them Graph answers 429 ApplicationThrottled with Retry-After.
On top, like Dev Proxy's GraphRandomErrorPlugin, a seeded fraction of requests fails with
429/500/502/503/504, has its connection reset, or answers slower than a client's timeout.
`$batch` items are throttled on their own (a 429 item inside an outer 200).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # handlers use the engine; hostile mode changes handlers' answers
    from m365guard.emulator.odata import GraphResponse


@dataclass(frozen=True)
class FaultConfig:
    """Knobs for throttling and faults; the defaults are Graph's documented limits, no faults."""

    seed: int = 0
    latency_ms: float = 0.0  # added to every Graph request
    error_rate: float = 0.0  # fraction answered with a random status from error_statuses
    error_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)
    reset_rate: float = 0.0  # fraction whose connection is dropped mid-response
    slow_rate: float = 0.0  # fraction answered after slow_seconds
    slow_seconds: float = 30.0
    batch_item_throttle_rate: float = 0.0  # fraction of $batch items answered 429
    empty_delta_page_rate: float = 0.0  # fraction of delta pages served empty with a nextLink
    mailbox_concurrency: int = 4  # concurrent requests per app and mailbox
    budget_requests: int = 10_000  # requests per app and mailbox per window
    budget_window_s: float = 600.0
    retry_after_s: tuple[float, ...] = (1.0, 2.128)  # Retry-After for random 429s
    # fraction of injected 502/503/504 answered by a gateway's HTML page, not Graph's JSON
    # envelope (what a load balancer in front of Graph sends; throttling-limits.md asks
    # clients to retry 503s whatever their body)
    html_error_rate: float = 0.0
    # delta-query-messages.md: "Applying $filter in a delta query returns only up to 5,000
    # messages" (the round ends with a deltaLink all the same)
    filtered_delta_cap: int = 5000
    # the first N audit log queries are created but answered 504 (a gateway gave up while
    # Graph carried on): a client that simply retries the POST creates a second query
    audit_created_then_lost: int = 0
    # records past which a query stops and says isRecordCountLimitExceeded (auditLogQuery
    # resource); None: no limit reached
    audit_record_limit: int | None = None
    # the mailboxes (user ids) an application access policy / RBAC for Applications scope lets
    # the app read; any other mailbox answers 403 ErrorAccessDenied although the role is
    # granted (applicationaccesspolicy, Exchange RBAC for Applications). None: all mailboxes
    mailbox_scope: frozenset[str] | None = None
    # Teams GETs other than those throttling-limits.md names (includes/throttling-teams.md:
    # "Other GET API calls for Microsoft Teams | 30 rps", limit per app per tenant): list
    # chats and a chat's members, $batch items each counted (json-batching.md: "Requests in
    # a batch are evaluated individually against the applicable throttling limits")
    teams_requests_per_second: float = 30.0
    # fraction of answers (whole requests, $batch items) changed the way real services and
    # proxies change them (hostile.py): odd types, dates, fields, duplicates, Retry-After
    # values, HTML error pages, bad encodings, an empty tenant
    hostile_rate: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.reset_rate, self.slow_rate,
                 self.batch_item_throttle_rate, self.empty_delta_page_rate,
                 self.html_error_rate, self.hostile_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates):
            raise ValueError("fault rates must be between 0 and 1")
        if self.error_rate + self.reset_rate + self.slow_rate > 1.0:
            raise ValueError("error_rate + reset_rate + slow_rate must not exceed 1")
        if (self.mailbox_concurrency < 1 or self.budget_requests < 1 or self.budget_window_s <= 0
                or self.filtered_delta_cap < 1 or self.teams_requests_per_second <= 0):
            raise ValueError("throttling limits must be positive")
        if not self.retry_after_s or any(value <= 0 for value in self.retry_after_s):
            raise ValueError("retry_after_s needs positive values")


class FaultKind(Enum):
    """What the dice chose for one request."""

    NONE = "none"
    ERROR = "error"
    RESET = "reset"
    SLOW = "slow"


@dataclass(frozen=True)
class Throttled:
    """A 429 the limits impose: Graph's code and message, and when to retry."""

    code: str
    message: str
    retry_after: str


def format_retry_after(seconds: float) -> str:
    """Whole seconds as an integer, otherwise as Microsoft sends them (e.g. 2.128)."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}".rstrip("0")


class FaultEngine:
    """Applies a FaultConfig; thread-safe, so tests can change faults while serving."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Replace the config and reset the dice and the throttling counters."""
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._in_flight: Counter[tuple[str, str]] = Counter()
            self._windows: dict[tuple[str, str], tuple[float, int]] = {}
            self._lost = 0  # audit query creations answered 504 so far
            self._teams: dict[str, deque[float]] = {}  # per app: its Teams GETs' last second
            from m365guard.emulator.hostile import Hostility
            self.hostility = Hostility(random.Random(config.seed + 1), config.hostile_rate)

    def admit(self, app_id: str, mailbox: str) -> Throttled | None:
        """Count a request against the app+mailbox limits; on success call release() after."""
        key = (app_id, mailbox)
        now = time.monotonic()
        with self._lock:
            config = self.config
            started, count = self._windows.get(key, (now, 0))
            if now - started >= config.budget_window_s:
                started, count = now, 0
            if count >= config.budget_requests:
                wait = max(1, round(config.budget_window_s - (now - started)))
                return Throttled("ApplicationThrottled",
                                 "Application is over its MailboxRequests limit.", str(wait))
            if self._in_flight[key] >= config.mailbox_concurrency:
                return Throttled("ApplicationThrottled",
                                 "Application is over its MailboxConcurrency limit.",
                                 format_retry_after(self._rng.choice(config.retry_after_s)))
            self._windows[key] = (started, count + 1)
            self._in_flight[key] += 1
        return None

    def admit_teams(self, app_id: str) -> Throttled | None:
        """Count a Teams GET against the app's requests in the last second; past the limit,
        429 with the seconds until the oldest of them leaves the window."""
        now = time.monotonic()
        with self._lock:
            recent = self._teams.setdefault(app_id, deque())
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= self.config.teams_requests_per_second:
                wait = max(1.0 - (now - recent[0]), 0.001)
                return Throttled("TooManyRequests", "Too many requests: the app is over its"
                                 " Teams request limit.", format_retry_after(round(wait, 3)))
            recent.append(now)
        return None

    def release(self, app_id: str, mailbox: str) -> None:
        with self._lock:
            key = (app_id, mailbox)
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def draw(self) -> tuple[FaultKind, int]:
        """Choose this request's fault (and its status, for ERROR)."""
        with self._lock:
            config = self.config
            roll = self._rng.random()
            if roll < config.error_rate:
                return FaultKind.ERROR, self._rng.choice(config.error_statuses)
            roll -= config.error_rate
            if roll < config.reset_rate:
                return FaultKind.RESET, 0
            roll -= config.reset_rate
            if roll < config.slow_rate:
                return FaultKind.SLOW, 0
            return FaultKind.NONE, 0

    def hostile(self, path: str, response: GraphResponse, *, in_batch: bool) -> GraphResponse:
        """The answer as hostile mode leaves it (unchanged when the mode is off)."""
        if self.config.hostile_rate <= 0:
            return response
        with self._lock:
            return self.hostility.answer(path, response, in_batch=in_batch)

    def html_error(self) -> bool:
        with self._lock:
            return self._rng.random() < self.config.html_error_rate

    def lose_created_query(self) -> bool:
        """Whether this audit query creation answers 504 (see audit_created_then_lost)."""
        with self._lock:
            if self._lost < self.config.audit_created_then_lost:
                self._lost += 1
                return True
            return False

    def retry_after(self) -> str:
        with self._lock:
            return format_retry_after(self._rng.choice(self.config.retry_after_s))

    def batch_item_throttled(self) -> bool:
        with self._lock:
            return self._rng.random() < self.config.batch_item_throttle_rate

    def empty_delta_page(self) -> bool:
        with self._lock:
            return self._rng.random() < self.config.empty_delta_page_rate

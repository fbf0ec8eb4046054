"""Benchmark the collector against `m365guard emulator serve` in a subprocess (with latency).

Prints, measured in one run: wall time (the best of three timed full reads, each with a fresh
session and followed by one pass of the decode bound below, whose best pass counts), CPU per
message, peak memory, HTTP requests per mailbox, the emulator's CPU share, the CPU floor (the
client's and the emulator's CPU spread over this machine's cores); the ratio to the
idiomatic msgraph-sdk approach (model objects, nextLink loop, one request at a time; measured
on a subset of mailboxes and scaled); the ratio to the bound; then a second night with no new
mail (requests per mailbox, mail alone and with inbox rules, chats and the audit log).

The bound is the larger of
- the latency chain: the round trips that cannot overlap, times the injected latency. Reading
  the directory (`/users`, 999 a page) comes first, one page after another; then each mailbox's
  streams (one per folder) run at most 4 at a time (Outlook's per-mailbox limit), so a mailbox
  needs max(its longest stream, ceil(its round trips / 4)) latencies, where the round trips are
  the $batch items each stream really sent (`CollectResult.round_trips`); the chain is the
  directory plus the slowest mailbox;
- decoding: orjson.loads of exactly the response bodies the collector received (kept through
  `GraphSession.on_body` in a temporary file during an untimed first read of the same data,
  timed with the garbage collector off after each timed read; the best pass counts).

Each night's mail goes to shards on disk and the rules run shard by shard (`--mail shards`,
what the nightly job does) or stays in memory (`--mail memory`); the peak memory is this
process's after the first night's collection and rules. Beside the latency chain and decoding,
the bound includes Graph's throttling: 130,000 requests per 10 seconds per app across all
tenants (every $batch item counts) and 10,000 per 10 minutes per app and mailbox
(throttling-limits.md). Several sizes run one after another, each in its own process (its own
peak), and end with one line each; the district (100,000 mailboxes, `district:N` for N
schools of 1,000) is read once, without the warm-up, the idiomatic loop or the decode bound.

    .venv/bin/python bench/scan.py --size small      # quick
    .venv/bin/python bench/scan.py --size large      # 2,000 mailboxes, 30 days
    .venv/bin/python bench/scan.py --size small large district --latency-ms 150
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson
import psutil
from kiota_abstractions.base_request_configuration import RequestConfiguration

from m365guard.config import Policy, load_policy
from m365guard.emulator.synth._base import CLOCK_START
from m365guard.graph.client import GraphSession
from m365guard.graph.collect import CollectRequest, CollectResult, collect, open_session
from m365guard.graph.mailboxes import MESSAGE_FIELDS
from m365guard.graph.settings import ConnectionSettings, TenantSection, resolve_connection
from m365guard.rules import run_rules

MAILBOX_CONCURRENCY = CollectRequest.mailbox_concurrency  # the default the bench reads with
PAGE_SIZE = 250
SUBSET = 8
TIMED_READS = 3
CORES = psutil.cpu_count() or 1
GLOBAL = (130_000, 10.0)  # requests per window (seconds) per app across all tenants
PER_MAILBOX = (10_000, 600.0)  # requests per window (seconds) per app and mailbox (Outlook)


def start_emulator(size: str, seed: int, latency_ms: float, workdir: Path) -> tuple[
        subprocess.Popen[bytes], dict[str, str]]:
    out = workdir / "settings.json"
    command = [sys.executable, "-c", "from m365guard.cli.main import run; run()", "emulator",
               "serve", "--clock", "fixed", "--school", size, "--seed", str(seed),
               "--latency-ms", str(latency_ms), "--policy-out", str(workdir / "policy"),
               "--settings-out", str(out), "--workdir", str(workdir / "emu")]
    # its log to a file: a pipe nobody reads would stop the emulator once it is full
    log = workdir / "emulator.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 900
    while not out.exists() or not out.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"emulator did not start: {log.read_text()[-500:]}")
        time.sleep(0.1)
    time.sleep(0.2)
    settings: dict[str, str] = orjson.loads(out.read_bytes())
    return process, settings


async def idiomatic(session: GraphSession, user_ids: list[str], since: dt.datetime) -> int:
    """The way the SDK's samples read mail: model objects, one request at a time."""
    count = 0
    for user_id in user_ids:
        for folder in ("sentitems", "inbox"):
            builder = session.client.users.by_user_id(user_id).mail_folders \
                .by_mail_folder_id(folder).messages
            config = RequestConfiguration(query_parameters=builder
                                          .MessagesRequestBuilderGetQueryParameters(
                                              select=list(MESSAGE_FIELDS), top=PAGE_SIZE,
                                              filter=f"receivedDateTime ge "
                                                     f"{since.strftime('%Y-%m-%dT%H:%M:%SZ')}"))
            page = await builder.get(config)
            while page is not None:
                count += len(page.value or [])
                if not page.odata_next_link:
                    break
                page = await builder.with_url(page.odata_next_link).get()
    return count


def keep_bodies(out: BinaryIO) -> Callable[[bytes], None]:
    """A GraphSession.on_body hook: each raw body appended to `out`, length first."""
    def keep(body: bytes) -> None:
        out.write(len(body).to_bytes(8, "little"))
        out.write(body)
    return keep


def decode_seconds(path: Path) -> float:
    """orjson.loads of every body kept in `path`, garbage collector off (one pass)."""
    spent = 0.0
    with path.open("rb") as bodies:
        while size := int.from_bytes(bodies.read(8), "little"):
            body = bodies.read(size)
            gc.disable()
            start = time.perf_counter()
            orjson.loads(body)
            spent += time.perf_counter() - start
            gc.enable()
    return spent


@dataclass
class TimedRead:
    wall: float
    cpu: float  # this process
    emulator_cpu: float
    bytes_received: int
    result: CollectResult


def timed_read(conn: ConnectionSettings, request: CollectRequest,
               emulator: psutil.Process, on_body: Callable[[bytes], None] | None = None
               ) -> TimedRead:
    """One full read of the tenant with a fresh session, timed (the session's setup is not)."""
    with open_session(conn) as session:
        session.on_body = on_body
        emu_cpu0, cpu0 = sum(emulator.cpu_times()[:2]), time.process_time()
        wall0 = time.perf_counter()
        result = collect(session, request)
        wall = time.perf_counter() - wall0
        return TimedRead(wall, time.process_time() - cpu0,
                         sum(emulator.cpu_times()[:2]) - emu_cpu0,
                         session.counter.bytes_received, result)


def latency_chain(round_trips: dict[tuple[str, str], int], users: int) -> tuple[int, int]:
    """(directory round trips, slowest mailbox's round trips) that cannot overlap."""
    per_mailbox: dict[str, list[int]] = defaultdict(list)
    for (mailbox, _), trips in round_trips.items():
        per_mailbox[mailbox].append(trips)
    slowest = max((max(max(trips), math.ceil(sum(trips) / MAILBOX_CONCURRENCY))
                   for trips in per_mailbox.values()), default=0)
    return max(math.ceil(users / 999), 1), slowest


def throttling_seconds(round_trips: dict[tuple[str, str], int], requests: int,
                       batches: int) -> float:
    """The shortest time Graph's documented limits allow for these requests: each limit is a
    budget per window (every $batch item counts against the global one, each mailbox's
    items against their own), so only the windows that fill up must be waited out."""
    items = sum(round_trips.values()) + requests - batches
    per_mailbox: dict[str, int] = defaultdict(int)
    for (mailbox, _), trips in round_trips.items():
        per_mailbox[mailbox] += trips
    busiest = max(per_mailbox.values(), default=0)
    return max(max(items - 1, 0) // GLOBAL[0] * GLOBAL[1],
               max(busiest - 1, 0) // PER_MAILBOX[0] * PER_MAILBOX[1])


def first_night(conn: ConnectionSettings, request: CollectRequest, policy: Policy,
                emulator: psutil.Process, bodies: Path | None) -> tuple[TimedRead, float, int]:
    """The first night: the tenant read (bodies kept for the decode bound when asked) and the
    rules over it; (read, rules seconds, findings)."""
    with bodies.open("wb") if bodies else open(os.devnull, "wb") as out:
        read = timed_read(conn, request, emulator, keep_bodies(out) if bodies else None)
    started = time.perf_counter()
    findings = run_rules(read.result.collected, policy, read.result.mail)
    return read, time.perf_counter() - started, len(findings)


class Report:
    """The figures of one school's run, and what it prints."""

    def __init__(self, args: argparse.Namespace, size: str, night: TimedRead, best: TimedRead,
                 walls: list[float], decodes: list[float], rules: float, findings: int,
                 peak_mb: float) -> None:
        self.size, self.latency, self.walls, self.peak_mb = size, args.latency_ms, walls, peak_mb
        self.rules, self.findings, self.best, self.first = rules, findings, best, night.result
        first = self.first
        users = first.collected["users"]
        self.users, self.mailboxes = users, len(users)
        self.messages = first.mail.messages if first.mail else len(first.collected["messages"])
        self.directory_trips, self.mailbox_trips = latency_chain(first.round_trips,
                                                                 self.mailboxes)
        self.chain = (self.directory_trips + self.mailbox_trips) * self.latency / 1000
        self.throttle = throttling_seconds(first.round_trips, first.requests,
                                           first.batch_requests)
        self.decode = min(decodes) if decodes else 0.0
        self.bound = max(self.chain, self.throttle, self.decode)
        self.bound_by = ("latency chain" if self.bound == self.chain else "throttling"
                         if self.bound == self.throttle else "decode")
        self.idiomatic_line = ""
        self.quiet = 0.0
        self.quiet_line = ""

    def idiomatic(self, session: GraphSession, since: dt.datetime) -> None:
        first, users = self.first, self.users
        per_folder = first.collected["coverage"]
        readable = per_folder[(per_folder["folder"] == "sentitems")
                              & (per_folder["status"] == "ok")]["mailbox"]
        subset = list(users[users["upn"].isin(readable)]["user_id"][:SUBSET])
        mails = list(first.mail) if first.mail else [(first.collected["messages"], None)]
        ours = sum(int(messages["mailbox_id"].isin(subset).sum()) for messages, _ in mails)
        t0 = time.perf_counter()
        seen = session.run(idiomatic(session, subset, since))
        scaled = (time.perf_counter() - t0) * self.mailboxes / len(subset)
        self.idiomatic_line = (f"idiomatic SDK        {scaled:.1f} s scaled from {len(subset)} "
                               f"mailboxes ({seen} messages there, we read {ours}); ratio "
                               f"{scaled / self.best.wall:.1f}x (target >= 30x)")

    def second_night(self, session: GraphSession, now: dt.datetime,
                     request: CollectRequest) -> None:
        """The next night, as the nightly job asks: saved delta links, and users found without
        an Exchange mailbox last night not asked again this week."""
        per_folder = self.first.collected["coverage"]
        without = {mailbox: now for mailbox in per_folder[
            per_folder["status"] == "no_mailbox"]["mailbox"]}
        quiet = dataclasses.replace(request, since=now, delta_links=self.first.delta_links,
                                    without_mailbox=without)
        second = collect(session, quiet)
        news = second.mail.messages if second.mail else len(second.collected["messages"])
        asked = self.mailboxes - len(without)
        self.quiet = second.batch_requests / self.mailboxes
        self.quiet_line = (
            f"second night, mail   {second.batch_requests} $batch for {2 * asked} folders = "
            f"{self.quiet:.3f} per mailbox (target <= 0.1; 20 folders a $batch is the floor, "
            f"ceil(2 x {asked} / 20) = {math.ceil(asked / 10)}, as the {len(without)} users "
            f"without an Exchange mailbox last night are asked weekly); {second.requests} "
            f"requests with the directory ({second.requests / self.mailboxes:.3f} per "
            f"mailbox), {news} new messages")
        if not self.size.startswith("district"):
            every = collect(session, dataclasses.replace(
                quiet, delta_links=second.delta_links, include_rules=True, include_chats=True,
                include_audit=True))
            self.quiet_line += (
                f"\nsecond night, all    {every.requests} requests = "
                f"{every.requests / self.mailboxes:.3f} per mailbox ({every.batch_requests} "
                "$batch: inbox rules and chats have no delta query, so each is one more item "
                f"per mailbox; {every.requests - every.batch_requests} directory and audit log)")

    def summary(self) -> dict[str, object]:
        best = self.best
        return {"size": self.size, "mailboxes": self.mailboxes, "messages": self.messages,
                "wall": best.wall, "rules": self.rules, "bound": self.bound,
                "bound_by": self.bound_by, "ratio": best.wall / self.bound,
                "per_mailbox": self.first.requests / self.mailboxes, "quiet": self.quiet,
                "peak": self.peak_mb, "floor": (best.cpu + best.emulator_cpu) / CORES}

    def print(self) -> None:
        best, first = self.best, self.first
        print(f"school {self.size}: {self.mailboxes} mailboxes, {self.messages} messages, "
              f"latency {self.latency:.0f} ms")
        print(f"wall time            {best.wall:.2f} s (best of {len(self.walls)} timed reads: "
              f"{', '.join(f'{w:.2f}' for w in self.walls)} s); rules {self.rules:.2f} s, "
              f"{self.findings} findings")
        print(f"CPU per message      {best.cpu / max(self.messages, 1) * 1e6:.1f} us")
        print(f"peak memory          {self.peak_mb:.0f} MB (the first night: collection and "
              "rules)")
        print(f"HTTP requests/mailbox {first.requests / self.mailboxes:.3f} ({first.requests} "
              "requests)")
        print(f"emulator CPU share   {best.emulator_cpu / best.wall:.0%} of one core")
        print(f"CPU floor            {(best.cpu + best.emulator_cpu) / CORES:.2f} s = (client "
              f"{best.cpu:.2f} s + emulator {best.emulator_cpu:.2f} s of CPU) / {CORES} cores:"
              " no wall time on this machine is shorter")
        if self.idiomatic_line:
            print(self.idiomatic_line)
        print(f"bound                {self.bound:.2f} s = max(latency chain {self.chain:.2f} s: "
              f"({self.directory_trips} directory + {self.mailbox_trips} slowest mailbox) round"
              f" trips x {self.latency:.0f} ms, throttling {self.throttle:.2f} s, orjson decode "
              f"of the {best.bytes_received / 1e6:.0f} MB received {self.decode:.2f} s); ratio "
              f"{best.wall / self.bound:.2f}x (target <= 1.3x)")
        print(self.quiet_line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", nargs="+", default=["small"],
                        help="small | medium | large | district | district:SCHOOLS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--mail", choices=("shards", "memory"), default="shards")
    parser.add_argument("--batches-in-flight", type=int,
                        default=CollectRequest.max_batches_in_flight)
    parser.add_argument("--summary-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if len(args.size) == 1:
        run_size(args, args.size[0])
        return
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.size:
            out = Path(tmp) / f"{size}.json"
            flags = [f"--seed={args.seed}", f"--latency-ms={args.latency_ms}",
                     f"--mail={args.mail}", f"--batches-in-flight={args.batches_in_flight}"]
            subprocess.run([sys.executable, __file__, "--size", size, *flags,
                            "--summary-out", str(out)], check=True)
            summaries.append(orjson.loads(out.read_bytes()))
    print(f"\nmeasured {dt.date.today()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, latency {args.latency_ms:.0f} ms,"
          f" {args.batches_in_flight} $batch in flight, mail in {args.mail}")
    for row in summaries:
        print("{size:>14}: {mailboxes:,} mailboxes, {messages:,} messages | wall {wall:.1f} s "
              "(rules {rules:.1f} s) | bound {bound:.1f} s ({bound_by}), {ratio:.2f}x | "
              "{per_mailbox:.3f} requests/mailbox, second night mail {quiet:.3f} | "
              "peak {peak:,.0f} MB | CPU floor {floor:.1f} s".format(**row))


def run_size(args: argparse.Namespace, size: str) -> None:
    """One school: the first night (and, but for the district, the timed reads, the decode
    bound and the idiomatic loop), then a quiet second night."""
    quick = size.startswith("district")
    # the generated school's clock (not the school itself: this process's peak memory is
    # the collector's, and the emulator generates the school in its own process)
    now = dt.datetime.fromtimestamp(CLOCK_START, dt.UTC)
    since = now - dt.timedelta(days=30)
    with tempfile.TemporaryDirectory() as tmp:
        emulator, settings = start_emulator(size, args.seed, args.latency_ms, Path(tmp))
        try:
            section = TenantSection(
                tenant_id=settings["tenant_id"], client_id=settings["client_id"],
                authority_host=settings["authority_host"],
                graph_endpoint=settings["graph_endpoint"], ca_bundle=Path(settings["ca_bundle"]))
            conn = resolve_connection(section, {**os.environ,
                                                "M365GUARD_CERT_PATH":
                                                    settings["certificate_path"]})
            policy = load_policy(Path(tmp) / "policy" / "policies.toml")
            people = policy.people
            groups = tuple(dict.fromkeys([*people.pupil_groups, *people.staff_groups,
                                          *people.governor_groups]))
            emu_proc = psutil.Process(emulator.pid)
            bodies_path = None if quick else Path(tmp) / "bodies"
            mail_dir = Path(tmp) / "mail" if args.mail == "shards" else None
            request = CollectRequest(since=since, until=now, page_size=PAGE_SIZE,
                                     group_names=groups, include_chats=False,
                                     include_audit=False, include_rules=False,
                                     max_batches_in_flight=args.batches_in_flight,
                                     mail_dir=mail_dir)
            # The first night keeps every response body for the decode bound (but for the
            # district), and warms the emulator as Graph's own servers are warm: it
            # serialises each message once per $select and reuses the bytes, and Graph's CPU
            # is not on this machine. The district's mail is generated as it is read, never
            # kept: its one read is the timed one.
            night, rules_seconds, findings = first_night(conn, request, policy, emu_proc,
                                                         bodies_path)
            # one night's peak, collection and rules (the timed reads keep one result alive)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            walls: list[float] = []
            decodes: list[float] = []  # a decode pass after each read: the same machine state
            best = night
            for _ in range(0 if quick else TIMED_READS):
                read = timed_read(conn, request, emu_proc)
                assert bodies_path is not None
                decodes.append(decode_seconds(bodies_path))
                # the same pages; only how streams share $batch envelopes varies with timing
                if abs(read.bytes_received - night.bytes_received) > 0.01 * night.bytes_received:
                    raise SystemExit(f"a timed read got {read.bytes_received} bytes, the first"
                                     f" {night.bytes_received}: the bound would not be for "
                                     "these bytes")
                walls.append(read.wall)
                best = read if best is night or read.wall < best.wall else best
                del read
            report = Report(args, size, night, best, walls or [night.wall], decodes,
                            rules_seconds, findings, peak_mb)
            with open_session(conn) as session:
                if not quick:
                    report.idiomatic(session, since)
                report.second_night(session, now, request)
        finally:
            emulator.terminate()
            try:
                emulator.wait(60)
            except subprocess.TimeoutExpired:  # a busy machine: uvicorn's shutdown can lag
                emulator.kill()
                emulator.wait()
    report.print()
    if args.summary_out:
        args.summary_out.write_bytes(orjson.dumps(report.summary()))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()

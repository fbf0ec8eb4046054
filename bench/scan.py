"""Benchmark the collector against `m365guard emulator serve` in a subprocess (with latency).

Prints, measured in one run: wall time, CPU per message, peak memory, HTTP requests per mailbox,
the emulator's CPU share; the ratio to the idiomatic msgraph-sdk approach (model objects,
nextLink loop, one request at a time; measured on a subset of mailboxes and scaled); the ratio
to the bound (max of the longest per-mailbox chain of round trips x latency, and the orjson
decode time of as many bytes); then a second night with no new mail (requests per mailbox).

    .venv/bin/python bench/scan.py --size small      # quick
    .venv/bin/python bench/scan.py --size large      # 2,000 mailboxes, 30 days
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil
from kiota_abstractions.base_request_configuration import RequestConfiguration

from m365guard.emulator import synth
from m365guard.graph.client import GraphSession
from m365guard.graph.collect import MESSAGE_FIELDS, CollectRequest, collect, open_session
from m365guard.graph.settings import TenantSection, resolve_connection

PAGE_SIZE = 250
SUBSET = 8


def start_emulator(size: str, seed: int, latency_ms: float, workdir: Path) -> tuple[
        subprocess.Popen[bytes], dict[str, str]]:
    out = workdir / "settings.json"
    command = [sys.executable, "-c", "from m365guard.cli.main import run; run()", "emulator",
               "serve", "--school", size, "--seed", str(seed), "--latency-ms", str(latency_ms),
               "--settings-out", str(out), "--workdir", str(workdir / "emu")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not out.exists() or not out.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"emulator did not start: {process.stderr.read().decode()[-500:]}"
                             if process.stderr else "emulator did not start")
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


def decode_seconds(school: synth.SyntheticSchool, total_bytes: int) -> float:
    """orjson decode time for `total_bytes` of message pages shaped like the ones served."""
    messages = [m for box in school.tenant["mailboxes"].values()
                for m in box.get("sentitems", [])[:PAGE_SIZE]][:PAGE_SIZE]
    page = orjson.dumps({"value": [{k: m.get(k) for k in MESSAGE_FIELDS} for m in messages]})
    start = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        orjson.loads(page)
    per_byte = (time.perf_counter() - start) / (rounds * len(page))
    return per_byte * total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("small", "medium", "large"), default="small")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()

    school = synth.generate(args.size, args.seed)
    now = dt.datetime.fromisoformat(school.tenant["clock"]["start"])
    since = now - dt.timedelta(days=30)
    with tempfile.TemporaryDirectory() as tmp:
        emulator, settings = start_emulator(args.size, args.seed, args.latency_ms, Path(tmp))
        try:
            section = TenantSection(
                tenant_id=settings["tenant_id"], client_id=settings["client_id"],
                authority_host=settings["authority_host"],
                graph_endpoint=settings["graph_endpoint"], ca_bundle=Path(settings["ca_bundle"]))
            conn = resolve_connection(section, {**os.environ,
                                                "M365GUARD_CERT_PATH":
                                                    settings["certificate_path"]})
            emu_proc = psutil.Process(emulator.pid)
            with open_session(conn) as session:
                request = CollectRequest(since=since, page_size=PAGE_SIZE, include_chats=False,
                                         include_audit=False, include_rules=False)
                emu_cpu0, cpu0 = sum(emu_proc.cpu_times()[:2]), time.process_time()
                wall0 = time.perf_counter()
                first = collect(session, request)
                wall = time.perf_counter() - wall0
                cpu = time.process_time() - cpu0
                emu_cpu = sum(emu_proc.cpu_times()[:2]) - emu_cpu0
                bytes_first = session.counter.bytes_received
                messages = len(first.collected["messages"])
                users = first.collected["users"]
                mailboxes = len(users)
                per_folder = first.collected["coverage"]
                longest = int(per_folder[per_folder["folder"].isin(["sentitems", "inbox"])]
                              ["items"].max())
                chain = (math.ceil(longest / PAGE_SIZE) + 2) * args.latency_ms / 1000
                bound = max(chain, decode_seconds(school, bytes_first))

                readable = per_folder[(per_folder["folder"] == "sentitems")
                                      & (per_folder["status"] == "ok")]["mailbox"]
                subset = list(users[users["upn"].isin(readable)]["user_id"][:SUBSET])
                ours_subset = sum(first.collected["messages"]["mailbox_id"].isin(subset))
                t0 = time.perf_counter()
                seen = session.run(idiomatic(session, subset, since))
                idiomatic_scaled = (time.perf_counter() - t0) * mailboxes / len(subset)

                second = collect(session, CollectRequest(
                    since=now, delta_links=first.delta_links, page_size=PAGE_SIZE,
                    include_chats=False, include_audit=False, include_rules=False))
        finally:
            emulator.terminate()
            emulator.wait(30)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"school {args.size}: {mailboxes} mailboxes, {messages} messages, "
          f"latency {args.latency_ms:.0f} ms")
    print(f"wall time            {wall:.2f} s")
    print(f"CPU per message      {cpu / max(messages, 1) * 1e6:.1f} us")
    print(f"peak memory          {peak_mb:.0f} MB")
    print(f"HTTP requests/mailbox {first.requests / mailboxes:.3f} ({first.requests} requests)")
    print(f"emulator CPU share   {emu_cpu / wall:.0%} of one core")
    print(f"idiomatic SDK        {idiomatic_scaled:.1f} s scaled from {len(subset)} mailboxes "
          f"({seen} messages there, we read {ours_subset}); ratio {idiomatic_scaled / wall:.1f}x"
          " (target >= 30x)")
    print(f"bound                {bound:.2f} s (chain {chain:.2f} s); ratio "
          f"{wall / bound:.2f}x (target <= 1.5x)")
    print(f"second night         {second.requests} requests, "
          f"{second.requests / mailboxes:.3f} per mailbox ({second.batch_requests} $batch; "
          f"target <= 0.1), {len(second.collected['messages'])} new messages")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()

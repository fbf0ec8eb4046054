"""Emulator throughput: requests per second and server CPU per request for message pages.

Starts `m365guard emulator serve` in a subprocess on a tenant built from the tiny test tenant
plus 5,000 sent messages, then reads 100- and 1,000-message pages over HTTPS (keep-alive).
Prints numbers measured in this run only; nothing is asserted.
Run: .venv/bin/python bench/emulator.py [--requests N]
"""

from __future__ import annotations

import argparse
import copy
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msal
import orjson
import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny-tenant.json"
TEACHER = "a1000000-0000-4000-8000-000000000002"
SELECT = ("id,internetMessageId,subject,sentDateTime,receivedDateTime,from,toRecipients,"
          "ccRecipients,bccRecipients,hasAttachments,conversationId")


def build_tenant(messages: int) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(TINY.read_bytes())
    template = doc["mailboxes"][TEACHER]["sentitems"][0]
    start = datetime(2024, 9, 1, tzinfo=UTC)
    sent = []
    for index in range(messages):
        at = (start + timedelta(minutes=17 * index)).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = copy.deepcopy(template)
        message.update(id=f"AAMkBench{index:06d}=", sentDateTime=at, receivedDateTime=at,
                       createdDateTime=at, lastModifiedDateTime=at,
                       internetMessageId=f"<bench{index}@example.sch.uk>")
        sent.append(message)
    doc["mailboxes"][TEACHER]["sentitems"] = sent
    doc["clock"]["start"] = "2024-12-31T00:00:00Z"
    return doc


def token(settings: dict[str, str]) -> str:
    session = requests.Session()
    session.trust_env = False
    session.verify = settings["ca_bundle"]
    app = msal.ConfidentialClientApplication(
        settings["client_id"], client_credential=settings["client_secret"],
        authority=f"{settings['authority_host']}/{settings['tenant_id']}",
        http_client=session, instance_discovery=False)
    return str(app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
               ["access_token"])


def measure(client: httpx.Client, server: psutil.Process, top: int, count: int) -> None:
    url = f"/users/{TEACHER}/mailFolders/sentitems/messages"
    params = {"$top": str(top), "$select": SELECT}
    client.get(url, params=params).raise_for_status()  # warm up
    cpu_before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    received = 0
    for _ in range(count):
        response = client.get(url, params=params)
        response.raise_for_status()
        received += len(response.content)
    elapsed = time.perf_counter() - started
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    print(f"$top={top:>4}: {count / elapsed:7.1f} requests/s, "
          f"{1000 * cpu / count:6.2f} ms server CPU per request, "
          f"{received / count / 1024:7.1f} KiB per page")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tenant_file = Path(tmp) / "bench-tenant.json"
        tenant_file.write_bytes(orjson.dumps(build_tenant(args.messages)))
        settings_file = Path(tmp) / "settings.json"
        process = subprocess.Popen(
            [sys.executable, "-c", "from m365guard.cli.main import run; run()", "emulator",
             "serve", "--clock", "fixed", "--school", str(tenant_file),
             "--settings-out", str(settings_file),
             "--workdir", str(Path(tmp) / "work")], stdout=subprocess.DEVNULL)
        try:
            while not settings_file.exists():
                if process.poll() is not None:
                    raise SystemExit("the emulator did not start")
                time.sleep(0.1)
            time.sleep(0.2)
            settings = orjson.loads(settings_file.read_bytes())
            context = ssl.create_default_context(cafile=settings["ca_bundle"])
            with httpx.Client(base_url=f"{settings['graph_endpoint']}/v1.0", verify=context,
                              trust_env=False, timeout=60,
                              headers={"Authorization": f"Bearer {token(settings)}"}) as client:
                server = psutil.Process(process.pid)
                measure(client, server, 100, args.requests)
                measure(client, server, 1000, max(args.requests // 4, 5))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


if __name__ == "__main__":
    main()

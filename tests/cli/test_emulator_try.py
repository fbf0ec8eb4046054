"""Trying m365guard against the emulator, as docs/emulator.md tells a new user to.

`emulator serve --print-env --policy-out DIR` in one process; its printed `export` lines, parsed
as a shell would, are the whole environment of `m365guard nightly --config DIR/policies.toml`
in another, which must find the generated school's mail (dated around today) and its findings.
"""

from __future__ import annotations

import csv
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from m365guard.cli.emulator import clock_target, load_school
from m365guard.errors import ExitCode, GuardError

CLI = Path(sys.executable).parent / "m365guard"


def test_serve_dates_the_school_around_today_unless_told_otherwise() -> None:
    now = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    fixed, _ = load_school("small", 1, "fixed")
    live, generated = load_school("small", 1, "now", now)
    assert generated is not None
    assert live.now == now and fixed.now.year == 2024
    assert fixed.now != live.now  # shifted, not regenerated: same school, other dates
    set_on, _ = load_school("small", 1, "2026-09-01T08:00:00Z")
    assert set_on.now == datetime(2026, 9, 1, 8, tzinfo=UTC)
    with pytest.raises(GuardError) as bad:
        clock_target("yesterday", now)
    assert bad.value.exit_code == ExitCode.USAGE and "--clock" in bad.value.message


@pytest.mark.slow
def test_print_env_round_trip_finds_the_demo_mail(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("M365GUARD_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    server = subprocess.Popen(
        [str(CLI), "emulator", "serve", "--school", "small", "--print-env",
         "--policy-out", str(tmp_path / "try"), "--workdir", str(tmp_path / "emulator")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    exports: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 120
        while len(exports) < 6:
            assert time.monotonic() < deadline and server.poll() is None, "no env lines"
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("export "):
                name, value = shlex.split(line[len("export "):])[0].split("=", 1)
                exports[name] = value
        assert set(exports) >= {"M365GUARD_TENANT_ID", "M365GUARD_CLIENT_ID",
                                "M365GUARD_CERT_PATH", "M365GUARD_CA_BUNDLE"}
        done = subprocess.run(
            [str(CLI), "nightly", "--config", str(tmp_path / "try" / "policies.toml")],
            env={**env, **exports}, capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert done.returncode in (ExitCode.CLEAN, ExitCode.NEW_HIGH_FINDINGS), done.stderr
    assert done.stderr == "" or "Traceback" not in done.stderr
    out = tmp_path / "try" / "out"
    run = orjson.loads(next(out.glob("run-*.json")).read_bytes())
    text = orjson.dumps(run).decode()
    assert '"messages"' in text
    findings = list(csv.DictReader(next(out.glob("findings-*.csv")).read_text(
        encoding="utf-8-sig").splitlines()))
    assert len(findings) >= 5  # the school's planted violations, found in today's window
    seen = [datetime.fromisoformat(f["first_seen"].replace("Z", "+00:00")) for f in findings]
    assert all(abs(moment - datetime.now(UTC)) < timedelta(hours=1) for moment in seen)

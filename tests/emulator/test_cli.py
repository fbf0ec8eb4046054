"""`m365guard emulator serve` as a user runs it: settings file, a working tenant, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from emulator_clients import TINY, http, secret_token

from m365guard.emulator.server import EmulatorSettings

ENTRY = "from m365guard.cli.main import run; run()"


def test_serve_writes_settings_answers_graph_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.json"
    process = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "emulator", "serve", "--school", str(TINY),
         "--settings-out", str(settings_file), "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not settings_file.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written, then the banner printed
        raw = orjson.loads(settings_file.read_bytes())
        assert set(raw) == set(EmulatorSettings.model_fields)
        assert settings_file.stat().st_mode & 0o077 == 0
        settings = EmulatorSettings(**raw)
        with http(settings, secret_token(settings)) as client:
            assert client.get("/users").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "emulator stopped" in out
    assert settings.client_secret not in out + err


def test_unknown_school_is_one_line_and_a_usage_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, "emulator", "serve", "--school", "huge"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "small|medium|large" in result.stderr

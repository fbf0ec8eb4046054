"""Fixtures for the reliability suite: a live-dated small school, an emulator, and "sites".

The synthetic school's clock is fixed in 2024; the nightly CLI uses the real clock. So the
school's document is shifted to end an hour ago (every timestamp moves by the same amount) and
every message falls inside the first run's window, whichever process runs it and when.

A *site* is one school's installation in a temporary folder: policies.toml (no secrets in it),
the roster and export files, a state folder and an output folder, plus the M365GUARD_* environment
a scheduler would set. Runs happen in-process (`run_nightly`) or as the real CLI subprocess.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from m365guard.cli.emulator import shift_times
from m365guard.config import Policy, load_policy
from m365guard.emulator import synth
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import EmulatorSettings, RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.graph.settings import ConnectionSettings, resolve_connection

DATA = Path(__file__).parent.parent / "data"
CLI = Path(sys.executable).parent / "m365guard"
# Fast retries against the emulator: random 429s ask for 50 ms.
QUIET = FaultConfig(seed=0, retry_after_s=(0.05,))
VOLATILE = ("first_seen", "last_seen", "times_seen")  # depend on when a run happened


def live_school(seed: int, *, history_days: int = 5) -> synth.SyntheticSchool:
    """The small school, its clock an hour before now (to the second)."""
    school = synth.generate("small", seed, history_days=history_days)
    start = datetime.fromisoformat(school.tenant["clock"]["start"])
    target = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    school.tenant = shift_times(school.tenant, target - start)
    return school


@pytest.fixture(scope="session")
def school() -> synth.SyntheticSchool:
    return live_school(7)


@pytest.fixture(scope="session")
def emu_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA and app registration for the session."""
    return tmp_path_factory.mktemp("reliability-emulator")


@pytest.fixture(scope="session")
def emulator(school: synth.SyntheticSchool, emu_workdir: Path) -> Iterator[RunningEmulator]:
    """The session's emulator; tests that inject faults restore QUIET when done."""
    with start_in_thread(Tenant.from_document(school.tenant), workdir=emu_workdir,
                         faults=QUIET) as running:
        yield running


def policy_text(school: synth.SyntheticSchool, *, timeout: float = 10.0) -> str:
    """A policies.toml for the school: no [tenant] secrets; audit log off (its polling takes
    seconds); mailbox forwarding from the Exchange export instead."""
    return school.policy_toml(inputs="inputs", collect={
        "first_run_days": 30, "include_audit_log": False, "request_timeout_seconds": timeout,
    }) + """
[state]
path = "state/m365guard.db"

[output]
dir = "out"

[rules.pupil-contact-non-school-channel]
severity = "high"

[rules.external-forwarding-personal]
severity = "high"
"""


def connection_env(settings: EmulatorSettings, *, auth: str = "cert") -> dict[str, str]:
    """The M365GUARD_* variables a scheduler sets for the job."""
    env = {
        "M365GUARD_TENANT_ID": settings.tenant_id,
        "M365GUARD_CLIENT_ID": settings.client_id,
        "M365GUARD_AUTHORITY_HOST": settings.authority_host,
        "M365GUARD_GRAPH_ENDPOINT": settings.graph_endpoint,
        "M365GUARD_CA_BUNDLE": settings.ca_bundle,
    }
    if auth == "cert":
        env["M365GUARD_CERT_PATH"] = settings.certificate_path
    else:
        env["M365GUARD_CLIENT_SECRET"] = settings.client_secret
    return env


@dataclass
class Site:
    """One school's installation in a folder."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "policies.toml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def db(self) -> Path:
        return self.state_dir / "m365guard.db"

    def policy(self) -> Policy:
        return load_policy(self.config)

    def conn(self) -> ConnectionSettings:
        return resolve_connection(self.policy().tenant, self.env)

    def cli(self, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `m365guard ARGS` to completion."""
        return subprocess.run([str(CLI), *args], env=process_env(self.env if env is None
                                                                 else env),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def nightly(self, *extra: str, env: Mapping[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        return self.cli("nightly", "--config", str(self.config), "--verbose", *extra, env=env)

    def popen_nightly(self, *, kill_at_log: str = "", signal_name: str = "SIGKILL"
                      ) -> subprocess.Popen[str]:
        """Start `m365guard nightly`; with `kill_at_log`, the process sends itself the signal
        (SIGKILL unless told) right after logging a message that matches that regular
        expression (a crash at an exact point, where a kill sent from outside could arrive
        after the next step)."""
        command = [str(CLI)] if not kill_at_log else [sys.executable, "-c", _KILL_AT_LOG]
        env = ({**self.env, "CRASH_TEST_KILL_AT": kill_at_log,
                "CRASH_TEST_SIGNAL": signal_name} if kill_at_log else self.env)
        return subprocess.Popen(
            [*command, "nightly", "--config", str(self.config), "--verbose"],
            env=process_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The CLI, but the first log record that matches $CRASH_TEST_KILL_AT sends the process
# $CRASH_TEST_SIGNAL once it has been handled (written to stderr).
_KILL_AT_LOG = """
import logging, os, re, signal, sys
from m365guard.cli.main import run
pattern = re.compile(os.environ["CRASH_TEST_KILL_AT"])
sent = []
handle = logging.Logger.handle
def handle_then_kill(self, record):
    handle(self, record)
    if not sent and pattern.search(record.getMessage()):
        sent.append(True)
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, os.environ["CRASH_TEST_SIGNAL"]))
logging.Logger.handle = handle_then_kill
sys.argv[0] = "m365guard"
run()
"""


def process_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any M365GUARD_* of its own, plus extra; local
    connections never go through a proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("M365GUARD_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def make_site(root: Path, school: synth.SyntheticSchool, settings: EmulatorSettings, *,
              auth: str = "cert", text: str | None = None, timeout: float = 10.0) -> Site:
    """Write policies.toml, rosters and export under root."""
    school.write_inputs(root / "inputs")
    (root / "policies.toml").write_text(text if text is not None
                                        else policy_text(school, timeout=timeout),
                                        encoding="utf-8")
    return Site(root, connection_env(settings, auth=auth))


@pytest.fixture
def site(tmp_path: Path, school: synth.SyntheticSchool, emulator: RunningEmulator) -> Site:
    return make_site(tmp_path / "site", school, emulator.settings)


def read_csv(path: Path) -> list[dict[str, str]]:
    """A report CSV as rows (the BOM and CRLF line ends are part of the contract)."""
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), f"{path} lacks the UTF-8 BOM"
    assert data.endswith(b"\r\n"), f"{path} does not end with a complete line"
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def findings_csv(out: Path) -> Path:
    paths = sorted(out.glob("findings-*.csv"))
    assert len(paths) == 1, paths
    return paths[0]


def stable_findings(path: Path) -> dict[str, dict[str, str]]:
    """finding_id -> the row without the columns that depend on when the run happened."""
    rows = read_csv(path)
    ids = [row["finding_id"] for row in rows]
    assert len(ids) == len(set(ids)), "a finding appears twice in the CSV"
    return {row["finding_id"]: {k: v for k, v in row.items() if k not in VOLATILE}
            for row in rows}


def assert_same_findings(got: Path, want: Path) -> None:
    """The two findings CSVs list the same findings with the same stable columns."""
    a, b = stable_findings(got), stable_findings(want)
    assert sorted(a) == sorted(b), (sorted(set(a) - set(b)), sorted(set(b) - set(a)))
    diffs = [(fid, col, a[fid][col], b[fid][col])
             for fid in a for col in a[fid] if a[fid][col] != b[fid][col]]
    assert not diffs, diffs[:5]


@dataclass
class CliResult:
    code: int
    stderr: str


def run_cli_inprocess(args: list[str], env: Mapping[str, str], capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> CliResult:
    """The console entry point (`m365guard.cli.main.run`) in this process: the same code as the
    installed script, without paying a second of imports per case. Only argv and the
    environment are set; nothing of m365guard, the SDK or HTTP is replaced."""
    from m365guard.cli.main import run

    for name in [k for k in os.environ if k.startswith("M365GUARD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["m365guard", *args])
    capsys.readouterr()
    try:
        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    finally:  # the CLI set up its own log handlers: hand logging back to pytest
        logger = logging.getLogger("m365guard")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
    return CliResult(code, capsys.readouterr().err)

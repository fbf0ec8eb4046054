"""Hostile Graph (issue 18): the emulator's hostile mode changes answers the way real services
and proxies do (m365guard/emulator/hostile.py), seeded. Over many seeds: the nightly never
ends in an unexpected error (exit 1, a traceback), and once the hostility stops, the next
night's findings equal those of two clean nights. docs/reliability.md records the seeds run
and the defects found.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from m365guard.config import load_policy
from m365guard.demo import connection_for
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode, GuardError
from m365guard.pipeline import run_nightly

DATA = Path(__file__).parent.parent / "data"
SEEDS = range(6)  # ~60 s here; docs/reliability.md lists the longer runs
RATE = 0.25  # of answers changed: most nights meet several kinds
POLICY = """\
[school]
name = "Manby Lodge"
domains = ["manbylodge.sch.uk"]
[people]
staff_groups = ["All Staff"]
[collect]
include_audit_log = false
request_timeout_seconds = 5
[state]
path = "state/db"
[output]
dir = "out"
[rules.pupil-contact-non-school-channel]
severity = "high"
"""
CLEAN = FaultConfig()


def _findings(root: Path) -> set[tuple[str, str, str]]:
    """Every finding the state holds: (id, severity, status)."""
    with sqlite3.connect(root / "state" / "db") as db:
        rows = db.execute("SELECT finding_id, severity, status FROM findings").fetchall()
    return {(str(a), str(b), str(c)) for a, b, c in rows}


def _two_nights(doc: dict[str, Any], root: Path, workdir: Path,
                first: FaultConfig) -> tuple[set[tuple[str, str, str]], ExitCode | None]:
    """Night one under `first`, night two clean a day later: the findings after night two,
    and night one's exit code (None: it ended with an error other than a GuardError)."""
    tenant = Tenant.from_document(doc)
    root.mkdir(parents=True)
    (root / "policies.toml").write_text(POLICY)
    policy = load_policy(root / "policies.toml")
    emulator: RunningEmulator
    with start_in_thread(tenant, workdir=workdir, faults=first) as emulator:
        conn, now = connection_for(emulator.settings), tenant.now
        try:
            code: ExitCode | None = run_nightly(policy, conn, root / "out", now=now).exit_code
        except GuardError as error:  # a clear one-line error with its exit code
            code = error.exit_code
        emulator.set_faults(CLEAN)
        tenant.advance_to(now + timedelta(days=1))
        run_nightly(policy, conn, root / "out", now=tenant.now)
    return _findings(root), code


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((DATA / "tiny-tenant.json").read_bytes())
    return doc


def test_hostile_nights_never_crash_and_the_next_clean_night_heals(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    clean, code = _two_nights(tiny, tmp_path / "clean", emu_workdir, CLEAN)
    assert code in (ExitCode.CLEAN, ExitCode.NEW_HIGH_FINDINGS) and clean
    for seed in SEEDS:
        hostile = FaultConfig(seed=seed, hostile_rate=RATE, retry_after_s=(0.01,))
        healed, code = _two_nights(tiny, tmp_path / f"seed-{seed}", emu_workdir, hostile)
        assert code is not None and int(code) != 1, seed
        assert healed == clean, (seed, sorted(healed ^ clean))
        # a task left failing when the night ended prints "Task exception was never
        # retrieved" and its traceback through asyncio's logger
        assert not [r for r in caplog.records if r.name == "asyncio"], seed

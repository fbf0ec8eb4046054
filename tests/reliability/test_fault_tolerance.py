"""Faults: random Graph errors, resets and slow answers change nothing; exhausted retries show.

The emulator injects, per HTTP request, Dev Proxy style 429/500/502/503/504, connection resets
and answers slower than the client's timeout, plus throttled `$batch` items and empty delta pages.
A night under those faults must produce exactly the fault-free night's findings. When retries run
out, the mailboxes that could not be read are reported uncovered, the exit code says partial,
and nothing in them is resolved or reported clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from site_support import QUIET, Site, assert_same_findings, make_site, read_csv, stable_findings

from m365guard.emulator import synth
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode, GuardError
from m365guard.pipeline import NightlyOutcome, run_nightly
from m365guard.state import StateDB

SEEDS = (1, 2, 3)
TIMEOUT = 2.0  # [collect] request_timeout_seconds for these runs; slow answers take longer


def noisy(seed: int) -> FaultConfig:
    """10% random errors, plus resets, too-slow answers, throttled items and empty delta pages."""
    return FaultConfig(seed=seed, error_rate=0.10, reset_rate=0.02, slow_rate=0.02,
                       slow_seconds=TIMEOUT * 2, batch_item_throttle_rate=0.05,
                       empty_delta_page_rate=0.05, retry_after_s=(0.05, 0.128))


@pytest.fixture
def faulty(emulator: RunningEmulator) -> Iterator[RunningEmulator]:
    yield emulator
    emulator.set_faults(QUIET)


def night(site: Site) -> NightlyOutcome:
    return run_nightly(site.policy(), site.conn(), site.out)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, school: synth.SyntheticSchool,
             emulator: RunningEmulator) -> NightlyOutcome:
    emulator.set_faults(QUIET)
    site = make_site(tmp_path_factory.mktemp("baseline"), school, emulator.settings,
                     timeout=TIMEOUT)
    outcome = night(site)
    assert outcome.run.outcome == "complete"
    assert len(outcome.update.new) > 20  # the school has plenty to find
    return outcome


@pytest.mark.parametrize("seed", SEEDS)
def test_faults_change_nothing(seed: int, tmp_path: Path, school: synth.SyntheticSchool,
                               faulty: RunningEmulator, baseline: NightlyOutcome) -> None:
    site = make_site(tmp_path, school, faulty.settings, timeout=TIMEOUT)
    before = faulty.stats.faults_injected
    faulty.set_faults(noisy(seed))
    outcome = night(site)
    faulty.set_faults(QUIET)
    assert faulty.stats.faults_injected - before >= 3, "the faults were not injected"
    assert outcome.run.outcome == "complete", outcome.run.counts
    assert outcome.exit_code == baseline.exit_code
    assert_same_findings(outcome.paths.findings_csv, baseline.paths.findings_csv)
    assert outcome.run.counts["messages"] == baseline.run.counts["messages"]
    assert outcome.run.counts["http_requests"] > baseline.run.counts["http_requests"]  # retried


def test_exhausted_retries_leave_mailboxes_uncovered_never_clean(
        tmp_path: Path, school: synth.SyntheticSchool, faulty: RunningEmulator,
        baseline: NightlyOutcome) -> None:
    site = make_site(tmp_path, school, faulty.settings, timeout=TIMEOUT)
    first = night(site)
    assert first.run.outcome == "complete"
    # Half of all per-mailbox requests are throttled: a stream that meets six 429s in a row
    # gives up (~1.6% of streams: some mailboxes, never the same ones twice).
    faulty.set_faults(FaultConfig(seed=5, batch_item_throttle_rate=0.5, retry_after_s=(0.01,)))
    second = night(site)
    faulty.set_faults(QUIET)

    assert second.run.outcome == "partial"
    assert second.exit_code == ExitCode.PARTIAL_RUN
    summary = orjson.loads(second.paths.run_json.read_bytes())
    gaps = [gap for gap in summary["coverage"]["uncovered"] if gap["status"] != "no_mailbox"]
    uncovered = {(gap["mailbox"], gap["folder"]) for gap in gaps}
    assert uncovered, "no mailbox ran out of retries"
    assert all("retries exhausted" in gap["reason"] for gap in gaps), gaps
    with StateDB.open(site.db) as db:
        coverage = db.coverage([second.run.run_id])
    failed = set(zip(coverage.loc[coverage["status"] == "failed", "mailbox"],
                     coverage.loc[coverage["status"] == "failed", "folder"], strict=True))
    assert failed == uncovered
    # nothing the night could not read was resolved: every finding of the first night is open
    assert second.update.resolved.empty
    assert {row["finding_id"] for row in read_csv(second.paths.findings_csv)} == \
        set(stable_findings(baseline.paths.findings_csv))


def test_graph_failing_for_everything_is_an_error_not_a_clean_night(
        tmp_path: Path, school: synth.SyntheticSchool, faulty: RunningEmulator) -> None:
    site = make_site(tmp_path, school, faulty.settings, timeout=TIMEOUT)
    faulty.set_faults(FaultConfig(seed=9, error_rate=1.0, error_statuses=(429,),
                                  retry_after_s=(0.01,)))
    with pytest.raises(GuardError) as caught:
        night(site)
    faulty.set_faults(QUIET)
    assert caught.value.exit_code == ExitCode.HOST_UNREACHABLE
    assert "User.Read.All" not in caught.value.message  # a 429 is not a missing permission
    assert not list(site.out.glob("findings-*.csv"))
    with StateDB.open(site.db) as db:
        assert db.last_successful_run(include_partial=True) is None

"""Crashes and stops: `m365guard nightly` ended by SIGKILL, SIGTERM (systemd's stop) or SIGINT
(Ctrl-C) at 10 points, then run again.

Each point is found by watching the job's own log lines on stderr (`--verbose`) or the
emulator's request counter. After the kill no report CSV may be half-written; the next run must
complete and report exactly what an uninterrupted run reports, no finding twice and none lost.
SIGTERM and SIGINT end the run at once with one line and no traceback, and the process ends by
that signal (what systemd and a shell expect of a stopped program).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from site_support import Site, make_site, read_csv, stable_findings

from m365guard.emulator import synth
from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode


@dataclass(frozen=True)
class Point:
    """Where to kill: the first stderr line matching `line`, or after `batches` $batch POSTs."""

    name: str
    line: str = ""
    batches: int = 0
    committed: bool = False  # the run's state was committed before the kill


def _progress(fraction: float) -> str:
    return rf"collected (\d+) of (\d+) mailbox streams@{fraction}"


POINTS = (
    Point("collection starts", line=r"nightly: run \d+ collecting"),
    Point("first mailbox streams done", line=_progress(0.0)),
    Point("after 15 $batch requests", batches=15),
    Point("half the streams collected", line=_progress(0.5)),
    Point("after 40 $batch requests", batches=40),
    Point("rules running", line=r"checking rules"),
    Point("writing state", line=r"recording the run in state"),
    Point("writing the CSVs", line=r"nightly: writing reports"),
    Point("CSVs written, state not committed", line=r"reports written; committing state"),
    Point("after the commit", line=r"nightly: state committed", committed=True),
)


def _matches(point: Point, line: str) -> bool:
    if "@" in point.line:
        pattern, fraction = point.line.split("@")
        found = re.search(pattern, line)
        return bool(found) and int(found.group(1)) >= float(fraction) * int(found.group(2))
    return bool(point.line) and re.search(point.line, line) is not None


SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT")


def kill_at(site: Site, emulator: RunningEmulator, point: Point,
            signal_name: str = "SIGKILL") -> list[str]:
    """Start the nightly CLI, send it the signal at `point`, return the stderr lines seen."""
    sent = getattr(signal, signal_name)
    start = emulator.stats.per_route["POST /$batch"]
    exact = bool(point.line) and "@" not in point.line  # the process kills itself there
    process = site.popen_nightly(kill_at_log=point.line if exact else "",
                                 signal_name=signal_name)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for text in process.stderr:
            lines.put(text)
        lines.put(None)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    seen: list[str] = []
    reached: Callable[[], bool] = lambda: (  # noqa: E731
        point.batches > 0 and emulator.stats.per_route["POST /$batch"] - start >= point.batches)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if reached():
                break
            try:
                text = lines.get(timeout=0.005)
            except queue.Empty:
                continue
            if text is None:
                pytest.fail(f"the run ended before {point.name}: {seen[-5:]}")
            seen.append(text)
            if _matches(point, text):
                break
        else:
            pytest.fail(f"{point.name} never came: {seen[-5:]}")
        if not exact:
            os.kill(process.pid, sent)
    finally:
        process.wait(timeout=30)
        pumping.join(timeout=30)
        while (rest := lines.get()) is not None:
            seen.append(rest)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -sent, seen[-5:]
    if sent != signal.SIGKILL:
        assert not any("Traceback" in line for line in seen), seen
        assert any(f"interrupted by {signal_name}" in line for line in seen), seen[-5:]
    return seen


def assert_no_half_written_report(out: Path) -> None:
    for path in out.glob("*.csv"):
        read_csv(path)  # BOM first, a whole last line: a temp file renamed, never partial
    for path in out.glob("*.json"):
        assert path.read_bytes().endswith(b"}\n"), path


def history(site: Site) -> tuple[list[tuple[str, int]], list[str]]:
    with sqlite3.connect(site.db) as conn:
        opened = conn.execute("SELECT finding_id, COUNT(*) FROM finding_events"
                              " WHERE event = 'opened' GROUP BY finding_id").fetchall()
        outcomes = [row[0] for row in conn.execute("SELECT outcome FROM runs ORDER BY id")]
    return opened, outcomes


def _errors(site: Site) -> list[str]:
    with sqlite3.connect(site.db) as conn:
        return [row[0] for row in conn.execute("SELECT error FROM runs ORDER BY id")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, school: synth.SyntheticSchool,
                  emulator: RunningEmulator) -> tuple[int, dict[str, dict[str, str]]]:
    site = make_site(tmp_path_factory.mktemp("uninterrupted"), school, emulator.settings)
    done = site.nightly()
    assert done.returncode == ExitCode.NEW_HIGH_FINDINGS, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.returncode, stable_findings(next(site.out.glob("findings-*.csv")))


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", SIGNALS)
@pytest.mark.parametrize("point", POINTS, ids=[p.name for p in POINTS])
def test_killed_run_then_rerun_equals_uninterrupted(
        point: Point, signal_name: str, tmp_path: Path, school: synth.SyntheticSchool,
        emulator: RunningEmulator, uninterrupted: tuple[int, dict[str, dict[str, str]]]) -> None:
    code, want = uninterrupted
    site = make_site(tmp_path, school, emulator.settings)
    kill_at(site, emulator, point, signal_name)
    assert_no_half_written_report(site.out)
    _, outcomes = history(site)
    # SIGTERM and Ctrl-C record the run as interrupted; SIGKILL leaves it 'running' for the
    # next run to mark failed
    assert outcomes == (["complete"] if point.committed
                        else ["running"] if signal_name == "SIGKILL" else ["failed"])
    if not point.committed and signal_name != "SIGKILL":
        assert _errors(site) == [f"interrupted by {signal_name}"]

    again = site.nightly()
    assert "Traceback" not in again.stderr
    assert_no_half_written_report(site.out)
    assert not list(site.out.glob(".*.tmp")), "a killed write's temp file was left behind"
    got = stable_findings(next(site.out.glob("findings-*.csv")))
    opened, outcomes = history(site)
    if point.committed:
        # the killed run committed, but its reports and exit code never reached anyone: the
        # rerun the same day keeps the day's news (is_new, exit 3), so nothing is lost
        assert again.returncode == code, again.stderr[-2000:]
        assert outcomes == ["complete", "complete"]
        assert got == want
    else:
        assert again.returncode == code, again.stderr[-2000:]
        assert outcomes == ["failed", "complete"]  # the killed run is marked, not reused
        assert got == want  # same findings, still reported as new: nothing lost
    assert sorted(fid for fid, _ in opened) == sorted(want)  # each finding opened once
    assert all(count == 1 for _, count in opened)


def test_a_stop_whose_raise_was_lost_still_ends_the_run(site: Site) -> None:
    """A signal landing in a finalizer loses its KeyboardInterrupt (Python drops 'unraisable'
    exceptions): the stop it recorded still ends the run at the next stream, recorded as
    interrupted, and the next night completes it."""
    from m365guard import stopping
    from m365guard.pipeline import run_nightly

    streams: list[int] = []

    def stop_quietly(done: int, total: int) -> None:
        streams.append(done)
        if done == 3:
            stopping.request("SIGTERM")  # the handler ran; its raise went nowhere

    try:
        with pytest.raises(KeyboardInterrupt):
            run_nightly(site.policy(), site.conn(), site.out, progress=stop_quietly)
    finally:
        stopping._requested.clear()
    assert streams[-1] == 3, "the run read on after the stop"
    assert history(site)[1] == ["failed"]
    assert _errors(site) == ["interrupted by SIGTERM"]
    assert not list(site.out.glob("findings-*.csv"))
    assert run_nightly(site.policy(), site.conn(), site.out).run.outcome == "complete"

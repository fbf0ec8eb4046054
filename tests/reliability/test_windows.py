"""Windows: each stream reads from its own "read up to" mark; the clock never moves them back.

The tiny tenant is served by an emulator per test (tiny_site.py), its clock moved night by
night with `run_nightly(now=...)`. A message is planted in Jane Smith's sent items (a BCC
exposure of three parents); her mailbox fails one night, and the message must be found once it
can be read.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tiny_site import POLICY, TEACHER, found, serve, tiny, with_planted

from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode, GuardError
from m365guard.ledger import acknowledge
from m365guard.state import StateDB

__all__ = ["tiny"]


def test_a_mailbox_that_failed_its_first_night_is_read_from_that_night_on(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    start = Tenant.from_document(tiny).now
    doc = with_planted(tiny, start - timedelta(days=2))  # in the first night's window
    for school in serve(doc, tmp_path / "site", emu_workdir):
        first = school.night(start, failing=TEACHER)
        assert first.run.outcome == "partial" and first.exit_code == ExitCode.PARTIAL_RUN
        assert not found(first)
        second = school.night(start + timedelta(days=1))
        assert second.run.outcome == "complete"
        assert found(second), "the failed night's mail was never read"
        with StateDB.open(school.db) as db:
            marks = db.read_marks()
        assert marks[("jsmith@manbylodge.sch.uk", "sentitems")] == start + timedelta(days=1)


def test_a_resync_after_a_failed_night_starts_from_the_streams_own_mark(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    start = Tenant.from_document(tiny).now
    doc = with_planted(tiny, start + timedelta(hours=6))  # sent in the night that fails
    for school in serve(doc, tmp_path / "site", emu_workdir):
        assert school.night(start).run.outcome == "complete"
        failed = school.night(start + timedelta(days=1), failing=TEACHER)
        assert failed.run.outcome == "partial" and not found(failed)
        with StateDB.open(school.db) as db:  # the failed stream's mark did not move
            marks = db.read_marks()
        assert marks[("jsmith@manbylodge.sch.uk", "sentitems")] == start
        assert marks[("head@manbylodge.sch.uk", "inbox")] == start + timedelta(days=1)
        school.tenant.expire_delta_tokens()  # 410 for every saved delta link
        third = school.night(start + timedelta(days=2))
        assert third.run.outcome == "complete"
        assert found(third), "the resync started at the global window, after the planted mail"
        # hers (the planted one and the tiny tenant's "Tomorrow's message", both sent in the
        # failed night) and nobody else's: everyone else resynced from their own mark
        assert third.run.counts["messages"] == 2


def test_a_clock_behind_or_far_ahead_of_the_last_run_is_refused_before_graph(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        start = school.start
        first = school.night(start)
        assert first.run.outcome == "complete" and len(first.update.new) >= 2
        requests = school.emulator.stats.total
        for now, words in ((start - timedelta(hours=1), "earlier than"),
                           (start + timedelta(days=61), "days after")):
            with pytest.raises(GuardError) as refused:
                school.night(now)
            assert refused.value.exit_code == ExitCode.STATE_REFUSED
            message = refused.value.message
            assert words in message and "\n" not in message, message
            assert "clock" in message and start.date().isoformat() in message
        assert school.emulator.stats.total == requests, "Graph was contacted"
        with StateDB.open(school.db) as db:
            assert [run.outcome for run in db.runs_between(start - timedelta(days=9),
                                                           start + timedelta(days=999))] \
                == ["complete"]
            assert len(db.findings()) == len(first.update.new)
        # a long gap that is real: raise [state] max_gap_days for one run
        policy = school.root / "policies.toml"
        policy.write_text(POLICY.replace("[state]\n", "[state]\nmax_gap_days = 90\n"))
        later = school.night(start + timedelta(days=61))
        assert later.run.outcome == "complete"
        assert later.run.window_start == start  # windows never leave a gap or move back


def test_a_clock_years_ahead_never_prunes_the_history(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        first = school.night(school.start)
        message = first.update.new[first.update.new["object_type"] == "message"].iloc[0]
        with StateDB.open(school.db) as db, db.transaction():  # the DSL dealt with it
            known = db.findings(ids=[message["finding_id"]]).to_dict("records")[0]
            db.write_findings(acknowledge(known, "dsl", "spoken to", school.start))
        with pytest.raises(GuardError) as refused:  # 800 days on: past the 400-day retention
            school.night(school.start + timedelta(days=800))
        assert refused.value.exit_code == ExitCode.STATE_REFUSED
        with StateDB.open(school.db) as db:
            kept = db.findings(ids=[message["finding_id"]])
            assert list(kept["status"]) == ["acknowledged"]
            assert len(db.findings()) == len(first.update.new)

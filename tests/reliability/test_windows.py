"""Windows: each stream reads from its own "read up to" mark; the clock never moves them back.

The tiny tenant (tests/data/tiny-tenant.json) is served by an emulator per test, its clock
moved night by night with `run_nightly(now=...)`. A message is planted in Jane Smith's sent
items (a BCC exposure of three parents); her mailbox is made to fail one night (outside the
app's Exchange scope: 403 ErrorAccessDenied), and the message must be found once it can be read.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from site_support import DATA

from m365guard.config import load_policy
from m365guard.demo import connection_for
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode, GuardError
from m365guard.ledger import acknowledge
from m365guard.pipeline import NightlyOutcome, run_nightly
from m365guard.state import StateDB

TEACHER = "a1000000-0000-4000-8000-000000000002"  # jsmith@manbylodge.sch.uk
PLANTED = "<planted-bcc@manbylodge.sch.uk>"
POLICY = """\
[school]
name = "Manby Lodge"
domains = ["manbylodge.sch.uk"]
[people]
staff_groups = ["All Staff"]
[collect]
include_audit_log = false
[state]
path = "state/m365guard.db"
[output]
dir = "out"
"""


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def planted_message(sent_at: datetime) -> dict[str, Any]:
    """Jane Smith to three parents on webmail, all in To: visible once `sent_at` has passed."""
    def parent(n: int) -> dict[str, Any]:
        return {"emailAddress": {"name": f"Parent {n}", "address": f"parent.{n}@gmail.com"}}

    return {
        "id": "AAMkPLANTED0001=", "internetMessageId": PLANTED, "conversationId": "AAQkPLANTED",
        "subject": "Class trip", "createdDateTime": stamp(sent_at),
        "lastModifiedDateTime": stamp(sent_at), "sentDateTime": stamp(sent_at),
        "receivedDateTime": stamp(sent_at), "hasAttachments": False, "isRead": True,
        "isDraft": False,
        "from": {"emailAddress": {"name": "Jane Smith", "address": "jsmith@manbylodge.sch.uk"}},
        "toRecipients": [parent(1), parent(2), parent(3)], "ccRecipients": [],
        "bccRecipients": [], "replyTo": [],
    }


@dataclass
class School:
    """The tiny tenant served over HTTPS, and its installation under `root`."""

    tenant: Tenant
    emulator: RunningEmulator
    root: Path
    start: datetime

    @property
    def db(self) -> Path:
        return self.root / "state" / "m365guard.db"

    def night(self, now: datetime, *, failing: str | None = None) -> NightlyOutcome:
        """One nightly run at `now`; `failing`: a user id whose mailbox answers 403."""
        if now > self.tenant.now:
            self.tenant.advance_to(now)
        scope = None
        if failing is not None:
            scope = frozenset(u["id"] for u in self.tenant.users if u["id"] != failing)
        self.emulator.set_faults(FaultConfig(retry_after_s=(0.01,), mailbox_scope=scope))
        try:
            return run_nightly(load_policy(self.root / "policies.toml"),
                               connection_for(self.emulator.settings), self.root / "out",
                               now=now)
        finally:
            self.emulator.set_faults(FaultConfig(retry_after_s=(0.01,)))


def serve(doc: dict[str, Any], root: Path, workdir: Path) -> Iterator[School]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies.toml").write_text(POLICY, encoding="utf-8")
    tenant = Tenant.from_document(doc)
    with start_in_thread(tenant, workdir=workdir) as running:
        yield School(tenant, running, root, tenant.now)


@pytest.fixture
def tiny() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((DATA / "tiny-tenant.json").read_bytes())
    return doc


def with_planted(doc: dict[str, Any], sent_at: datetime) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["mailboxes"][TEACHER]["sentitems"].append(planted_message(sent_at))
    return doc


def found(outcome: NightlyOutcome, object_id: str = PLANTED) -> bool:
    return bool((outcome.update.new["object_id"] == object_id).any())


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

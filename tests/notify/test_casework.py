"""Accepted exceptions and the breach log: against the emulator, and on the sample school."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from notify_school import ADDRESSES, School

from m365guard.clauses import clause_texts
from m365guard.cli.reading import audit_inputs
from m365guard.cli.weekly_input import read_weekly_input
from m365guard.errors import ExitCode, GuardError
from m365guard.notify import breaches, exceptions
from m365guard.notify import log as notify_log
from m365guard.notify.nightly import notify_after_run
from m365guard.reports.audit import build_audit_pack, clause_coverage
from m365guard.reports.weekly import new_this_week
from m365guard.reports.weekly_files import write_weekly_reports
from m365guard.reports.weeks import IsoWeek
from m365guard.rules import RULES
from m365guard.state import StateDB

LONDON = ZoneInfo("Europe/London")
FORWARDING = "external-forwarding-personal"


def _it_mail_ids(school: School) -> list[set[str]]:
    return [set(re.findall(r"<code>([^<]+)</code>", mail.message["body"]["content"]))
            for mail in school.outbox.sent if mail.recipients() == [ADDRESSES["it"]]]


def test_an_accepted_exception_suppresses_then_reopens_after_expiry(school: School) -> None:
    night0 = school.night(0)
    forwarding = night0.update.new[(night0.update.new["rule_id"] == FORWARDING)
                                   & (night0.update.new["severity"] == "high")]
    assert len(forwarding), "the synthetic school has forwarding to personal addresses"
    accepted_at = night0.run.started_at + timedelta(minutes=30)
    day0 = accepted_at.astimezone(LONDON).date()
    conn = notify_log.connect(school.policy.state.path)
    try:  # accepted through the next day: covers night 0 and night 1, not night 2
        exceptions.accept(conn, "rule", FORWARDING, "Mrs Head", "LA transfer until Friday",
                          day0 + timedelta(days=1), accepted_at, LONDON)
    finally:
        conn.close()
    notify_after_run(school.policy, school.conn, night0, now=accepted_at + timedelta(hours=1))
    assert _it_mail_ids(school) == []  # suppressed: no alert for the accepted findings
    assert len(school.outbox.sent) >= 1  # the other roles were told

    with StateDB.open(school.policy.state.path) as db:
        data = read_weekly_input(db, IsoWeek.containing(accepted_at, LONDON),
                                 accepted_at + timedelta(hours=2), school_name="X",
                                 rule_titles={})
    assert set(forwarding["finding_id"]) <= data.accepted
    assert not set(new_this_week(data)["finding_id"]) & set(forwarding["finding_id"])
    page = write_weekly_reports(school.policy.output.dir / "weekly", data).html.read_text(
        encoding="utf-8")
    assert "Accepted exceptions (1)" in page and "LA transfer until Friday" in page

    night1 = school.night(1)
    notify_after_run(school.policy, school.conn, night1,
                     now=night1.run.started_at + timedelta(hours=1))
    assert _it_mail_ids(school) == []
    night2 = school.night(2)  # the exception ended at local midnight before this night
    notify_after_run(school.policy, school.conn, night2,
                     now=night2.run.started_at + timedelta(hours=1))
    still_open = set(night2.update.still_open["finding_id"]) & set(forwarding["finding_id"])
    assert still_open, "the forwarding is still there on night 2"
    (reopened,) = _it_mail_ids(school)
    assert still_open <= reopened  # back: alerted to IT again


def test_a_bcc_exposure_opens_a_breach_entry_with_the_72_hour_deadline(school: School,
                                                                        tmp_path: Path) -> None:
    night0 = school.night(0)
    notify_after_run(school.policy, school.conn, night0,
                     now=night0.run.started_at + timedelta(hours=1))
    bcc = night0.update.new[night0.update.new["rule_id"] == breaches.BCC_RULE]
    exposing = bcc[bcc["summary"].map(lambda text: (breaches.exposure(text) or (0, 0))[1] >= 1)]
    assert len(exposing), "the synthetic school shows parents' addresses in To/Cc"
    conn = notify_log.connect(school.policy.state.path)
    try:
        log = breaches.entries(conn).set_index("finding_id")
        assert set(log.index) == set(exposing["finding_id"])  # every exposure, nothing else
        for row in exposing.to_dict("records"):
            entry = log.loc[row["finding_id"]]
            assert entry["found_at"] == row["first_seen"] == night0.run.started_at
            assert entry["decide_by"] - entry["found_at"] == timedelta(hours=72)
            assert entry["addresses_shown"] == len(str(row["counterparts"]).split(";"))
            assert entry["sent_at"] == row["occurred_at"]
            assert entry["decision"] == ""
        first = str(exposing["finding_id"].iloc[0])
        breaches.decide(conn, first, "not-reportable", "Mr Dpo", "parents of one class, low risk",
                        night0.run.started_at + timedelta(hours=30))
        with pytest.raises(GuardError) as bad:
            breaches.decide(conn, first, "maybe", "Mr Dpo", "x", night0.run.started_at)
        assert bad.value.exit_code == ExitCode.USAGE
        decided = breaches.entries(conn).set_index("finding_id").loc[first]
        assert (decided["decision"], decided["decided_by"]) == ("not-reportable", "Mr Dpo")
    finally:
        conn.close()
    with StateDB.open(school.policy.state.path) as db:
        morning = night0.run.started_at + timedelta(hours=5)
        data = read_weekly_input(db, IsoWeek.containing(morning, LONDON), morning,
                                 school_name="X", rule_titles={})
        period = morning.date() - timedelta(days=1), morning.date()
        pack = build_audit_pack(audit_inputs(db, *period), *period,
                                tmp_path / "audit", clause_texts(), clause_coverage(RULES),
                                morning, school_name="X")
    page = write_weekly_reports(tmp_path / "weekly", data).html.read_text(encoding="utf-8")
    assert page.index("Breach decisions due") < page.index("<h2>New this week")
    assert page.count('class="breach-open"') == len(exposing)  # decided later than the cut
    with zipfile.ZipFile(pack.zip_path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/breach-log.csv"))
        rows = list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8-sig"))))
    assert {row["finding_id"] for row in rows} == set(exposing["finding_id"])


def test_exceptions_match_by_finding_mailbox_address_and_rule() -> None:
    findings = pd.DataFrame([
        {"finding_id": "A", "rule_id": "r1", "actor": "a@s.example",
         "object_id": "a@s.example/rule", "counterparts": 'Mum <mum@gmail.com>'},
        {"finding_id": "B", "rule_id": "r2", "actor": "shared@s.example",
         "object_id": "b@s.example/x", "counterparts": "dad@aol.com;mum@gmail.com"},
        {"finding_id": "C", "rule_id": "r2", "actor": "c@s.example", "object_id": "<m@x>",
         "counterparts": "gran@yahoo.co.uk"}])
    now = datetime(2026, 3, 1, tzinfo=UTC)

    def table(scope: str, value: str) -> pd.DataFrame:
        return pd.DataFrame([{"scope": scope, "value": value, "created_at": pd.Timestamp(now),
                              "expires_at": pd.Timestamp(now + timedelta(days=2))}])

    assert exceptions.covered(findings, table("finding", "A"), now) == {"A"}
    assert exceptions.covered(findings, table("mailbox", "b@s.example"), now) == {"B"}
    assert exceptions.covered(findings, table("address", "mum@gmail.com"), now) == {"A", "B"}
    assert exceptions.covered(findings, table("rule", "r2"), now) == {"B", "C"}
    later = now + timedelta(days=3)
    assert exceptions.covered(findings, table("rule", "r2"), later) == set()
    assert exceptions.expired_between(findings, table("rule", "r2"), now, later) == {"B", "C"}


def test_accept_refuses_the_past_and_more_than_a_year(tmp_path: Path) -> None:
    conn = notify_log.connect(tmp_path / "s.db")
    now = datetime(2026, 3, 27, 12, tzinfo=UTC)
    try:
        with pytest.raises(GuardError):
            exceptions.accept(conn, "rule", "r", "me", "why", date(2026, 3, 26), now, LONDON)
        with pytest.raises(GuardError):
            exceptions.accept(conn, "rule", "r", "me", "why", date(2027, 4, 1), now, LONDON)
        exceptions.accept(conn, "rule", "r", "me", "why", date(2026, 3, 29), now, LONDON)
        (row,) = exceptions.exceptions(conn).to_dict("records")
    finally:
        conn.close()
    # through Sunday 29 March (clocks go forward that day): ends at Monday 00:00 BST
    assert row["expires_at"] == pd.Timestamp("2026-03-29T23:00:00Z")
    with pytest.raises(GuardError):
        exceptions.target(None, "a@b.c", None, "r")

"""Alerts and the weekly page, end to end against the emulator over HTTPS.

The real nightly job (msal + msgraph-sdk against the emulated school), then the real alert and
weekly delivery: sendMail through the SDK to the emulator, which checks Mail.Send as Exchange
RBAC for Applications scopes it and keeps what was sent; the Teams card goes to the emulator's
webhook receiver. Expectations come from the run's own committed findings, read from state.
"""

from __future__ import annotations

import re
from datetime import timedelta

import orjson
import pandas as pd
import pytest
from notify_school import ADDRESSES, SENDER, School

from m365guard.cli.weekly_input import read_weekly_input
from m365guard.errors import ExitCode, GuardError
from m365guard.notify import log as notify_log
from m365guard.notify.nightly import notify_after_run
from m365guard.notify.roles import next_step
from m365guard.notify.weekly import send_weekly_page
from m365guard.reports.weekly_files import write_weekly_reports
from m365guard.reports.weeks import IsoWeek
from m365guard.state import StateDB


def _ids_in(html: str) -> set[str]:
    return set(re.findall(r"<code>([^<]+)</code>", html))


def test_a_night_with_new_high_findings_mails_each_role_once(school: School) -> None:
    outcome = school.night(0)
    assert outcome.exit_code == ExitCode.NEW_HIGH_FINDINGS
    fresh = pd.concat([outcome.update.new, outcome.update.reopened])
    high = fresh[fresh["severity"] == "high"]
    expected: dict[str, set[str]] = {}
    for row in high.to_dict("records"):
        expected.setdefault(next_step(row["rule_id"]).role, set()).add(row["finding_id"])
    assert len(expected) >= 2, "the synthetic school's first night has highs for several roles"

    entries = notify_after_run(school.policy, school.conn, outcome)
    sent = school.outbox.sent
    assert len(sent) == len(expected)  # exactly one message per responsible role
    by_recipient = {tuple(mail.recipients()): mail for mail in sent}
    for role, ids in expected.items():
        mail = by_recipient[(ADDRESSES[role],)]
        assert mail.sender == SENDER
        body = mail.message["body"]
        assert body["contentType"].lower() == "html"
        assert _ids_in(body["content"]) == ids  # the right findings, and only those
        assert "Next step" in body["content"] and next_step(
            high.set_index("finding_id").loc[next(iter(ids)), "rule_id"]).who in body["content"]
        assert str(len(ids)) in mail.message["subject"]
    cards = school.outbox.webhooks["teams"]
    assert len(cards) == 1
    content = cards[0]["attachments"][0]["content"]
    assert content["type"] == "AdaptiveCard"
    facts = {fact["title"]: fact["value"] for fact in content["body"][1]["facts"]}
    assert sum(int(value) for value in facts.values()) == len(high)
    assert not any(actor in orjson.dumps(cards[0]).decode() for actor in high["actor"])

    run_json = orjson.loads(outcome.paths.run_json.read_bytes())
    assert {(n["role"], n["status"]) for n in run_json["notifications"]} == {
        *((role, "sent") for role in expected), ("teams", "sent")}
    assert {entry.status for entry in entries} == {"sent"}

    again = notify_after_run(school.policy, school.conn, outcome)  # a rerun of the same night
    assert again == [] and len(school.outbox.sent) == len(expected)
    assert len(school.outbox.webhooks["teams"]) == 1


def test_a_failure_to_notify_is_logged_and_shown_but_keeps_the_run(
        unscoped_school: School) -> None:
    school = unscoped_school
    outcome = school.night(0)
    entries = notify_after_run(school.policy, school.conn, outcome, now=outcome.run.finished_at)
    mail_entries = [entry for entry in entries if entry.channel == "mail"]
    assert mail_entries and all(entry.status == "failed" for entry in mail_entries)
    assert all("403 ErrorAccessDenied" in entry.error for entry in mail_entries)
    assert school.outbox.sent == []
    run_json = orjson.loads(outcome.paths.run_json.read_bytes())
    assert {n["status"] for n in run_json["notifications"] if n["channel"] == "mail"} == {
        "failed"}
    with StateDB.open(school.policy.state.path) as db:
        assert db.run(outcome.run.run_id).outcome == "complete"  # the run is kept
        week = IsoWeek.containing(outcome.run.started_at, IsoWeek(2000, 1).zone)
        data = read_weekly_input(db, week, outcome.run.started_at + timedelta(days=8),
                                 school_name="Manby Lodge", rule_titles={})
    page = write_weekly_reports(school.policy.output.dir / "weekly", data).html.read_text(
        encoding="utf-8")
    failed = [entry for entry in entries if entry.status == "failed"]
    assert f"Alerts not delivered ({len(failed)})" in page
    assert "ErrorAccessDenied" in page
    conn = notify_log.connect(school.policy.state.path)
    try:
        assert len(notify_log.entries(conn)) == len(entries)
    finally:
        conn.close()


def test_weekly_send_delivers_the_page_with_its_csvs(school: School) -> None:
    outcome = school.night(0)
    school.night(1)
    morning = outcome.run.started_at + timedelta(days=8)
    with StateDB.open(school.policy.state.path) as db:
        week = IsoWeek.containing(outcome.run.started_at, IsoWeek(2000, 1).zone)
        data = read_weekly_input(db, week, morning, school_name="Manby Lodge",
                                 rule_titles={})
    paths = write_weekly_reports(school.policy.output.dir / "weekly", data)
    line = send_weekly_page(school.policy, school.conn, data, paths, morning)
    assert line == f"sent to 3 recipient(s) from {SENDER}"
    mail = school.outbox.sent[-1]
    assert sorted(mail.recipients()) == sorted(
        ADDRESSES[role] for role in ("headteacher", "dsl", "dpo"))
    assert mail.message["body"]["content"] == paths.html.read_text(encoding="utf-8")
    assert mail.attachment(paths.detail_csv.name) == paths.detail_csv.read_bytes()
    assert mail.attachment(paths.summary_csv.name) == paths.summary_csv.read_bytes()
    assert "week" in mail.message["subject"]


def test_weekly_send_without_permission_is_one_line_and_the_page_stays(
        unscoped_school: School) -> None:
    school = unscoped_school
    outcome = school.night(0)
    with StateDB.open(school.policy.state.path) as db:
        week = IsoWeek.containing(outcome.run.started_at, IsoWeek(2000, 1).zone)
        data = read_weekly_input(db, week, outcome.run.started_at + timedelta(days=8),
                                 school_name="X", rule_titles={})
    paths = write_weekly_reports(school.policy.output.dir / "weekly", data)
    with pytest.raises(GuardError) as refused:
        send_weekly_page(school.policy, school.conn, data, paths, outcome.run.started_at)
    assert refused.value.exit_code == ExitCode.PERMISSION_MISSING
    assert "written but not sent" in refused.value.message
    assert paths.html.exists()

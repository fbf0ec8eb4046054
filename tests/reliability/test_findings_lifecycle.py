"""Findings that must not vanish while still true, and news that must not be lost (issue 18,
issue 13's exceptions, issue 15's same-day rerun).

The tiny tenant (tests/data/tiny-tenant.json) over the real emulator, msal, msgraph-sdk and
SQLite; the nights are simulated (`run_nightly(now=...)`) while the emulator's clock moves, and
the tenant changes between nights as an admin or a member of staff would change it.
"""

from __future__ import annotations

import copy
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pandas as pd
import pytest
from site_support import DATA, read_csv

from m365guard.cli.weekly_input import read_weekly_input
from m365guard.config import load_policy
from m365guard.demo import connection_for
from m365guard.emulator.resources import Window, parse_time
from m365guard.emulator.sendmail import outbox
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode
from m365guard.exports import read_forwarding_export
from m365guard.forwarding import latest_forwarding, remembered
from m365guard.ledger import acknowledge
from m365guard.notify import exceptions
from m365guard.notify.log import connect
from m365guard.notify.nightly import notify_after_run
from m365guard.pipeline import NightlyOutcome, run_nightly
from m365guard.reports.weekly_page import weekly_html
from m365guard.reports.weeks import IsoWeek
from m365guard.rules import rule_titles
from m365guard.schema import MIGRATIONS
from m365guard.state import StateDB
from m365guard.tables import SCHEMAS, make_table

LONDON = ZoneInfo("Europe/London")
JSMITH = "jsmith@manbylodge.sch.uk"
FORWARDING_RULE = "external-forwarding-personal"
BCC_RULE = "multi-recipient-without-bcc"
MAILBOX_FORWARD = f"{JSMITH}/jane.smith1987@gmail.com"
INBOX_RULE = f"{JSMITH}/AQAAAJ5dZqA="
CLEARING_RECORD = "d4000000-0000-4000-8000-000000000004"  # Set-Mailbox ForwardingSmtpAddress ""
POLICY = """\
[school]
name = "Manby Lodge"
domains = ["manbylodge.sch.uk"]
[people]
staff_groups = ["All Staff"]
[collect]
audit_poll_seconds = 0.0
[state]
path = "state/db"
max_gap_days = 400  # nights months apart: the audit log's 180 days pass between two
[output]
dir = "out"
"""
RULE_OFF = f"[rules.{FORWARDING_RULE}]\nenabled = false\n"
IT = "it@manbylodge.sch.uk"
NOTIFY = f'[notify]\nsender = "head@manbylodge.sch.uk"\nit = ["{IT}"]\n'


@dataclass
class Tiny:
    """The tiny school, served; each night runs the real nightly job at the given time."""

    root: Path
    tenant: Tenant
    emulator: RunningEmulator
    start: datetime

    def night(self, days: float, policy_extra: str = "") -> NightlyOutcome:
        now = self.start + timedelta(days=days)
        self.tenant.advance_to(now)
        (self.root / "policies.toml").write_text(POLICY + policy_extra, encoding="utf-8")
        return run_nightly(load_policy(self.root / "policies.toml"),
                           connection_for(self.emulator.settings), self.root / "out", now=now)

    def alert(self, outcome: NightlyOutcome) -> list[set[str]]:
        """Send the night's alerts as `nightly` does; the finding ids of each mail to IT."""
        notify_after_run(load_policy(self.root / "policies.toml"),
                         connection_for(self.emulator.settings), outcome,
                         now=outcome.run.started_at + timedelta(minutes=5))
        return [set(re.findall(r"<code>([^<]+)</code>", mail.message["body"]["content"]))
                for mail in outbox(self.tenant).sent if mail.recipients() == [IT]]

    @property
    def db_path(self) -> Path:
        return self.root / "state" / "db"

    def findings(self) -> pd.DataFrame:
        with StateDB.open(self.db_path) as db:
            return db.findings().set_index("object_id")

    def inbox_rule(self) -> dict[str, Any]:
        mailbox = next(box for box in self.tenant.mailboxes.values() if box.rules)
        rule: dict[str, Any] = mailbox.rules[0][1]
        return rule

    def add_audit_record(self, at: datetime, parameters: list[dict[str, str]]) -> None:
        record = {**self.template, "id": f"added-{at:%Y%m%d%H%M}",
                  "createdDateTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "auditData": {**self.template["auditData"], "Parameters": parameters}}
        self.tenant.audit_records.append((at.timestamp(), Window.of(record), record))

    @property
    def template(self) -> dict[str, Any]:
        return next(r for _, _, r in self.tenant.audit_records if r["operation"] == "Set-Mailbox")


@pytest.fixture
def tiny(tmp_path: Path, emu_workdir: Path) -> Iterator[Tiny]:
    """The tiny tenant without its record clearing the mailbox forwarding: jsmith forwards to
    a personal Gmail address from 18 Nov 2024 until someone changes it."""
    doc: dict[str, Any] = orjson.loads((DATA / "tiny-tenant.json").read_bytes())
    doc = copy.deepcopy(doc)
    doc["auditRecords"] = [r for r in doc["auditRecords"] if r["id"] != CLEARING_RECORD]
    tenant = Tenant.from_document(doc)
    root = tmp_path / "site"
    root.mkdir()
    with start_in_thread(tenant, workdir=emu_workdir) as running:
        yield Tiny(root, tenant, running, parse_time(doc["clock"]["start"]))


def csv_rows(outcome: NightlyOutcome) -> dict[str, dict[str, str]]:
    return {row["object_id"]: row for row in read_csv(outcome.paths.findings_csv)}


# -- 1. mailbox forwarding is state -----------------------------------------------------------

def test_mailbox_forwarding_stays_open_after_its_audit_record_ages_out(tiny: Tiny) -> None:
    first = tiny.night(0)
    assert MAILBOX_FORWARD in set(first.update.new["object_id"])
    # 200 days on, the Set-Mailbox record is outside the audit log's 180 days: the forward is
    # still on (nothing changed it), so the finding stays open and the CSV still lists it
    later = tiny.night(200)
    assert later.run.outcome == "complete"
    assert MAILBOX_FORWARD not in set(later.update.resolved["object_id"])
    assert MAILBOX_FORWARD in set(later.update.still_open["object_id"])
    row = csv_rows(later)[MAILBOX_FORWARD]
    assert (row["severity"], row["occurred_at"]) == ("high", "2024-11-18T20:00:00Z")
    with StateDB.open(tiny.db_path) as db:
        inventory = db.latest_inventory()
    assert MAILBOX_FORWARD in set(inventory["object_id"])
    # evidence that it changed: a later Set-Mailbox record clearing it
    tiny.add_audit_record(tiny.start + timedelta(days=200, hours=9),
                          [{"Name": "Identity", "Value": JSMITH},
                           {"Name": "ForwardingSmtpAddress", "Value": ""}])
    cleared = tiny.night(201)
    assert MAILBOX_FORWARD in set(cleared.update.resolved["object_id"])
    assert tiny.findings().loc[MAILBOX_FORWARD, "status"] == "resolved"
    # and it stays resolved once that record, too, has aged out
    assert MAILBOX_FORWARD not in set(tiny.night(400).update.open_now["object_id"])


# -- 2. a rule turned off is not checked, so nothing it found resolves --------------------------

def test_a_rule_turned_off_for_a_night_leaves_its_findings_open(tiny: Tiny) -> None:
    first = tiny.night(0)
    forwarding = set(first.update.new.loc[first.update.new["rule_id"] == FORWARDING_RULE,
                                          "object_id"])
    assert forwarding == {MAILBOX_FORWARD, INBOX_RULE}
    off = tiny.night(1, RULE_OFF)
    assert off.update.resolved.empty
    assert forwarding <= set(off.update.still_open["object_id"])
    assert off.run.rules_off == (FORWARDING_RULE,)
    back = tiny.night(2)  # (the tenant's "Redirect later" rule appears tonight: new)
    assert not forwarding & set(back.update.fresh["object_id"])
    assert forwarding <= set(back.update.still_open["object_id"])
    assert set(tiny.findings().loc[list(forwarding), "status"]) == {"open"}
    with StateDB.open(tiny.db_path) as db:
        assert db.run(off.run.run_id).rules_off == (FORWARDING_RULE,)
        week = IsoWeek.containing(back.run.started_at, LONDON)
        data = read_weekly_input(db, week, back.run.started_at + timedelta(hours=5),
                                 school_name="Manby Lodge", rule_titles=rule_titles())
    page = weekly_html(data, detail_name="detail.csv")
    assert "Not checked, turned off in policies.toml" in page
    assert f"{rule_titles()[FORWARDING_RULE]} on 1 night" in page


# -- 3. a finding follows what its object does now ----------------------------------------------

def test_an_inbox_rule_turned_on_is_escalated_news_even_after_an_acknowledgement(
        tiny: Tiny) -> None:
    tiny.inbox_rule()["isEnabled"] = False
    first = tiny.night(0)
    info = first.update.new.set_index("object_id").loc[INBOX_RULE]
    assert info["severity"] == "info"
    with StateDB.open(tiny.db_path) as db, db.transaction():  # "turned off: fine" says IT
        row = db.findings(ids=[str(info["finding_id"])]).iloc[0].to_dict()
        db.write_findings(acknowledge(row, "IT", "rule is off", first.run.started_at))
    tiny.inbox_rule()["isEnabled"] = True
    turned_on = tiny.night(1)
    row = csv_rows(turned_on)[INBOX_RULE]
    assert (row["severity"], row["is_new"]) == ("high", "true")
    assert "turned off" not in row["summary"] and row["why_new"] == "escalated"
    assert turned_on.exit_code == ExitCode.NEW_HIGH_FINDINGS
    assert list(turned_on.update.escalated["object_id"]) == [INBOX_RULE]
    stored = tiny.findings().loc[INBOX_RULE]
    assert (stored["severity"], stored["status"]) == ("high", "open")
    with StateDB.open(tiny.db_path) as db:
        events = db.finding_history([str(info["finding_id"])])
    assert events["event"].tolist() == ["opened", "acknowledged", "escalated"]
    assert csv_rows(tiny.night(2))[INBOX_RULE]["is_new"] == "false"  # news once, then open


def test_an_escalation_is_alerted_like_a_new_high_finding(tiny: Tiny) -> None:
    # Exchange RBAC for Applications: the app may send as the sender mailbox only
    outbox(tiny.tenant).grant(tiny.emulator.settings.client_id, "head@manbylodge.sch.uk")
    tiny.inbox_rule()["isEnabled"] = False
    first = tiny.night(0, NOTIFY)
    rule_id = str(first.update.new.set_index("object_id").loc[INBOX_RULE, "finding_id"])
    assert rule_id not in set().union(*tiny.alert(first))  # info: no alert
    tiny.inbox_rule()["isEnabled"] = True
    mails = tiny.alert(tiny.night(1, NOTIFY))
    assert len(mails) == 2 and mails[-1] == {rule_id}  # one mail to IT that night, the rule


def test_a_rerun_the_same_day_sends_the_alert_the_first_run_could_not(tiny: Tiny) -> None:
    first = tiny.night(0, NOTIFY)
    assert tiny.alert(first) == []  # the app may not send as the sender yet: 403, logged
    outbox(tiny.tenant).grant(tiny.emulator.settings.client_id, "head@manbylodge.sch.uk")
    rerun = tiny.night(0.25, NOTIFY)
    assert rerun.update.fresh.empty  # nothing new since the first run
    forwarding = set(first.update.new.loc[first.update.new["rule_id"] == FORWARDING_RULE,
                                          "finding_id"])
    assert tiny.alert(rerun) == [forwarding]
    assert tiny.alert(tiny.night(0.5, NOTIFY)) == [forwarding]  # once a night, still


def test_an_inbox_rule_re_pointed_shows_its_new_target_as_news(tiny: Tiny) -> None:
    tiny.night(0)
    target = tiny.inbox_rule()["actions"]["forwardTo"][0]["emailAddress"]
    target["address"] = "j.smith.home@outlook.com"
    moved = tiny.night(1)
    row = csv_rows(moved)[INBOX_RULE]
    assert row["counterparts"] == "j.smith.home@outlook.com"
    assert "j.smith.home@outlook.com" in row["summary"]
    assert (row["is_new"], row["why_new"]) == ("true", "retargeted")
    assert moved.exit_code == ExitCode.NEW_HIGH_FINDINGS


# -- 4. a same-day rerun keeps the day's news --------------------------------------------------

def test_a_rerun_the_same_day_keeps_is_new_for_what_the_first_run_found(tiny: Tiny) -> None:
    first = tiny.night(0)
    new_first = {oid for oid, row in csv_rows(first).items() if row["is_new"] == "true"}
    assert len(new_first) == 3 and first.exit_code == ExitCode.NEW_HIGH_FINDINGS
    rerun = tiny.night(0.3)  # 09:12 the same day: the same file, rewritten
    assert rerun.paths.findings_csv == first.paths.findings_csv
    rows = csv_rows(rerun)
    assert {oid for oid, row in rows.items() if row["is_new"] == "true"} == new_first
    assert {rows[oid]["why_new"] for oid in new_first} == {"found"}
    assert rerun.exit_code == ExitCode.NEW_HIGH_FINDINGS
    next_day = tiny.night(1)
    assert not any(row["is_new"] == "true" for row in csv_rows(next_day).values())
    assert next_day.exit_code == ExitCode.CLEAN


# -- 5. exceptions apply to the nightly CSV and exit code -------------------------------------

def test_an_accepted_finding_is_listed_as_accepted_and_exits_clean_until_it_expires(
        tiny: Tiny) -> None:
    conn = connect(tiny.db_path)
    try:  # through 21 Nov (local): covers the nights of 20 and 21 Nov, not 22 Nov
        for rule in (FORWARDING_RULE, BCC_RULE):
            exceptions.accept(conn, "rule", rule, "Mrs Head", "LA transfer", date(2024, 11, 21),
                              tiny.start - timedelta(hours=1), LONDON)
    finally:
        conn.close()
    first = tiny.night(0)
    assert first.exit_code == ExitCode.CLEAN and len(first.update.new) == 3
    rows = csv_rows(first)
    assert {(row["is_new"], row["why_new"], row["accepted_until"]) for row in rows.values()} \
        == {("false", "", "2024-11-21")}
    assert tiny.night(1).exit_code == ExitCode.CLEAN
    back = tiny.night(2)
    assert back.exit_code == ExitCode.NEW_HIGH_FINDINGS
    rows = csv_rows(back)
    assert {(rows[oid]["is_new"], rows[oid]["why_new"], rows[oid]["accepted_until"])
            for oid in first.update.new["object_id"]} == {("true", "exception ended", "")}
    assert tiny.night(3).exit_code == ExitCode.CLEAN


# -- the Exchange export is evidence too; the state file migrates -----------------------------

def test_an_export_listing_the_mailbox_without_forwarding_clears_a_remembered_forward(
        tmp_path: Path) -> None:
    known = make_table("mailbox_forwarding", [{
        "mailbox": JSMITH, "address": "smtp:jane.smith1987@gmail.com", "source": "audit",
        "deliver_and_forward": True, "observed_at": "2024-11-18T20:00:00Z", "record_id": "r1"}])
    export = tmp_path / "exchange-forwarding.csv"
    export.write_text('"UserPrincipalName","ForwardingSmtpAddress","ForwardingAddress",'
                      f'"DeliverToMailboxAndForward"\n"{JSMITH.upper()}","","","False"\n',
                      encoding="utf-8")
    for taken, forwards in (("2024-11-01T00:00:00Z", True), ("2025-01-01T00:00:00Z", False)):
        stamp = parse_time(taken).timestamp()
        os.utime(export, (stamp, stamp))
        tonight = make_table("mailbox_forwarding", [
            dict(zip(SCHEMAS["mailbox_forwarding"], row, strict=True))
            for row in read_forwarding_export(export)])
        latest = latest_forwarding(remembered(known, tonight))
        assert (len(latest) == 1) is forwards, taken  # an older export is no evidence


def test_a_state_file_at_schema_5_migrates_keeping_its_history(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:5], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute("INSERT INTO runs (started_at, outcome) VALUES ('2024-11-20T02:00:00+00:00',"
                 " 'complete')")
    conn.execute("INSERT INTO finding_events (finding_id, run_id, at, event, by, reason)"
                 " VALUES ('f1', 1, '2024-11-20T02:00:00+00:00', 'opened', 'm365guard', 'found')")
    conn.commit()
    conn.close()
    with StateDB.open(path) as db:
        assert db.schema_version == 6
        assert db.finding_history()["event"].tolist() == ["opened"]
        assert db.run(1).rules_off == ()
        assert db.forwarding_state().empty
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO finding_events (finding_id, run_id, at, event, by, reason)"
                 " VALUES ('f1', 1, '2024-11-21T02:00:00+00:00', 'escalated', 'm365guard', '')")
    conn.commit()
    conn.close()

"""Weekly CSVs (golden), the page's order and content, weeks on the school's clock (DST)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sample_school import SampleSchool, assert_matches_golden

from m365guard.cli.weekly_input import read_weekly_input
from m365guard.errors import ExitCode, GuardError
from m365guard.reports.weekly import (
    WeeklyInput,
    monitoring_nights,
    weekly_summary,
    weekly_trend,
)
from m365guard.reports.weekly_files import write_weekly_reports
from m365guard.reports.weeks import IsoWeek, refuse_future_period, refuse_future_week
from m365guard.state import StateDB

MONDAY_AFTER = datetime(2025, 3, 17, 7, 0, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")
TITLES = {"pupil-contact-non-school-channel": "Pupil contact <outside> school channels"}


W11 = IsoWeek(2025, 11)


def weekly_input(db: StateDB, week: IsoWeek = W11, now: datetime = MONDAY_AFTER,
                 school: str = "Manby Lodge") -> WeeklyInput:
    return read_weekly_input(db, week, now, school_name=school, rule_titles=TITLES)


def test_weekly_files_match_golden(sample: SampleSchool, tmp_path: Path) -> None:
    paths = write_weekly_reports(tmp_path, weekly_input(sample.db))
    assert paths.summary_csv.name == "weekly-summary-2025-W11.csv"
    assert_matches_golden(paths.summary_csv, "weekly-summary-2025-W11.csv")
    assert_matches_golden(paths.by_staff_csv, "weekly-by-staff-2025-W11.csv")


def test_summary_counts_follow_history(sample: SampleSchool) -> None:
    findings, history = sample.db.findings(), sample.db.finding_history()
    w10 = weekly_summary(findings, history, IsoWeek(2025, 10)).set_index(["rule_id", "severity"])
    w11 = weekly_summary(findings, history, IsoWeek(2025, 11)).set_index(["rule_id", "severity"])
    forwarding = ("external-forwarding-personal", "high")
    assert w10.loc[forwarding, "new_this_week"] == 1  # F1 opened
    assert w10.loc[forwarding, "open_at_week_end"] == 0  # F1 resolved on Sunday 9 March
    assert w10.loc[forwarding, "resolved_this_week"] == 1
    assert w11.loc[forwarding, "new_this_week"] == 2  # F1 reopened, F5 new
    assert w11.loc[forwarding, "change"] == 1
    bcc = ("multi-recipient-without-bcc", "medium")
    assert w10.loc[bcc, "open_at_week_end"] == 1
    assert w11.loc[bcc, "acknowledged_this_week"] == 1
    assert w11.loc[bcc, "open_at_week_end"] == 0


def test_page_puts_new_first_then_open_by_person_with_next_steps(
        sample: SampleSchool, tmp_path: Path) -> None:
    paths = write_weekly_reports(tmp_path, weekly_input(sample.db, school="St <Mary's> & Co"))
    page = paths.html.read_text(encoding="utf-8")
    assert "St &lt;Mary&#x27;s&gt; &amp; Co" in page
    assert "Pupil contact &lt;outside&gt; school channels" in page
    assert "<outside>" not in page and "<script" not in page.lower()
    assert not re.search(r"(src|href)=\"https?:", page)
    assert page.count("<svg") == 1
    # W11 new: F1 (reopened), F4, F5, F6; F3 opened in W11 too (Mon 10 March)
    new_part = page[page.index("<h2>New this week"):page.index("<h2>Still open")]
    assert new_part.count('class="new"') == 5
    for who in ("<strong>IT</strong>", "<strong>DSL</strong>", "<strong>Line manager</strong>"):
        assert who in new_part
    order = [page.index(f"<h2>{name}") for name in ("New this week", "Still open", "Monitoring")]
    assert order == sorted(order)
    assert "Checks ran completely on 6 of 7 nights" in page
    assert "Wed 12 Mar (partial)" in page
    assert "=cmd|" in page  # shown as text, escaped
    assert "weekly-detail-2025-W11.csv" in page
    assert "@media print" in page and "size:A4" in page
    assert paths.html.stat().st_mode & 0o077 == 0


def test_detail_csv_has_every_item_with_local_offsets(sample: SampleSchool,
                                                      tmp_path: Path) -> None:
    paths = write_weekly_reports(tmp_path, weekly_input(sample.db))
    detail = pd.read_csv(paths.detail_csv, encoding="utf-8-sig", dtype=str)
    assert set(detail["finding_id"]) == {"F1", "F3", "F4", "F5", "F6"}
    assert set(detail["section"]) == {"new"}
    assert detail.set_index("finding_id").loc["F3", "who_acts"] == "DSL"
    assert detail.set_index("finding_id").loc["F3", "first_seen"] == "2025-03-10T02:07:00+00:00"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", value)
               for value in detail["first_seen"])


def test_the_week_after_lists_older_items_as_still_open(sample: SampleSchool,
                                                        tmp_path: Path) -> None:
    later = datetime(2025, 3, 24, 7, tzinfo=UTC)
    data = weekly_input(sample.db, IsoWeek(2025, 12), later)
    page = write_weekly_reports(tmp_path, data).html.read_text(encoding="utf-8")
    assert "No new concerns this week" in page
    still = page[page.index("<h2>Still open, by person"):page.index("<h2>Monitoring")]
    assert "c.wood@school.example" in still and "a.jones@school.example" in still
    assert "<strong>IT</strong>" in still
    nights = monitoring_nights(data)
    assert set(nights["outcome"]) == {"missed"}  # monitoring had begun; no runs this week


def test_chart_starts_at_the_first_monitored_week(sample: SampleSchool) -> None:
    trend = weekly_trend(weekly_input(sample.db))
    assert list(trend.index[-2:]) == ["2025-W10", "2025-W11"]
    assert trend.loc["2025-W09"].isna().all() and trend.iloc[0].isna().all()
    assert trend.loc["2025-W10"].notna().all()
    assert trend.loc["2025-W10", "multi-recipient-without-bcc"] == 1


def test_weeks_before_monitoring_and_the_week_in_progress_say_so(sample: SampleSchool,
                                                                  tmp_path: Path) -> None:
    wednesday = datetime(2025, 3, 12, 12, tzinfo=UTC)
    data = weekly_input(sample.db, IsoWeek(2025, 11), wednesday)
    nights = monitoring_nights(data)
    assert list(nights["outcome"][3:]) == ["not yet"] * 4
    page = write_weekly_reports(tmp_path, data).html.read_text(encoding="utf-8")
    assert "(week in progress)" in page and "in progress" in page[page.index("<svg"):]
    assert "not monitored yet" in page[page.index("<svg"):]
    first_week = weekly_input(sample.db, IsoWeek(2025, 10), datetime(2025, 3, 4, 12, tzinfo=UTC))
    assert list(monitoring_nights(first_week)["outcome"][:2]) == ["complete", "complete"]
    assert list(monitoring_nights(first_week)["outcome"][2:]) == ["not yet"] * 5


def test_nights_before_the_first_run_are_not_monitored_yet(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as db:
        started = datetime(2025, 3, 13, 2, tzinfo=UTC)
        db.fail_run(db.start_run(None, started, started), "test", started)
        data = weekly_input(db)
    outcomes = list(monitoring_nights(data)["outcome"])
    assert outcomes == ["not monitored yet"] * 3 + ["failed", "missed", "missed", "missed"]


def test_iso_week_parsing_and_last_complete() -> None:
    assert IsoWeek.parse("2025-w11") == IsoWeek(2025, 11)
    assert IsoWeek.last_complete(MONDAY_AFTER) == IsoWeek(2025, 11)
    assert IsoWeek.last_complete(datetime(2025, 3, 16, 23, tzinfo=UTC)) == IsoWeek(2025, 10)
    assert IsoWeek(2025, 1).shifted(-1) == IsoWeek(2024, 52)
    with pytest.raises(GuardError) as bad:
        IsoWeek.parse("March")
    assert bad.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(("week", "hours", "start", "end"), [
    # clocks go forward 01:00 UTC Sunday 29 March 2026: the week is 167 hours
    (IsoWeek(2026, 13), 167, "2026-03-23T00:00:00+00:00", "2026-03-29T23:00:00+00:00"),
    (IsoWeek(2026, 14), 168, "2026-03-29T23:00:00+00:00", "2026-04-05T23:00:00+00:00"),
    # clocks go back 01:00 UTC Sunday 25 October 2026: the week is 169 hours
    (IsoWeek(2026, 43), 169, "2026-10-18T23:00:00+00:00", "2026-10-26T00:00:00+00:00"),
    (IsoWeek(2026, 44), 168, "2026-10-26T00:00:00+00:00", "2026-11-02T00:00:00+00:00"),
])
def test_weeks_cut_at_local_midnight_across_clock_changes(
        week: IsoWeek, hours: int, start: str, end: str) -> None:
    assert week.start.isoformat() == start and week.end.isoformat() == end
    assert week.end - week.start == timedelta(hours=hours)
    assert week.start.astimezone(LONDON).hour == 0 and week.end.astimezone(LONDON).hour == 0
    assert week.shifted(1).start == week.end


def test_a_finding_at_local_monday_0030_belongs_to_the_new_week(tmp_path: Path) -> None:
    """00:30 BST Monday 19 Oct 2026 is 23:30 UTC Sunday: UTC would put it in the week before."""
    found = datetime(2026, 10, 18, 23, 30, tzinfo=UTC)
    with StateDB.open(tmp_path / "s.db") as db:
        run_id = db.start_run(None, found, found)
        from sample_school import commit_run

        from m365guard.ledger import empty_inventory
        from m365guard.tables import make_table
        finding = make_table("findings", [{
            "finding_id": "X1", "rule_id": "external-forwarding-personal", "severity": "high",
            "policy_clause": "AUP-INTENDED-RECIPIENTS", "occurred_at": "2026-10-18T23:00:00Z",
            "actor": "a@school.example", "actor_role": "staff", "counterparts": "a@gmail.com",
            "object_type": "inbox_rule", "object_id": "a@school.example/r1",
            "summary": "rule"}])
        coverage = make_table("coverage", [{"mailbox": "a@school.example", "folder": "sentitems",
                                            "status": "ok", "reason": "", "items": 1}])
        commit_run(db, run_id, finding, coverage, empty_inventory(), "complete", {}, found, "")
        after = datetime(2026, 10, 27, 8, tzinfo=UTC)
        w43 = weekly_input(db, IsoWeek(2026, 43), after)
        w42 = weekly_input(db, IsoWeek(2026, 42), after)
    assert weekly_summary(w43.findings, w43.history, w43.week)["new_this_week"].sum() == 1
    assert weekly_summary(w42.findings, w42.history, w42.week).empty
    nights = monitoring_nights(w43)
    assert nights.loc[nights["date"] == date(2026, 10, 19), "outcome"].item() == "complete"
    detail = write_weekly_reports(tmp_path / "out", w43).detail_csv
    row = pd.read_csv(detail, encoding="utf-8-sig", dtype=str).iloc[0]
    assert row["first_seen"] == "2026-10-19T00:30:00+01:00"


def test_future_weeks_and_periods_are_refused() -> None:
    now = datetime(2026, 12, 2, 6, tzinfo=UTC)
    refuse_future_week(IsoWeek(2026, 49), now)  # in progress: allowed
    with pytest.raises(GuardError) as future:
        refuse_future_week(IsoWeek(2026, 50), now)
    assert future.value.exit_code == ExitCode.USAGE
    assert str(future.value.message).endswith("the last complete week is 2026-W48")
    refuse_future_period(date(2026, 9, 1), date(2026, 12, 2), now, LONDON)
    with pytest.raises(GuardError) as period:
        refuse_future_period(date(2026, 9, 1), date(2027, 8, 31), now, LONDON)
    assert period.value.exit_code == ExitCode.USAGE


def test_empty_state_still_writes_every_file(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as db:
        paths = write_weekly_reports(tmp_path / "out", weekly_input(db))
    assert pd.read_csv(paths.summary_csv, encoding="utf-8-sig").empty
    assert pd.read_csv(paths.detail_csv, encoding="utf-8-sig").empty
    page = paths.html.read_text(encoding="utf-8")
    assert "Nothing new this week" in page
    assert "Checks ran completely on 0 of 0 nights" in page
    assert "7 nights before monitoring began" in page


def test_weekly_and_audit_refuse_the_future_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    with StateDB.open(tmp_path / "state.db"):
        pass
    config = tmp_path / "policies.toml"
    config.write_text(
        '[school]\nname = "X"\ndomains = ["school.example"]\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n[output]\ndir = "{tmp_path / "out"}"\n',
        encoding="utf-8")
    def m365guard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from m365guard.cli.main import run; run()", *args,
             "-c", str(config)], capture_output=True, text=True, timeout=60, check=False)

    weekly = m365guard("weekly", "--week", "2999-W01")
    audit = m365guard("audit", "--from", "2025-09-01", "--to", "2999-08-31")
    for result in (weekly, audit):
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "future" in result.stderr or "not started" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_wrong_time_zone_is_one_line_naming_the_key(tmp_path: Path) -> None:
    from m365guard.config import load_policy

    config = tmp_path / "policies.toml"
    config.write_text('[school]\nname = "X"\ndomains = ["school.example"]\n'
                      'time_zone = "Europe/Londn"\n', encoding="utf-8")
    with pytest.raises(GuardError) as bad:
        load_policy(config)
    assert bad.value.exit_code == ExitCode.CONFIG_ERROR
    assert bad.value.message.startswith("policies.toml line 4: school.time_zone")
    assert "Europe/London" in bad.value.message
    config.write_text('[school]\nname = "X"\ndomains = ["school.example"]\n', encoding="utf-8")
    assert load_policy(config).school.time_zone == "Europe/London"


def test_ack_by_filter_accept_and_breaches_commands(tmp_path: Path) -> None:
    from sample_school import build_sample_school
    from typer.testing import CliRunner

    from m365guard.cli.main import app

    build_sample_school(tmp_path / "state.db").db.close()
    config = tmp_path / "policies.toml"
    config.write_text(
        '[school]\nname = "X"\ndomains = ["school.example"]\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n[output]\ndir = "{tmp_path / "out"}"\n',
        encoding="utf-8")
    runner = CliRunner()

    def m365guard(*args: str) -> str:
        result = runner.invoke(app, [*args, "-c", str(config)])
        assert result.exit_code == 0, result.output
        return result.output

    assert m365guard("findings", "ack", "--rule", "external-forwarding-personal", "--by", "IT",
                     "--reason", "removed") == "acknowledged 2 findings\n"
    with StateDB.open(tmp_path / "state.db") as db:
        table = db.findings().set_index("finding_id")
    assert list(table.loc[["F1", "F5"], "status"]) == ["acknowledged"] * 2
    assert table.loc["F3", "status"] == "open"
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert m365guard("findings", "accept", "--address", "sam99@gmail.com", "--by", "Head",
                     "--reason", "pupil's parent account, agreed", "--until", until
                     ).startswith("exception 1: address sam99@gmail.com accepted until")
    listed = m365guard("findings", "list").splitlines()
    assert [line.split()[:3] for line in listed if line.startswith("F3")] == [
        ["F3", "high", "accepted"]]
    assert m365guard("breaches", "list") == "no breach-log entries\n"
    refused = runner.invoke(app, ["findings", "accept", "F3", "--rule", "x", "--by", "a",
                                  "--reason", "b", "--until", until, "-c", str(config)])
    assert refused.exit_code != 0

"""Weekly summary / by-staff CSVs (golden) and the self-contained HTML page."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from sample_school import SampleSchool, assert_matches_golden

from m365guard.errors import ExitCode, GuardError
from m365guard.reports.weekly import IsoWeek, weekly_from_state, weekly_summary

MONDAY_AFTER = datetime(2025, 3, 17, 7, 0, tzinfo=UTC)
TITLES = {"pupil-contact-non-school-channel": "Pupil contact <outside> school channels"}


def test_weekly_files_match_golden(sample: SampleSchool, tmp_path: Path) -> None:
    paths = weekly_from_state(sample.db, tmp_path, MONDAY_AFTER, school_name="Manby Lodge")
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


def test_html_is_self_contained_escaped_and_plain(sample: SampleSchool, tmp_path: Path) -> None:
    paths = weekly_from_state(sample.db, tmp_path, MONDAY_AFTER,
                              school_name="St <Mary's> & Co", rule_titles=TITLES)
    page = paths.html.read_text(encoding="utf-8")
    assert "St &lt;Mary&#x27;s&gt; &amp; Co" in page
    assert "Pupil contact &lt;outside&gt; school channels" in page
    assert "<outside>" not in page and "<script" not in page.lower()
    assert not re.search(r"(src|href)=\"https?:", page)
    assert page.count("<svg") == 1
    assert "Checks ran completely on 6 of 7 nights" in page
    assert "Wed 12 Mar (partial)" in page
    assert "=cmd|" in page  # shown as text, escaped: &#x27; for the quote
    assert "m365guard findings ack" in page
    assert paths.html.stat().st_mode & 0o077 == 0


def test_iso_week_parsing_and_last_complete() -> None:
    assert IsoWeek.parse("2025-w11") == IsoWeek(2025, 11)
    assert IsoWeek.last_complete(MONDAY_AFTER) == IsoWeek(2025, 11)
    assert IsoWeek.last_complete(datetime(2025, 3, 16, 23, tzinfo=UTC)) == IsoWeek(2025, 10)
    assert IsoWeek(2025, 1).shifted(-1) == IsoWeek(2024, 52)
    with pytest.raises(GuardError) as bad:
        IsoWeek.parse("March")
    assert bad.value.exit_code == ExitCode.USAGE


def test_empty_state_still_writes_every_file(tmp_path: Path) -> None:
    from m365guard.state import StateDB

    with StateDB.open(tmp_path / "s.db") as db:
        paths = weekly_from_state(db, tmp_path / "out", MONDAY_AFTER, school_name="X")
    assert pd.read_csv(paths.summary_csv, encoding="utf-8-sig").empty
    assert "Checks ran completely on 0 of 7 nights" in paths.html.read_text(encoding="utf-8")

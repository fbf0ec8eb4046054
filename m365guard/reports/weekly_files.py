"""The weekly report's files: the CSVs from reports/weekly.py's tables and the page from
reports/weekly_page.py, written atomically. Kept apart so the tables never import the page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from m365guard.files import write_text_atomic
from m365guard.reports.csvfile import write_csv
from m365guard.reports.weekly import WeeklyInput, weekly_by_staff, weekly_detail, weekly_summary
from m365guard.reports.weekly_page import weekly_html


@dataclass(frozen=True)
class WeeklyPaths:
    """The files one weekly report wrote."""

    summary_csv: Path
    by_staff_csv: Path
    detail_csv: Path
    html: Path


def write_weekly_reports(out_dir: Path, data: WeeklyInput) -> WeeklyPaths:
    """Write weekly-summary-YYYY-Www.csv, weekly-detail-YYYY-Www.csv, weekly-by-staff.csv and
    weekly-summary.html. The by-staff CSV and the page are the latest week's (stable names to
    bookmark); the summary and detail CSVs keep one file per week.
    """
    week = data.week
    detail_name = f"weekly-detail-{week.label}.csv"
    return WeeklyPaths(
        summary_csv=write_csv(weekly_summary(data.findings, data.history, week),
                              out_dir / f"weekly-summary-{week.label}.csv"),
        by_staff_csv=write_csv(weekly_by_staff(data.findings, data.history, week),
                               out_dir / "weekly-by-staff.csv"),
        detail_csv=write_csv(weekly_detail(data), out_dir / detail_name),
        html=write_text_atomic(out_dir / "weekly-summary.html",
                               weekly_html(data, detail_name=detail_name)),
    )

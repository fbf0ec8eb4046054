"""Nightly findings CSV and run JSON from a real state history, against golden files."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pandas as pd
from sample_school import MAILBOXES, PARTIAL, SampleSchool, assert_matches_golden, run_at

from m365guard.files import write_bytes_atomic
from m365guard.ledger import FindingsUpdate
from m365guard.records import RunRecord
from m365guard.reports.nightly import NIGHTLY_COLUMNS, NightlyPaths, nightly_files, nightly_paths


def write_nightly_reports(out_dir: Path, run: RunRecord, update: FindingsUpdate,
                          coverage: pd.DataFrame) -> NightlyPaths:
    for path, data in nightly_files(out_dir, run, update, coverage).items():
        write_bytes_atomic(path, data)
    return nightly_paths(out_dir, run)


def test_last_night_matches_golden_files(sample: SampleSchool, tmp_path: Path) -> None:
    run = sample.db.run(sample.last_run_id)
    paths = write_nightly_reports(tmp_path / "out", run, sample.last_update, sample.last_coverage)
    assert paths.findings_csv.name == "findings-2025-03-16.csv"
    assert paths.run_json.name == "run-2025-03-16.json"
    assert_matches_golden(paths.findings_csv, "findings-2025-03-16.csv")
    assert_matches_golden(paths.run_json, "run-2025-03-16.json")


def test_findings_csv_reads_back_with_history_columns(sample: SampleSchool, tmp_path: Path) -> None:
    run = sample.db.run(sample.last_run_id)
    path = write_nightly_reports(tmp_path, run, sample.last_update, sample.last_coverage)
    table = pd.read_csv(path.findings_csv, encoding="utf-8-sig", keep_default_na=False)
    assert tuple(table.columns) == NIGHTLY_COLUMNS
    # open: F1 (reopened 13 Mar), F3 (message, never acked), F5, F6 (new); F2 acknowledged,
    # F4 (chat) resolved on the last night
    assert table["finding_id"].tolist() == ["F6", "F1", "F3", "F5"]
    assert table["is_new"].tolist() == [True, False, False, False]
    f1 = table.set_index("finding_id").loc["F1"]
    # seen on 5 nights, resolved, then on 4 more after reopening
    assert (f1["first_seen"], f1["times_seen"]) == ("2025-03-03T02:07:00Z", 9)
    f3 = table.set_index("finding_id").loc["F3"]
    assert f3["summary"].startswith("'=cmd")
    assert table["severity"].tolist() == ["medium", "high", "high", "high"]


def test_new_findings_come_first_and_json_lists_gaps(sample: SampleSchool, tmp_path: Path) -> None:
    runs = sample.db.runs_between(run_at(PARTIAL), run_at(PARTIAL) + pd.Timedelta(hours=1))
    assert [r.outcome for r in runs] == ["partial"]
    history = sample.db.finding_history()
    new_on_partial = history[(history["event"] == "opened") & (history["run_id"] == runs[0].run_id)]
    assert new_on_partial["finding_id"].tolist() == []  # F4/F5 opened the night before
    run = sample.db.run(sample.last_run_id)
    paths = write_nightly_reports(tmp_path, run, sample.last_update, sample.last_coverage)
    summary = orjson.loads(paths.run_json.read_bytes())
    assert summary["outcome"] == "complete"
    assert summary["coverage"]["mailboxes"] == len(MAILBOXES)
    assert summary["coverage"]["uncovered"] == []
    assert summary["findings"]["open_by_severity"] == {"high": 3, "medium": 1, "low": 0,
                                                       "info": 0}
    assert (summary["findings"]["new"], summary["findings"]["resolved"]) == (1, 1)
    with paths.findings_csv.open(encoding="utf-8-sig", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4

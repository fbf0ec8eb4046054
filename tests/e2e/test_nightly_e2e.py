"""End to end: the emulator, nightly over simulated nights, then weekly and audit.

Everything is real: msal and msgraph-sdk over HTTPS against the emulated school, SQLite state,
CSVs read back with the csv module and pandas. The expected results come from the synthetic
school's ground truth, not from the code under test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from m365guard.config import load_policy
from m365guard.demo import DemoResult, run_demo
from m365guard.emulator.synth import generate
from m365guard.errors import ExitCode
from m365guard.state import StateDB

REPO = Path(__file__).resolve().parents[2]
NIGHTS = 8
SEED = 1


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    policy = load_policy(REPO / "policies.toml")
    return run_demo(policy, tmp_path_factory.mktemp("e2e") / "out", nights=NIGHTS, seed=SEED)


@pytest.fixture(scope="module")
def truth() -> list[dict[str, Any]]:
    return generate("small", SEED, history_days=30, future_days=NIGHTS).truth


@pytest.fixture(scope="module")
def state(demo: DemoResult) -> pd.DataFrame:
    with StateDB.open(demo.out_dir / "state" / "m365guard.db") as db:
        return db.findings()


def _nights(demo: DemoResult) -> list[datetime]:
    return [outcome.run.started_at for outcome in demo.nights]


def _first_night_at_or_after(nights: list[datetime], moment: datetime) -> datetime | None:
    return next((night for night in nights if night >= moment), None)


def test_every_night_completed(demo: DemoResult) -> None:
    assert [outcome.run.outcome for outcome in demo.nights] == ["complete"] * NIGHTS
    assert demo.nights[0].exit_code == ExitCode.NEW_HIGH_FINDINGS


def test_planted_violations_found_with_first_seen_and_resolution(
    demo: DemoResult, truth: list[dict[str, Any]], state: pd.DataFrame
) -> None:
    nights = _nights(demo)
    last = nights[-1]
    by_object = {(row.rule_id, row.object_id): row for row in state.itertuples()}
    checked = resolved = 0
    for label in truth:
        if label["expect"] != "finding":
            continue
        appears = _first_night_at_or_after(nights, _ts(label["visible_from"]) or nights[0])
        until = _ts(label["visible_until"])
        if appears is None or (until is not None and until <= appears):
            continue  # planted after the last night, or gone before any night saw it
        row = by_object.get((label["rule_id"], label["object_id"]))
        assert row is not None, f"missed {label['case']}: {label['description']}"
        assert row.severity == label["severity"], label
        assert pd.Timestamp(row.first_seen) == pd.Timestamp(appears), label
        checked += 1
        if until is not None and until <= last:
            assert row.status == "resolved", label
            resolved += 1
        else:
            assert row.status == "open", label
            assert pd.Timestamp(row.last_seen) >= pd.Timestamp(appears)
    assert checked >= 40 and resolved >= 2


def test_near_misses_not_flagged_and_precision(
    truth: list[dict[str, Any]], state: pd.DataFrame
) -> None:
    flagged = state[state["severity"] != "info"]
    keys = set(zip(flagged["rule_id"], flagged["object_id"], strict=True))
    near_misses = [label for label in truth if label["expect"] in ("none", "info")]
    assert near_misses
    wrongly = [label for label in near_misses if (label["rule_id"], label["object_id"]) in keys]
    assert wrongly == []
    planted = {(label["rule_id"], label["object_id"]) for label in truth
               if label["expect"] == "finding"}
    unexplained = keys - planted
    assert len(unexplained) <= 0.01 * len(keys), sorted(unexplained)


def _read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), f"{path.name} has no UTF-8 BOM"
    return list(csv.DictReader(io.StringIO(raw[3:].decode("utf-8"), newline="")))


def test_last_findings_csv_lists_exactly_the_open_findings(
    demo: DemoResult, state: pd.DataFrame
) -> None:
    last = demo.nights[-1]
    rows = _read_csv(last.paths.findings_csv)
    assert {row["finding_id"] for row in rows} == set(state.loc[state["status"] == "open",
                                                                "finding_id"])
    assert len(rows) == len({row["finding_id"] for row in rows}), "duplicate rows"
    new_ids = set(last.update.new["finding_id"]) | set(last.update.reopened["finding_id"])
    assert {row["finding_id"] for row in rows if row["is_new"] == "true"} == new_ids
    for row in rows:
        assert row["summary"] and row["policy_clause"].startswith("AUP-")
        if row["object_type"] != "inbox_rule":  # Graph gives no creation time for a rule
            datetime.fromisoformat(row["occurred_at"].replace("Z", "+00:00"))


def test_every_night_wrote_its_csv_and_run_json(demo: DemoResult) -> None:
    for outcome in demo.nights:
        assert outcome.paths.findings_csv.exists() and outcome.paths.run_json.exists()
        assert outcome.paths.findings_csv.stat().st_mode & 0o077 == 0


def test_weekly_summary_counts_match_state(demo: DemoResult, state: pd.DataFrame) -> None:
    html = demo.weekly_html.read_text(encoding="utf-8")
    assert "Manby Lodge" in html
    assert "<svg" in html.lower() or "data:image/png" in html
    summary_csv = next(demo.weekly_html.parent.glob("weekly-summary-*.csv"))
    rows = _read_csv(summary_csv)
    week = rows[0]["week"]
    year, number = week.split("-W")
    start = pd.Timestamp(datetime.fromisocalendar(int(year), int(number), 1), tz="UTC")
    first_seen = pd.to_datetime(state["first_seen"], utc=True)
    in_week = state[(first_seen >= start) & (first_seen < start + pd.Timedelta(days=7))]
    expected = in_week.groupby(["rule_id", "severity"]).size().to_dict()
    reported = {(row["rule_id"], row["severity"]): int(row["new_this_week"]) for row in rows
                if int(row["new_this_week"])}
    assert reported == expected


def test_audit_pack_manifest_matches_files(demo: DemoResult) -> None:
    with zipfile.ZipFile(demo.audit_zip) as pack:
        names = pack.namelist()
        manifest_name = next(name for name in names if name.endswith("manifest.csv"))
        manifest = list(csv.DictReader(io.StringIO(
            pack.read(manifest_name).decode("utf-8-sig"), newline="")))
        assert len(manifest) >= 5
        for entry in manifest:
            member = next(name for name in names if name.endswith("/" + entry["file"])
                          or name == entry["file"])
            assert hashlib.sha256(pack.read(member)).hexdigest() == entry["sha256"]
    folder = demo.audit_zip.parent / demo.audit_zip.stem
    nights = _read_csv(folder / "nights.csv")
    assert [row["outcome"] for row in nights] == ["complete"] * NIGHTS
    clauses = {row["clause_id"]: row for row in _read_csv(folder / "clauses.csv")}
    assert clauses["AUP-MOBILE-NUMBER"]["coverage"] == "manual"
    assert clauses["AUP-BCC"]["rule_ids"] == "multi-recipient-without-bcc"


def test_second_demo_night_window_starts_where_first_ended(demo: DemoResult) -> None:
    first, second = demo.nights[0].run, demo.nights[1].run
    assert second.window_start == first.window_end
    assert first.window_end is not None and first.window_start is not None
    assert first.window_end - first.window_start == timedelta(days=30)

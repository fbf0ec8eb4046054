"""`m365guard demo --school quiet`: a school that keeps its policy gets 28 clean nights.

The whole tool, as a new user runs it: the CLI, the emulator over HTTPS, msal and msgraph-sdk,
SQLite state and the nightly CSVs read back. Every night must exit 0 and no finding may be
above info (the partner chat is the one info note the quiet school carries).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m365guard.cli.main import app

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quiet_school_28_clean_nights(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--school", "quiet", "--config",
                                      str(REPO / "policies.toml"), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    nights = re.findall(r"^night +\d+ .*\(exit (\d+)\)$", result.output, re.M)
    assert nights == ["0"] * 28, result.output
    csvs = sorted((out / "nightly").glob("findings-*.csv"))
    assert len(csvs) == 28
    for path in csvs:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert {row["severity"] for row in rows} <= {"info"}, (path.name, rows)


def test_an_unknown_demo_school_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--school", "medium", "--out",
                                      str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "small" in result.output and "quiet" in result.output

"""The one CSV writer: injection neutralised, encoding, quoting, atomic owner-only files."""

from __future__ import annotations

import csv
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from m365guard.files import write_bytes_atomic
from m365guard.reports.csvfile import write_csv

HOSTILE = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "\rCR", "plain", 'quote " and, comma',
           "line\nbreak", "nul\x00byte", "café ✓", ""]


def test_hostile_cells_are_neutralised_and_read_back_exactly(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "text": pd.Series(HOSTILE, dtype="string[pyarrow]"),
        "number": pd.Series(range(-6, 6), dtype="int64[pyarrow]"),
    })
    path = write_csv(df, tmp_path / "out.csv")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"\x00" not in raw
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["text", "number"]
    expected = ["'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "'\tTAB", "'\rCR", "plain",
                'quote " and, comma', "line\nbreak", "nulbyte", "café ✓", ""]
    assert [row[0] for row in rows[1:]] == expected
    assert [row[1] for row in rows[1:]] == [str(n) for n in range(-6, 6)]
    back = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, dtype={"text": str})
    assert back["text"].tolist() == expected
    assert back["number"].tolist() == list(range(-6, 6))
    assert raw.count(b"\r\n") == len(HOSTILE) + 1  # the embedded \n is inside quotes


def test_dates_booleans_and_missing_values(tmp_path: Path) -> None:
    stamps = pd.Series([datetime(2025, 3, 3, 2, 0, 5, tzinfo=UTC), None],
                       dtype="timestamp[us, tz=UTC][pyarrow]")
    df = pd.DataFrame({"at": stamps, "flag": pd.Series([True, None], dtype="bool[pyarrow]"),
                       "n": pd.Series([1.5, float("nan")])})
    text = write_csv(df, tmp_path / "x.csv").read_bytes().decode("utf-8-sig")
    assert text == "at,flag,n\r\n2025-03-03T02:00:05Z,true,1.5\r\n,,\r\n"


def test_files_are_owner_only_and_replace_atomically(tmp_path: Path) -> None:
    target = tmp_path / "new-folder" / "report.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    write_csv(pd.DataFrame({"a": [2]}), target)
    assert target.read_bytes() == b"\xef\xbb\xbfa\r\n2\r\n"
    assert os.listdir(target.parent) == ["report.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    write_bytes_atomic(target, b"old")

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_csv(pd.DataFrame({"a": [Unprintable()]}), target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["report.csv"]

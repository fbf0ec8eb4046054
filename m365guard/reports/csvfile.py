"""CSV files safe to open in Excel: formula-like cells defused, UTF-8 with a BOM, CRLF.

Why: reports are opened by headteachers in Excel, and their cells carry text that staff or
outsiders chose (subjects, rule names, display names). A cell starting with = + - @ (or a TAB /
CR) can run as a formula, so such text is prefixed with an apostrophe. The bytes are written
by files.py: atomically, owner-only.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m365guard.files import write_bytes_atomic

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Strip NUL bytes and defuse a cell Excel would read as a formula."""
    text = text.replace("\x00", "")
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def format_cell(value: Any) -> str | int | float:
    """One value as the CSV shows it: ISO 8601 UTC timestamps, true/false, empty for missing."""
    if value is None or value is pd.NaT or value is pd.NA:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, pd.Timestamp | datetime):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC")
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ" if stamp.tzinfo else "%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return "" if math.isnan(float(value)) else float(value)
    return neutralise(str(value))


def csv_text(df: pd.DataFrame) -> str:
    """The CSV (without BOM) for df: one header row, RFC 4180 quoting, CRLF line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow([neutralise(str(col)) for col in df.columns])
    for row in df.itertuples(index=False, name=None):
        writer.writerow([format_cell(value) for value in row])
    return buffer.getvalue()


def csv_bytes(df: pd.DataFrame) -> bytes:
    """The CSV file's bytes: UTF-8 with a BOM, so Excel reads accents."""
    return csv_text(df).encode("utf-8-sig")


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write df as a CSV (csv_bytes) at path, atomically, 0600."""
    return write_bytes_atomic(path, csv_bytes(df))

"""The one way m365guard writes a file: atomic, owner-only, and (for CSVs) safe to open in Excel.

Why: reports are opened by headteachers in Excel, and their cells carry text that staff or
outsiders chose (subjects, rule names, display names). A cell starting with = + - @ (or a TAB /
CR) can run as a formula, so such text is prefixed with an apostrophe. Files are written to a
temporary file in the same folder and renamed into place, so a reader (or a crash) never sees a
half-written report; every file is readable by its owner only, since reports name staff.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import numbers
import os
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

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


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write df as a UTF-8 (with BOM, so Excel reads accents) CSV at path, atomically, 0600."""
    return write_bytes_atomic(path, csv_text(df).encode("utf-8-sig"))


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 text atomically, owner-only."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to a temp file beside path, flush to disk, then rename over path (0600)."""
    with atomic_file(path) as handle:
        handle.write(data)
    return path


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that appears at path, owner-only, only if the block completes."""
    path = Path(path)
    ensure_private_dir(path.parent)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o600)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def ensure_private_dir(folder: Path) -> Path:
    """Create folder (owner-only) if missing; an existing folder keeps its permissions."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)
    return folder

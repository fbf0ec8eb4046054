"""docs/csv-columns.md names every CSV the tool writes, with the columns the code writes."""

from __future__ import annotations

from pathlib import Path

from m365guard.enforce.report import COLUMNS as ENFORCEMENT_COLUMNS
from m365guard.notify.breaches import COLUMNS as BREACH_COLUMNS
from m365guard.notify.exceptions import COLUMNS as EXCEPTION_COLUMNS
from m365guard.reports.audit import build_audit_pack
from m365guard.reports.nightly import NIGHTLY_COLUMNS
from m365guard.reports.weekly import BY_STAFF_COLUMNS, DETAIL_COLUMNS, SUMMARY_COLUMNS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "csv-columns.md").read_text("utf-8")


def table_after(marker: str) -> list[str]:
    """The first column of the first markdown table after `marker`."""
    assert marker in DOC, f"docs/csv-columns.md has no {marker!r}"
    lines = DOC[DOC.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip())
    return rows


TABLES = {
    "## Nightly: `findings-YYYY-MM-DD.csv`": NIGHTLY_COLUMNS,
    "## Weekly: `weekly-summary-YYYY-Www.csv`": SUMMARY_COLUMNS,
    "## Weekly: `weekly-by-staff.csv`": BY_STAFF_COLUMNS,
    "## Weekly: `weekly-detail-YYYY-Www.csv`": DETAIL_COLUMNS,
    "`breach-log.csv` (": BREACH_COLUMNS,
    "`exceptions.csv` (": EXCEPTION_COLUMNS,
}


def test_each_documented_table_lists_the_columns_in_the_order_written() -> None:
    wrong = {marker: table_after(marker) for marker, columns in TABLES.items()
             if marker not in DOC or table_after(marker) != list(columns)}
    assert wrong == {}


def test_enforcement_columns_and_every_audit_pack_file_are_documented() -> None:
    paragraph = DOC[DOC.index("`enforcement.csv` ("):].split("\n\n")[0]
    assert all(column in paragraph for column in ENFORCEMENT_COLUMNS)
    source = Path(build_audit_pack.__code__.co_filename).read_text("utf-8")
    files = {part.split('"')[0] for part in source.split('"')[1::2] if part.endswith(".csv")}
    assert files >= {"breach-log.csv", "exceptions.csv", "enforcement.csv", "manifest.csv"}
    missing = sorted(name for name in files if f"`{name}`" not in DOC)
    assert missing == []

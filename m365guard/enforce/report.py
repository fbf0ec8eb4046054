"""The enforcement section of the audit pack: every journal event in the period.

One row per event (planned, started, done, skipped, failed, manual, undo_started, undone,
verified, drift) with who planned, who approved, who acted, and the object before and after.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from m365guard.enforce import journal

COLUMNS = ("at", "plan_id", "action_id", "event", "object_id", "planned_by", "approved_by",
           "by", "before", "after", "detail")


def enforcement_table(state_path: Path, start: datetime, end: datetime) -> pd.DataFrame:
    """Journal events in [start, end) as text columns, oldest first (empty: no enforcement)."""
    conn = journal.connect(state_path)
    try:
        rows = journal.events(conn, start, end)
    finally:
        conn.close()
    return pd.DataFrame([{column: str(row[column]) for column in COLUMNS} for row in rows],
                        columns=list(COLUMNS), dtype="string[pyarrow]")

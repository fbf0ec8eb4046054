"""The values state keeps and reports read: run records, findings with their history.

They live apart from the store (state.py) so that the ledger computes with them and the
reports are written from them without opening SQLite. Every timestamp state keeps is ISO 8601
UTC to the second (`iso`): a value computed in memory equals the same value read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

import pandas as pd
from pandas.api.types import pandas_dtype

from m365guard import stopping
from m365guard.errors import GuardError
from m365guard.tables import BOOL, INT, SCHEMAS, STR, TS
from m365guard.writable import os_error_line

RunOutcome = Literal["running", "complete", "partial", "failed"]
# How a night is shown when several runs started on it: the best outcome wins.
NIGHT_ORDER: dict[str, int] = {"complete": 3, "partial": 2, "failed": 1, "running": 0}
MISSED = "missed"  # a night with no run at all

FindingStatus = Literal["open", "resolved", "acknowledged"]
FINDING_STATUSES: tuple[FindingStatus, ...] = ("open", "resolved", "acknowledged")
FindingEvent = Literal["opened", "seen", "resolved", "reopened", "acknowledged", "escalated",
                       "retargeted"]
SYSTEM_ACTOR = "m365guard"  # status_by of changes the nightly run makes

FINDING_COLUMNS = tuple(SCHEMAS["findings"])
# The history columns state keeps beside every finding.
FINDING_STATE_SCHEMA: dict[str, str] = {
    "first_seen": TS,
    "last_seen": TS,
    "times_seen": INT,
    "status": STR,
    "status_at": TS,
    "status_by": STR,
    "status_reason": STR,
}
FINDING_FRAME_SCHEMA: dict[str, str] = {**SCHEMAS["findings"], **FINDING_STATE_SCHEMA}
INVENTORY_SCHEMA: dict[str, str] = {
    "kind": STR,  # inbox_rule | mailbox_forwarding
    "mailbox": STR,
    "object_id": STR,
    "target": STR,
    "is_enabled": BOOL,
    "detail": STR,
}
EVENT_SCHEMA: dict[str, str] = {
    "finding_id": STR,
    "run_id": INT,
    "at": TS,
    "event": STR,  # FindingEvent
    "by": STR,
    "reason": STR,
}
RUN_SCHEMA: dict[str, str] = {
    "run_id": INT,
    "started_at": TS,
    "finished_at": TS,
    "outcome": STR,
    "window_start": TS,
    "window_end": TS,
    "granted_permissions": STR,  # ";"-joined
    "error": STR,
}


def iso(moment: datetime) -> str:
    """The one timestamp format in state: ISO 8601 UTC to the second (sorts as text)."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def iso_or_none(value: Any) -> str | None:
    """iso() of a datetime or Timestamp; None for a missing value."""
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return None
    return iso(pd.Timestamp(value).to_pydatetime())


def to_second(moment: datetime) -> datetime:
    """`moment` as state keeps it: UTC, whole seconds."""
    return datetime.fromisoformat(iso(moment))


def parse_ts(value: str | None) -> datetime | None:
    """An ISO timestamp as state keeps it, or None."""
    return datetime.fromisoformat(value) if value else None


def frame(rows: Sequence[Mapping[str, Any]], schema: Mapping[str, str]) -> pd.DataFrame:
    """Rows (from SQLite or built in memory) -> a frame with the schema's dtypes."""
    if not rows:
        return pd.DataFrame({col: pd.Series([], dtype=dtype) for col, dtype in schema.items()})
    data: dict[str, pd.Series] = {}
    for col, name in schema.items():
        values = [row[col] for row in rows]
        dtype = pandas_dtype(name)
        if name == TS:
            text = [value if isinstance(value, str) or value is None else iso_or_none(value)
                    for value in values]
            stamps = pd.to_datetime(pd.Series(text, dtype=object), utc=True, format="ISO8601")
            data[col] = stamps.astype(dtype)
        elif name == BOOL:
            data[col] = pd.Series([bool(v) for v in values]).astype(dtype)
        else:
            data[col] = pd.Series(values).astype(dtype)
    return pd.DataFrame(data)


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as dicts keyed by column name."""
    return cast(list[dict[str, Any]], table.to_dict("records"))


def empty_frame(schema: Mapping[str, str]) -> pd.DataFrame:
    """A frame with the schema's columns and no rows."""
    return frame([], schema)


@dataclass(frozen=True)
class RunRecord:
    """One row of the run history."""

    run_id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: RunOutcome
    window_start: datetime | None
    window_end: datetime | None
    granted_permissions: tuple[str, ...]
    counts: dict[str, Any]
    error: str
    rules_off: tuple[str, ...] = ()  # rules turned off in policies.toml for this run

    @property
    def night(self) -> date:
        """The UTC day the run started: the date in its report names."""
        return self.started_at.astimezone(UTC).date()


def failure(exc: BaseException) -> str:
    """The reason a failed run records (runs.error): every failure keeps one."""
    if isinstance(exc, GuardError):
        return exc.message
    if isinstance(exc, OSError):
        return os_error_line(exc)
    if isinstance(exc, KeyboardInterrupt):  # SIGTERM or Ctrl-C
        return f"interrupted by {stopping.requested() or 'SIGINT'}"
    if isinstance(exc, sqlite3.OperationalError):
        return f"the state file could not be written ({exc})"
    return f"internal error: {type(exc).__name__}: {exc} (the log has the traceback)"


def best_outcome(outcomes: Sequence[str]) -> str:
    """How a night with these runs is shown: the best outcome, or 'missed' with none."""
    return max(outcomes, key=NIGHT_ORDER.__getitem__, default=MISSED)


def runs_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as a table (RUN_SCHEMA), for reports."""
    return frame(
        [
            {
                "run_id": run.run_id,
                "started_at": iso(run.started_at),
                "finished_at": iso(run.finished_at) if run.finished_at else None,
                "outcome": run.outcome,
                "window_start": iso(run.window_start) if run.window_start else None,
                "window_end": iso(run.window_end) if run.window_end else None,
                "granted_permissions": ";".join(run.granted_permissions),
                "error": run.error,
            }
            for run in runs
        ],
        RUN_SCHEMA,
    )

"""The enforcement journal in state: plans, each action's status, and every step's event.

Each write is its own committed transaction (synchronous=FULL), made *before* the Graph call
it announces and again after it, so a process killed at any point leaves a journal that says
what may have happened; `apply` reads the object again to finish the story. The tables are
migration 2 of the state file (state.py). Functions take a sqlite3 connection from `connect`,
which opens (and so migrates) the state file first.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from m365guard.enforce.plan import Action, ActionStatus, Plan
from m365guard.errors import ExitCode, GuardError
from m365guard.records import iso
from m365guard.state import connect as connect  # the migrated state file, for this module's tables


@dataclass(frozen=True)
class JournalAction:
    """One action as the journal has it now."""

    action_id: str
    plan_id: str
    finding_id: str
    kind: str
    mailbox: str
    object_id: str
    status: ActionStatus
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    planned_by: str
    approved_by: str
    updated_at: str
    detail: str

    @property
    def rule_graph_id(self) -> str:
        return self.object_id.partition("/")[2]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def record_plan(conn: sqlite3.Connection, plan: Plan) -> None:
    """Keep the plan as written, with its author and digest."""
    with _transaction(conn):
        conn.execute("INSERT INTO enforcement_plans (plan_id, created_at, author, digest, body)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (plan.plan_id, plan.created_at, plan.author, plan.digest,
                      plan.as_json().decode()))
        conn.executemany(
            "INSERT INTO enforcement_events (action_id, plan_id, at, event, by, before, after,"
            " detail) VALUES (?, ?, ?, 'planned', ?, ?, 'null', ?)",
            [(a.action_id, plan.plan_id, plan.created_at, plan.author, _json(a.before),
              a.reason) for a in plan.actions])


def recorded_plan(conn: sqlite3.Connection, plan: Plan) -> None:
    """Refuse a plan the journal does not know, or one edited since it was recorded."""
    row = conn.execute("SELECT author, digest FROM enforcement_plans WHERE plan_id = ?",
                       (plan.plan_id,)).fetchone()
    if row is None:
        raise GuardError(f"plan {plan.plan_id} is not in this state file; make plans with"
                         " `m365guard enforce plan` against the same policies.toml",
                         ExitCode.INPUT_FILE_ERROR)
    if row["digest"] != plan.digest or row["author"] != plan.author:
        raise GuardError(f"plan {plan.plan_id} was changed after it was made; make a new plan",
                         ExitCode.INPUT_FILE_ERROR)


def get(conn: sqlite3.Connection, action_id: str) -> JournalAction | None:
    row = conn.execute("SELECT * FROM enforcement_actions WHERE action_id = ?",
                       (action_id,)).fetchone()
    return None if row is None else _action(row)


def actions(conn: sqlite3.Connection, *, status: str | None = None,
            kind: str | None = None) -> list[JournalAction]:
    """Journalled actions, optionally by status and kind, in the order they were planned."""
    rows = conn.execute(
        "SELECT * FROM enforcement_actions WHERE (? IS NULL OR status = ?)"
        " AND (? IS NULL OR kind = ?) ORDER BY plan_id, CAST(substr(action_id,"
        " length(plan_id) + 2) AS INTEGER)", (status, status, kind, kind)).fetchall()
    return [_action(row) for row in rows]


def _action(row: sqlite3.Row) -> JournalAction:
    return JournalAction(
        row["action_id"], row["plan_id"], row["finding_id"], row["kind"], row["mailbox"],
        row["object_id"], row["status"], orjson.loads(row["before"]), orjson.loads(row["after"]),
        row["planned_by"], row["approved_by"], row["updated_at"], row["detail"])


def step(conn: sqlite3.Connection, action: Action | JournalAction, status: ActionStatus, *,
         by: str, now: datetime, before: Any = None, after: Any = None, detail: str = "",
         planned_by: str = "", approved_by: str = "") -> None:
    """Set an action's status and append the event, in one committed transaction."""
    stamp = iso(now)
    plan_id = action.plan_id if isinstance(action, JournalAction) \
        else action.action_id.rsplit("-", 1)[0]
    with _transaction(conn):
        known = conn.execute("SELECT 1 FROM enforcement_actions WHERE action_id = ?",
                             (action.action_id,)).fetchone()
        if known is None:
            conn.execute(
                "INSERT INTO enforcement_actions (action_id, plan_id, finding_id, kind, mailbox,"
                " object_id, status, before, after, planned_by, approved_by, updated_at, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (action.action_id, plan_id, action.finding_id, action.kind, action.mailbox,
                 action.object_id, status, _json(before), _json(after), planned_by,
                 approved_by, stamp, detail))
        else:
            conn.execute(
                "UPDATE enforcement_actions SET status = ?, updated_at = ?, detail = ?,"
                " before = CASE WHEN ? = 'null' THEN before ELSE ? END,"
                " after = CASE WHEN ? = 'null' THEN after ELSE ? END WHERE action_id = ?",
                (status, stamp, detail, _json(before), _json(before), _json(after),
                 _json(after), action.action_id))
        conn.execute(
            "INSERT INTO enforcement_events (action_id, plan_id, at, event, by, before, after,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (action.action_id, plan_id, stamp, status, by, _json(before), _json(after), detail))


def note(conn: sqlite3.Connection, action: JournalAction, event: str, *, by: str,
         now: datetime, after: Any = None, detail: str = "") -> None:
    """An event that does not change the action's status (the nightly's verified / drift)."""
    with _transaction(conn):
        conn.execute(
            "INSERT INTO enforcement_events (action_id, plan_id, at, event, by, before, after,"
            " detail) VALUES (?, ?, ?, ?, ?, 'null', ?, ?)",
            (action.action_id, action.plan_id, iso(now), event, by, _json(after), detail))


def plan_event(conn: sqlite3.Connection, action: Action, event: str, *, by: str,
               now: datetime, detail: str = "") -> None:
    """An event about a planned action before it is carried out (the staff notice)."""
    with _transaction(conn):
        conn.execute(
            "INSERT INTO enforcement_events (action_id, plan_id, at, event, by, before, after,"
            " detail) VALUES (?, ?, ?, ?, ?, 'null', 'null', ?)",
            (action.action_id, action.action_id.rsplit("-", 1)[0], iso(now), event, by,
             detail))


def has_event(conn: sqlite3.Connection, action_id: str, event: str) -> bool:
    """Has this event been journalled for the action?"""
    return conn.execute("SELECT 1 FROM enforcement_events WHERE action_id = ? AND event = ?"
                        " LIMIT 1", (action_id, event)).fetchone() is not None


def events(conn: sqlite3.Connection, start: datetime | None = None,
           end: datetime | None = None) -> list[dict[str, Any]]:
    """Every journal event in [start, end), oldest first, with its plan's author."""
    rows = conn.execute(
        "SELECT e.*, p.author AS planned_by, COALESCE(a.approved_by, '') AS approved_by,"
        " COALESCE(a.object_id, '') AS object_id FROM enforcement_events e"
        " JOIN enforcement_plans p USING (plan_id)"
        " LEFT JOIN enforcement_actions a USING (action_id)"
        " WHERE (? IS NULL OR e.at >= ?) AND (? IS NULL OR e.at < ?) ORDER BY e.at, e.id",
        (*(2 * [iso(start) if start else None]), *(2 * [iso(end) if end else None]))).fetchall()
    return [dict(row) for row in rows]

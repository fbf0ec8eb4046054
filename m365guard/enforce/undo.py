"""Put an enforced rule back exactly as the journal recorded it before the action.

Only `isEnabled` was changed, so setting it back restores the recorded rule; undo refuses if
the rule has changed since the action (it would overwrite someone's later change). Like apply,
it journals before and after the call, and a rerun finishes an interrupted undo.
"""

from __future__ import annotations

import sqlite3

from m365guard.enforce import journal
from m365guard.enforce.apply import Clock, Rules
from m365guard.enforce.plan import printable
from m365guard.errors import ExitCode, GuardError


def undo_action(conn: sqlite3.Connection, action_id: str, rules: Rules, *, by: str, yes: bool,
                clock: Clock) -> str:
    """Undo one done action; returns the line to print (a dry run without yes)."""
    name = by.strip()
    if not name:
        raise GuardError("enforce undo needs --by NAME: who undoes it", ExitCode.USAGE)
    row = journal.get(conn, action_id)
    if row is None:
        raise GuardError(f"no journalled action {printable(action_id)!r}; `m365guard enforce"
                         " journal` lists them", ExitCode.USAGE)
    if row.kind != "disable_inbox_rule":
        raise GuardError(f"action {action_id} was handed to an Exchange admin; undo it in"
                         " Exchange Online PowerShell", ExitCode.ENFORCE_REFUSED)
    if row.status == "undone":
        return f"{action_id}: already undone at {row.updated_at}; nothing to do"
    if row.status not in ("done", "undo_started") or row.before is None:
        raise GuardError(f"action {action_id} is {row.status}: nothing was changed, nothing to"
                         " undo", ExitCode.ENFORCE_REFUSED)
    fresh = rules.read(row.mailbox, row.rule_graph_id)
    if not fresh.ok or fresh.rule is None:
        raise GuardError(f"cannot read the rule of {action_id} ({fresh.error}); nothing done",
                         ExitCode.ENFORCE_INCOMPLETE)
    if fresh.rule == row.before:
        if yes:
            journal.step(conn, row, "undone", by=name, now=clock(), after=fresh.rule,
                         detail="Graph already shows the rule as before the action")
        return f"{action_id}: the rule is already as before the action"
    if fresh.rule != row.after:
        raise GuardError(f"the rule of {action_id} changed after the action; undo would"
                         " overwrite that change: nothing done", ExitCode.ENFORCE_REFUSED)
    enabled = bool(row.before.get("isEnabled"))
    if not yes:
        return (f"{action_id}: would set isEnabled back to {str(enabled).lower()} on inbox rule"
                f" {printable(row.before.get('displayName', ''))!r} in {row.mailbox}")
    journal.step(conn, row, "undo_started", by=name, now=clock(),
                 detail=f"setting isEnabled back to {str(enabled).lower()}")
    answer = rules.set_enabled(row.mailbox, row.rule_graph_id, enabled)
    if not answer.ok or answer.rule != row.before:
        journal.step(conn, row, "undo_started", by=name, now=clock(), after=answer.rule,
                     detail=f"the call did not restore the rule: {answer.error}")
        raise GuardError(f"undo of {action_id} did not complete ({answer.error}); run it again",
                         ExitCode.ENFORCE_INCOMPLETE)
    journal.step(conn, row, "undone", by=name, now=clock(), after=answer.rule)
    return f"{action_id}: inbox rule {printable(row.before.get('displayName', ''))!r} restored"

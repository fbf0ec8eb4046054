"""Carry out an approved plan: each action only while its object is as the plan recorded it.

Order per action: read the rule fresh; if it differs from the plan, skip and say so; journal
`started` (with the state just read); PATCH; journal `done` (with the rule Graph returned) or
`failed`. A rerun after a crash finds `started` or `failed` and reads the rule again: if Graph
already shows the change the action is recorded done without a second call, if it still shows
the planned state the call is made, otherwise it is skipped. So every action happens at most
once, whatever point the process died at. PowerShell actions are handed to a person
(`manual`). Without `yes` nothing is written anywhere: a dry run says what would happen.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from m365guard.enforce import journal
from m365guard.enforce.plan import FINAL_STATUSES, Action, Plan, printable
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.rule_write import RuleAnswer

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


class Rules(Protocol):
    """What apply and undo need from Graph (graph.rule_write.RuleClient)."""

    def read(self, user: str, rule_id: str) -> RuleAnswer: ...

    def set_enabled(self, user: str, rule_id: str, enabled: bool) -> RuleAnswer: ...


@dataclass(frozen=True)
class Outcome:
    """What happened to one action, as one line for the console."""

    action_id: str
    result: str  # done | skipped | failed | manual | already | would-do | would-skip
    line: str

    @property
    def complete(self) -> bool:
        return self.result in ("done", "manual", "already", "would-do")


def check_approval(plan: Plan, approved_by: str | None) -> str:
    """The approver's name; one line refusing a missing approval or the author's own."""
    name = (approved_by or "").strip()
    if not name:
        raise GuardError(f"plan {plan.plan_id} is not approved: add --approved-by NAME, a second"
                         " person who has read the plan", ExitCode.ENFORCE_REFUSED)
    if name.casefold() == plan.author.strip().casefold():
        raise GuardError(f"plan {plan.plan_id} was made by {printable(plan.author)}: someone"
                         " else must approve it", ExitCode.ENFORCE_REFUSED)
    return name


def apply_plan(conn: sqlite3.Connection, plan: Plan, rules: Rules, *, approved_by: str,
               yes: bool, clock: Clock, held: Mapping[str, str] | None = None) -> list[Outcome]:
    """Every action of an approved plan, or (without yes) what each would do. `held`: the
    mailboxes whose owner could not be told first (enforce/notice.py), and why."""
    journal.recorded_plan(conn, plan)
    approver = check_approval(plan, approved_by)
    return [_held(action, (held or {})[action.mailbox])
            if action.kind == "disable_inbox_rule" and action.mailbox in (held or {})
            else _one(conn, plan, action, rules, approver, yes, clock)
            for action in plan.actions]


def _held(action: Action, why: str) -> Outcome:
    return Outcome(action.action_id, "failed",
                   f"{action.action_id}: not changed: the notice to {action.mailbox} could not"
                   f" be sent ({why}); run again")


def _one(conn: sqlite3.Connection, plan: Plan, action: Action, rules: Rules, approver: str,
         yes: bool, clock: Clock) -> Outcome:
    row = journal.get(conn, action.action_id)
    who = {"planned_by": plan.author, "approved_by": approver}
    if row is not None and row.status in FINAL_STATUSES:
        return Outcome(action.action_id, "already",
                       f"{action.action_id}: already {row.status} at {row.updated_at};"
                       " nothing to do")
    if action.kind != "disable_inbox_rule":
        commands = "; ".join(action.commands)
        if yes:
            journal.step(conn, action, "manual", by=approver, now=clock(), before=action.before,
                         detail=commands or action.reason, **who)
        text = f"for an Exchange admin: {commands}" if commands else action.reason
        return Outcome(action.action_id, "manual", f"{action.action_id}: {printable(text)}")
    fresh = rules.read(action.mailbox, action.rule_graph_id)
    if fresh.status == 404:
        return _skip(conn, action, approver, yes, clock, "the rule no longer exists", who)
    if not fresh.ok or fresh.rule is None:
        if yes:
            journal.step(conn, action, "failed", by=approver, now=clock(),
                         detail=f"reading the rule: {fresh.error}", **who)
        return Outcome(action.action_id, "failed",
                       f"{action.action_id}: cannot read the rule ({fresh.error}); run again")
    if row is not None and fresh.rule == action.expected_after:
        if yes:
            journal.step(conn, action, "done", by=approver, now=clock(), after=fresh.rule,
                         detail="completed on a rerun: Graph already shows the change", **who)
        return Outcome(action.action_id, "done" if yes else "would-do",
                       f"{action.action_id}: Graph already shows the rule disabled")
    if fresh.rule != action.before:
        changed = sorted(key for key in {*fresh.rule, *(action.before or {})}
                         if fresh.rule.get(key) != (action.before or {}).get(key))
        return _skip(conn, action, approver, yes, clock,
                     f"the rule changed since it was planned ({', '.join(changed)})", who)
    if not yes:
        return Outcome(action.action_id, "would-do",
                       f"{action.action_id}: would disable inbox rule"
                       f" {printable(fresh.rule.get('displayName', ''))!r} in {action.mailbox}")
    journal.step(conn, action, "started", by=approver, now=clock(), before=fresh.rule, **who)
    log.info("enforce: %s journalled as started; calling Graph", action.action_id)
    answer = rules.set_enabled(action.mailbox, action.rule_graph_id,
                               bool(action.change.get("isEnabled", False)))
    log.info("enforce: %s Graph answered HTTP %d", action.action_id, answer.status)
    if not answer.ok:
        journal.step(conn, action, "failed", by=approver, now=clock(), detail=answer.error, **who)
        return Outcome(action.action_id, "failed",
                       f"{action.action_id}: Graph refused ({answer.error}); run again")
    journal.step(conn, action, "done", by=approver, now=clock(), after=answer.rule, **who)
    log.info("enforce: %s journalled as done", action.action_id)
    return Outcome(action.action_id, "done",
                   f"{action.action_id}: disabled inbox rule"
                   f" {printable(fresh.rule.get('displayName', ''))!r} in {action.mailbox}")


def _skip(conn: sqlite3.Connection, action: Action, approver: str, yes: bool, clock: Clock,
          why: str, who: dict[str, str]) -> Outcome:
    if yes:
        journal.step(conn, action, "skipped", by=approver, now=clock(), detail=why, **who)
    return Outcome(action.action_id, "skipped" if yes else "would-skip",
                   f"{action.action_id}: {'skipped' if yes else 'would skip'}: {why};"
                   " make a new plan")

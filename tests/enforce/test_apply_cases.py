"""apply and undo in-process on the unfriendly cases: throttling, a deleted rule, a rule changed
after the action, dry runs that write nothing. Real SDK against the emulator, real SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from enforce_support import (
    FORWARD_RULE,
    TEACHER,
    TEACHER_ID,
    session_for,
    tenant_rule,
    workdir,
    write_emulator,
)

from m365guard import tables
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import RunningEmulator
from m365guard.enforce import journal
from m365guard.enforce.apply import apply_plan
from m365guard.enforce.plan import Plan
from m365guard.enforce.planner import build_plan
from m365guard.enforce.undo import undo_action
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.rule_write import RuleClient

__all__ = ["workdir", "write_emulator"]
NOW = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture
def rules(write_emulator: RunningEmulator) -> Iterator[RuleClient]:
    with session_for(write_emulator) as session:
        yield RuleClient(session)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = journal.connect(tmp_path / "state.db")
    yield conn
    conn.close()


def _plan(store: sqlite3.Connection, rules: RuleClient) -> Plan:
    finding = tables.make_table("findings", [{
        "finding_id": "f1", "rule_id": "external-forwarding-personal", "severity": "high",
        "object_type": "inbox_rule", "object_id": f"{TEACHER}/{FORWARD_RULE}",
        "actor": TEACHER, "summary": "forwards to gmail"}])
    plan = build_plan(finding, rules.read, author="Alice", tenant_id="t", now=NOW)
    journal.record_plan(store, plan)
    return plan


def test_a_dry_run_writes_nothing(store: sqlite3.Connection, rules: RuleClient,
                                  write_emulator: RunningEmulator) -> None:
    plan = _plan(store, rules)
    outcomes = apply_plan(store, plan, rules, approved_by="Bob", yes=False, clock=clock)
    assert [o.result for o in outcomes] == ["would-do"]
    assert journal.actions(store) == []
    assert tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE)["isEnabled"] is True


def test_throttled_apply_fails_then_a_rerun_completes(store: sqlite3.Connection,
                                                       rules: RuleClient,
                                                       write_emulator: RunningEmulator) -> None:
    plan = _plan(store, rules)
    write_emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(429,),
                                          retry_after_s=(0.01,)))
    first = apply_plan(store, plan, rules, approved_by="Bob", yes=True, clock=clock)
    assert first[0].result == "failed" and "429" in first[0].line
    assert journal.actions(store)[0].status == "failed"
    write_emulator.set_faults(FaultConfig())
    second = apply_plan(store, plan, rules, approved_by="Bob", yes=True, clock=clock)
    assert second[0].result == "done"
    assert tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE)["isEnabled"] is False
    events = [e["event"] for e in journal.events(store)]
    assert events == ["planned", "failed", "started", "done"]


def test_a_rule_deleted_after_planning_is_skipped(store: sqlite3.Connection,
                                                  rules: RuleClient,
                                                  write_emulator: RunningEmulator) -> None:
    plan = _plan(store, rules)
    mailbox = write_emulator.tenant.mailbox(TEACHER_ID)
    assert mailbox is not None
    mailbox.rules[:] = [(w, r) for w, r in mailbox.rules if r["id"] != FORWARD_RULE]
    outcomes = apply_plan(store, plan, rules, approved_by="Bob", yes=True, clock=clock)
    assert outcomes[0].result == "skipped" and "no longer exists" in outcomes[0].line
    with pytest.raises(GuardError) as refused:
        undo_action(store, outcomes[0].action_id, rules, by="Bob", yes=True, clock=clock)
    assert refused.value.exit_code == ExitCode.ENFORCE_REFUSED


def test_undo_refuses_to_overwrite_a_later_change(store: sqlite3.Connection,
                                                  rules: RuleClient,
                                                  write_emulator: RunningEmulator) -> None:
    plan = _plan(store, rules)
    (done,) = apply_plan(store, plan, rules, approved_by="Bob", yes=True, clock=clock)
    tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE)["displayName"] = "renamed later"
    with pytest.raises(GuardError) as refused:
        undo_action(store, done.action_id, rules, by="Bob", yes=True, clock=clock)
    assert refused.value.exit_code == ExitCode.ENFORCE_REFUSED
    assert "changed after the action" in refused.value.message
    assert tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE)["isEnabled"] is False
    with pytest.raises(GuardError):
        undo_action(store, "no-such-action", rules, by="Bob", yes=True, clock=clock)
    with pytest.raises(GuardError):
        undo_action(store, done.action_id, rules, by=" ", yes=True, clock=clock)


def test_undo_dry_run_then_undo_then_again(store: sqlite3.Connection, rules: RuleClient,
                                           write_emulator: RunningEmulator) -> None:
    plan = _plan(store, rules)
    before = dict(tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE))
    (done,) = apply_plan(store, plan, rules, approved_by="Bob", yes=True, clock=clock)
    assert "would set isEnabled back to true" in undo_action(
        store, done.action_id, rules, by="Carol", yes=False, clock=clock)
    assert journal.get(store, done.action_id).status == "done"  # type: ignore[union-attr]
    assert "restored" in undo_action(store, done.action_id, rules, by="Carol", yes=True,
                                     clock=clock)
    assert rules.read(TEACHER, FORWARD_RULE).rule == before
    assert "already undone" in undo_action(store, done.action_id, rules, by="Carol", yes=True,
                                           clock=clock)
    again = apply_plan(store, plan, rules, approved_by="Bob", yes=True, clock=clock)
    assert again[0].result == "already"  # an undone action is not redone by the old plan

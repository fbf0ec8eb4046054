"""StateDB against a real SQLite file: permissions, lock, resolution, ack, atomicity, retention.

The lifecycle decisions are ledger.py's (tests/test_ledger.py); here they go through the store
the way the nightly job writes them: ledger computed inside the transaction, then the rows.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sqlite3
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from m365guard.errors import ExitCode, GuardError
from m365guard.ledger import (
    FindingsUpdate,
    acknowledge,
    build_inventory,
    compute_ledger,
    empty_inventory,
)
from m365guard.records import RunOutcome
from m365guard.state import StateDB
from m365guard.tables import NOT_ASKED, empty, make_table

T0 = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
MAILBOX = "j.smith@school.example"


def night(n: int) -> datetime:
    return T0 + timedelta(days=n)


def rule_finding(rule_id: str = "abc/1=", mailbox: str = MAILBOX) -> dict[str, Any]:
    return {
        "finding_id": f"fwd-{mailbox}-{rule_id}",
        "rule_id": "external-forwarding-personal",
        "severity": "high",
        "policy_clause": "AUP-INTENDED-RECIPIENTS",
        "occurred_at": "2025-03-01T09:00:00Z",
        "actor": mailbox,
        "actor_role": "staff",
        "counterparts": "jsmith@gmail.com",
        "object_type": "inbox_rule",
        "object_id": f"{mailbox}/{rule_id}",
        "summary": "inbox rule forwards to a personal address",
    }


def message_finding(n: int = 1) -> dict[str, Any]:
    return {
        "finding_id": f"bcc-{n}",
        "rule_id": "multi-recipient-without-bcc",
        "severity": "medium",
        "policy_clause": "AUP-BCC",
        "occurred_at": "2025-03-02T10:00:00Z",
        "actor": MAILBOX,
        "actor_role": "staff",
        "counterparts": "a@gmail.com;b@yahoo.co.uk",
        "object_type": "message",
        "object_id": f"<msg{n}@school.example>",
        "summary": "two parents visible to each other",
    }


def chat_finding() -> dict[str, Any]:
    return {**rule_finding(), "finding_id": "chat-1", "object_type": "chat",
            "object_id": "19:abc@thread.v2", "rule_id": "pupil-contact-non-school-channel"}


def coverage(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return make_table(
        "coverage",
        [{"mailbox": m, "folder": f, "status": s, "reason": "" if s == "ok" else "HTTP 503",
          "items": 1} for m, f, s in rows],
    )


def commit_run(db: StateDB, run_id: int, findings: pd.DataFrame, cov: pd.DataFrame,
               delta_links: Mapping[tuple[str, str], str], inventory: pd.DataFrame,
               outcome: RunOutcome, counts: dict[str, Any], now: datetime) -> FindingsUpdate:
    """What the nightly job does with a run's results: one transaction, ledger then rows."""
    with db.transaction():
        ledger = compute_ledger(db.findings(), findings, cov, run_id, now)
        run = dataclasses.replace(db.run(run_id), outcome=outcome, counts=counts,
                                  finished_at=now)
        db.record_run(run, ledger.changes, cov, delta_links, inventory)
    return ledger.update


def ack(db: StateDB, finding_id: str, by: str, reason: str, now: datetime) -> None:
    with db.transaction():
        db.write_findings(acknowledge(db.findings(ids=[finding_id]).to_dict("records")[0],
                                      by, reason, now))


def run_night(
    db: StateDB, n: int, findings: list[dict[str, Any]], cov: pd.DataFrame | None = None
) -> Any:
    run_id = db.start_run(night(n - 1), night(n), night(n))
    return commit_run(
        db,
        run_id,
        make_table("findings", findings),
        coverage((MAILBOX, "messageRules", "ok")) if cov is None else cov,
        {},
        empty_inventory(),
        "complete",
        {"messages": len(findings)},
        night(n) + timedelta(minutes=5),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    state = StateDB.open(tmp_path / "state" / "m365guard.db")
    yield state
    state.close()


def status_of(db: StateDB, finding_id: str) -> str:
    found = db.findings(ids=[finding_id])
    return str(found["status"].iloc[0])


def test_open_creates_owner_only_file_and_folder_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    with StateDB.open(path) as state:
        assert state.schema_version == 6  # 2: enforcement journal; 3: notifications;
        # 4: breaches; 5: read marks and state facts; 6: the findings lifecycle
        state.start_run(None, None, T0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for sibling in path.parent.iterdir():
        assert stat.S_IMODE(sibling.stat().st_mode) & 0o077 == 0, sibling
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with StateDB.open(path) as again:
        assert again.schema_version == 6


def test_open_tightens_an_existing_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDB.open(path).close()
    os.chmod(path, 0o644)
    StateDB.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _drop_findings(path: Path) -> None:
    StateDB.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE findings")
    conn.close()


def _scribble_over_pages(path: Path) -> None:
    """A real state file with its pages after the first (the schema's) overwritten."""
    with StateDB.open(path) as state:
        for n in range(1, 40):
            run_night(state, n, [message_finding(k) for k in range(n * 5)])
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))


DAMAGE = {
    "empty": (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    "not sqlite": (lambda path: path.write_bytes(b"this is not sqlite at all" * 100),
                   "not an SQLite database"),
    "truncated header": (lambda path: path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20),
                         "not an SQLite database"),
    "missing tables": (_drop_findings, "is missing tables (findings)"),
    "damaged pages": (_scribble_over_pages, "is damaged"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_state_file_that_cannot_be_trusted_is_refused_never_replaced(
        tmp_path: Path, case: str) -> None:
    path = tmp_path / "state.db"
    damage, words = DAMAGE[case]
    damage(path)
    before = path.read_bytes()
    with pytest.raises(GuardError) as raised, StateDB.open(path) as state:
        state.check_integrity()  # the nightly's preflight (quick_check)
    message = raised.value.message
    assert raised.value.exit_code == ExitCode.STATE_REFUSED
    assert words in message and "\n" not in message, message
    assert "Restoring the state" in message and "not replaced by a fresh one" in message
    assert path.read_bytes() == before  # never replaced, never "repaired"


def test_a_missing_state_is_a_first_night_unless_its_backups_show_it_existed(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDB.open(path) as state:  # a first night
        run_night(state, 1, [rule_finding()])
        backup = state.keep_backup(1, night(1), generations=3)
    assert backup is not None and backup.parent == tmp_path / "backups"
    path.unlink()
    with pytest.raises(GuardError) as raised:
        StateDB.open(path)
    assert raised.value.exit_code == ExitCode.STATE_REFUSED
    assert "is missing" in raised.value.message and str(backup) in raised.value.message
    assert not path.exists()


def test_backups_are_consistent_owner_only_and_kept_for_n_generations(db: StateDB) -> None:
    kept = []
    for n in range(1, 6):
        run_night(db, n, [rule_finding(), message_finding(n)])
        kept.append(db.keep_backup(n, night(n), generations=3))
    folder = db.path.parent / "backups"
    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted(path.name for path in kept[-3:] if path is not None)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((folder / name).stat().st_mode) == 0o600 for name in names)
    newest = kept[-1]
    assert newest is not None
    with sqlite3.connect(newest) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 5
    assert db.keep_backup(6, night(6), generations=0) is None  # [state] backups = 0: off


def test_a_lock_file_removed_while_held_no_longer_counts(db: StateDB) -> None:
    other = StateDB.open(db.path)
    with db.lock():
        db.confirm_lock()
        db.lock_path.unlink()  # a technician "clearing a stale lock"
        with other.lock():  # a second run now gets a lock of its own...
            other.confirm_lock()
            with pytest.raises(GuardError) as raised:  # ...so the first must not write
                db.confirm_lock()
    other.close()
    assert raised.value.exit_code == ExitCode.ALREADY_RUNNING
    assert "was removed or replaced" in raised.value.message


def test_a_run_refused_by_the_lock_names_the_pid_holding_it(db: StateDB) -> None:
    other = StateDB.open(db.path)
    with db.lock(), pytest.raises(GuardError) as raised, other.lock():
        pass
    other.close()
    assert f"(pid {os.getpid()})" in raised.value.message


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateDB.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(GuardError) as raised:
        StateDB.open(path)
    assert raised.value.exit_code == ExitCode.CONFIG_ERROR


def test_second_lock_fails_at_once_with_already_running(db: StateDB) -> None:
    other = StateDB.open(db.path)
    with db.lock():
        with pytest.raises(GuardError) as raised, other.lock():
            pass
        assert raised.value.exit_code == ExitCode.ALREADY_RUNNING
    with other.lock():
        pass
    other.close()


def test_snapshot_finding_resolves_when_covered_and_reopens(db: StateDB) -> None:
    first = run_night(db, 1, [rule_finding()])
    assert list(first.new["finding_id"]) == [rule_finding()["finding_id"]]
    second = run_night(db, 2, [])
    assert list(second.resolved["finding_id"]) == [rule_finding()["finding_id"]]
    assert second.still_open.empty
    third = run_night(db, 3, [rule_finding()])
    assert list(third.reopened["finding_id"]) == [rule_finding()["finding_id"]]
    assert third.new.empty
    row = db.findings(ids=[rule_finding()["finding_id"]]).iloc[0]
    assert (row["status"], row["times_seen"]) == ("open", 2)
    events = db.finding_history([rule_finding()["finding_id"]])["event"].tolist()
    assert events == ["opened", "resolved", "reopened"]


def test_uncovered_mailbox_never_resolves(db: StateDB) -> None:
    fid = rule_finding()["finding_id"]
    run_night(db, 1, [rule_finding()])
    failed = run_night(db, 2, [], coverage((MAILBOX, "messageRules", "failed")))
    assert failed.resolved.empty and list(failed.still_open["finding_id"]) == [fid]
    other_mailbox = run_night(db, 3, [], coverage(("someone@school.example", "messageRules", "ok")))
    assert other_mailbox.resolved.empty
    inbox_only = run_night(db, 4, [], coverage((MAILBOX, "inbox", "ok")))
    assert inbox_only.resolved.empty
    assert status_of(db, fid) == "open"


def test_message_findings_stay_open_until_acknowledged(db: StateDB) -> None:
    run_night(db, 1, [message_finding(1)], coverage((MAILBOX, "sentitems", "ok")))
    later = run_night(db, 2, [message_finding(2)], coverage((MAILBOX, "sentitems", "ok")))
    assert later.resolved.empty
    assert list(later.new["finding_id"]) == ["bcc-2"]
    assert list(later.still_open["finding_id"]) == ["bcc-1"]
    ack(db, "bcc-1", "Head", "spoken to the teacher", night(2) + timedelta(hours=8))
    after = run_night(db, 3, [message_finding(1)], coverage((MAILBOX, "sentitems", "ok")))
    assert list(after.still_open["finding_id"]) == ["bcc-2"]
    row = db.findings(ids=["bcc-1"]).iloc[0]
    assert (row["status"], row["times_seen"], row["status_by"]) == ("acknowledged", 2, "Head")
    assert row["last_seen"] == pd.Timestamp(night(3) + timedelta(minutes=5))
    history = db.finding_history(["bcc-1"])
    assert history["event"].tolist() == ["opened", "acknowledged", "seen"]
    assert history["reason"].iloc[1] == "spoken to the teacher"


def test_chat_findings_need_every_chat_read(db: StateDB) -> None:
    run_night(db, 1, [chat_finding()], coverage((MAILBOX, "chats", "ok")))
    partly = run_night(
        db, 2, [], coverage((MAILBOX, "chats", "ok"), ("b@school.example", "chats", "failed"))
    )
    assert partly.resolved.empty
    none_read = run_night(db, 3, [], coverage((MAILBOX, "sentitems", "ok")))
    assert none_read.resolved.empty
    full = run_night(db, 4, [], coverage((MAILBOX, "chats", "ok"), ("b@school.example", "chats",
                                                                       "ok")))
    assert list(full.resolved["finding_id"]) == ["chat-1"]


def test_an_exception_mid_commit_keeps_earlier_runs_and_loses_its_own(
    db: StateDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_night(db, 1, [rule_finding()])
    before = db.findings()

    def explode(*args: object) -> list[str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(StateDB, "write_findings", explode)
    run_id = db.start_run(night(1), night(2), night(2))
    with pytest.raises(RuntimeError):
        commit_run(db, run_id, make_table("findings", [message_finding()]),
                   coverage((MAILBOX, "messageRules", "ok")), {(MAILBOX, "inbox"): "L2"},
                   empty_inventory(), "complete", {}, night(2))
    pd.testing.assert_frame_equal(db.findings(), before)
    assert db.delta_links() == {}
    assert db.coverage([run_id]).empty
    with db.lock():
        assert db.run(run_id).outcome == "failed"
    assert db.run(1).outcome == "complete"


def _commit_then_hang(path: Path, ready: Any) -> None:
    """Child: commit a run but stop inside the transaction until killed."""
    original = StateDB.write_findings

    def hang(self: StateDB, *args: Any) -> None:
        original(self, *args)
        ready.set()
        signal.pause()

    StateDB.write_findings = hang  # type: ignore[method-assign]
    state = StateDB.open(path)
    with state.lock():
        run_id = state.start_run(night(1), night(2), night(2))
        findings = make_table("findings", [message_finding(n) for n in range(1, 200)])
        commit_run(state, run_id, findings, coverage((MAILBOX, "messageRules", "ok")),
                   {(MAILBOX, "inbox"): "L2"}, empty_inventory(), "complete", {}, night(2))


def test_a_run_killed_mid_commit_leaves_earlier_runs_intact(db: StateDB) -> None:
    run_night(db, 1, [rule_finding()])
    earlier = db.findings()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_commit_then_hang, args=(db.path, ready))
    child.start()
    try:
        assert ready.wait(30)
        with pytest.raises(GuardError) as busy, db.lock():
            pass
        assert busy.value.exit_code == ExitCode.ALREADY_RUNNING
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with StateDB.open(db.path) as reopened:
        pd.testing.assert_frame_equal(reopened.findings(), earlier)
        assert reopened.run(1).outcome == "complete"
        assert reopened.run(2).outcome == "failed"
        assert "killed" in reopened.run(2).error
        assert reopened.delta_links() == {}
        assert reopened.coverage([2]).empty
        with sqlite3.connect(db.path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_delta_links_inventory_and_run_queries(db: StateDB) -> None:
    rules = make_table("rule_forwards", [
        {"mailbox": MAILBOX, "rule_id": "r/1", "rule_name": "=HYPERLINK(1)", "is_enabled": True,
         "action": "forwardTo", "address": "me@gmail.com"}])
    forwarding = make_table("mailbox_forwarding", [
        {"mailbox": "a@school.example", "address": "a@hotmail.com", "source": "audit",
         "observed_at": "2025-03-01T00:00:00Z"},
        {"mailbox": "a@school.example", "address": "", "source": "audit",
         "observed_at": "2025-03-02T00:00:00Z"},
        {"mailbox": "b@school.example", "address": "b@aol.co.uk", "source": "export",
         "deliver_and_forward": True, "observed_at": "2025-03-02T00:00:00Z"}])
    inventory = build_inventory(rules, forwarding)
    assert inventory["object_id"].tolist() == [f"{MAILBOX}/r/1", "b@school.example/b@aol.co.uk"]
    run_id = db.start_run(night(0), night(1), night(1), granted_permissions=["User.Read.All"])
    commit_run(db, run_id, empty("findings"), empty("coverage"), {(MAILBOX, "inbox"): "L1"},
               inventory, "partial", {"mailboxes": 1}, night(1))
    run2 = db.start_run(night(1), night(2), night(2))
    commit_run(db, run2, empty("findings"), empty("coverage"), {(MAILBOX, "inbox"): "L2"},
               empty_inventory(), "complete", {}, night(2))
    assert db.delta_links() == {(MAILBOX, "inbox"): "L2"}
    assert db.latest_inventory()["target"].tolist() == ["me@gmail.com", "b@aol.co.uk"]
    assert db.run(run_id).granted_permissions == ("User.Read.All",)
    last = db.last_successful_run()
    assert last is not None and last.run_id == run2
    assert [r.run_id for r in db.runs_between(night(0), night(2))] == [run_id]


def test_prune_forgets_old_runs_and_closed_findings_but_keeps_open_ones(db: StateDB) -> None:
    run_night(db, 1, [rule_finding(), message_finding()])
    run_night(db, 2, [message_finding()])
    assert status_of(db, rule_finding()["finding_id"]) == "resolved"
    removed = db.prune(30, night(40))
    assert removed == {"runs": 2, "findings": 1}
    assert db.findings()["finding_id"].tolist() == ["bcc-1"]
    assert db.runs_between(night(0), night(50)) == []
    assert db.finding_history([rule_finding()["finding_id"]]).empty
    with pytest.raises(GuardError):
        db.prune(0, night(40))


def test_findings_between_covers_activity_and_open_carry_over(db: StateDB) -> None:
    run_night(db, 1, [message_finding(1), rule_finding()])
    run_night(db, 5, [message_finding(1)])
    rule_id = rule_finding()["finding_id"]
    assert set(db.findings_between(night(3), night(4))["finding_id"]) == {"bcc-1", rule_id}
    assert db.findings_between(night(6), night(7))["finding_id"].tolist() == ["bcc-1"]
    assert db.findings_between(night(0), night(1))["finding_id"].tolist() == []


def test_users_without_a_mailbox_are_remembered_by_their_latest_check(db: StateDB) -> None:
    service, leaver = "scanner@school.example", "leaver@school.example"
    run_night(db, 1, [], coverage((service, "sentitems", "no_mailbox"),
                                  (leaver, "sentitems", "ok"), (MAILBOX, "sentitems", "ok")))
    not_asked = make_table("coverage", [
        {"mailbox": service, "folder": "sentitems", "status": "no_mailbox",
         "reason": f"{NOT_ASKED}: no Exchange mailbox on 2024-11-01", "items": 0}])
    run_night(db, 2, [], pd.concat([not_asked, coverage((leaver, "sentitems", "no_mailbox"))]))
    assert db.without_mailbox(night(0)) == {service: night(1), leaver: night(2)}
    assert db.without_mailbox(night(2)) == {leaver: night(2)}  # older checks are forgotten
    run_night(db, 3, [], coverage((service, "inbox", "ok")))  # it has a mailbox now
    assert db.without_mailbox(night(0)) == {leaver: night(2)}


def _open_at_once(path: Path, barrier: Any, results: Any) -> None:
    """Child: open (create) the state file the moment every sibling is ready."""
    barrier.wait(30)
    try:
        StateDB.open(path).close()
    except GuardError as exc:
        results.put(f"exit {int(exc.exit_code)}: {exc.message}")
    else:
        results.put("ok")


def test_processes_creating_a_fresh_state_at_once_all_open_it(tmp_path: Path) -> None:
    """Two scheduled jobs (or a job and a technician) starting on a new install: creating and
    migrating the schema is safe under concurrency (once: 'table runs already exists')."""
    context = multiprocessing.get_context("fork")
    for attempt in range(6):
        path = tmp_path / f"try{attempt}" / "state.db"
        path.parent.mkdir()
        barrier, results = context.Barrier(6), context.Queue()
        children = [context.Process(target=_open_at_once, args=(path, barrier, results))
                    for _ in range(6)]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(30)
        assert outcomes == ["ok"] * 6, outcomes
        with StateDB.open(path) as state:
            assert state.schema_version == 6

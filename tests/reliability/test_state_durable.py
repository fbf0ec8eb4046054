"""State you can trust: a damaged state is refused (never replaced), backups restore it, a lock
is never shared, a state is one tenant's, and local inputs are checked before Graph.

Nights run on the tiny tenant (tiny_site.py) or, through the CLI, on the small school's site;
each refusal is one line with its exit code and leaves the state file as it was.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from site_support import Site, connection_env, run_cli_inprocess
from tiny_site import POLICY, serve, tiny

from m365guard.backups import backups_of
from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode, GuardError
from m365guard.ledger import acknowledge
from m365guard.state import StateDB

__all__ = ["tiny"]
OTHER_TENANT = "0c0ffee0-0000-4000-8000-000000000099"


def _missing_tables(path: Path) -> None:
    StateDB.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE finding_events")
    conn.commit()
    conn.close()  # checkpointed: the file holds the whole damage


DAMAGE = {
    "empty": lambda path: path.write_bytes(b""),
    "not sqlite": lambda path: path.write_bytes(b"PK\x03\x04 a zip file, say" * 50),
    "missing tables": _missing_tables,
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_state_is_refused_in_one_line_and_left_as_it_was(
        case: str, site: Site, emulator: RunningEmulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    site.state_dir.mkdir(mode=0o700)
    DAMAGE[case](site.db)
    before, requests = site.db.read_bytes(), emulator.stats.total
    done = run_cli_inprocess(["nightly", "--config", str(site.config)], site.env, capsys,
                             monkeypatch)
    assert done.code == ExitCode.STATE_REFUSED, done.stderr
    assert done.stderr.startswith("error: the state file ") and done.stderr.count("\n") == 1
    assert "Restoring the state" in done.stderr and "Traceback" not in done.stderr
    assert site.db.read_bytes() == before
    assert emulator.stats.total == requests, "Graph was contacted"
    assert not list(site.out.glob("findings-*.csv"))


def test_backups_after_each_night_restore_the_state_and_its_decisions(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        school.set_policy("backups = 2")
        start = school.start
        first = school.night(start)
        message = first.update.new[first.update.new["object_type"] == "message"].iloc[0]
        with StateDB.open(school.db) as db, db.transaction():  # the DSL dealt with it
            known = db.findings(ids=[message["finding_id"]]).to_dict("records")[0]
            db.write_findings(acknowledge(known, "dsl", "spoken to", start))
        for n in (1, 2):
            school.night(start + timedelta(days=n))
        kept = backups_of(school.db)
        assert len(kept) == 2 and kept[0].name.endswith(".run3.bak"), kept
        folder = kept[0].parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()} == {0o600}

        school.db.write_bytes(b"")  # the state is lost (a disk fault, a bad copy)
        with pytest.raises(GuardError) as refused:
            school.night(start + timedelta(days=3))
        assert refused.value.exit_code == ExitCode.STATE_REFUSED
        assert str(kept[0]) in refused.value.message  # the way out names the newest backup
        assert school.db.read_bytes() == b""

        # docs/reliability.md, "Restoring the state"
        for leftover in (Path(f"{school.db}-wal"), Path(f"{school.db}-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(kept[0], school.db)
        restored = school.night(start + timedelta(days=3))
        assert restored.run.outcome == "complete"
        assert restored.update.new.empty  # nothing returns as new
        with StateDB.open(school.db) as db:
            assert list(db.findings(ids=[message["finding_id"]])["status"]) == ["acknowledged"]
            assert [run.run_id for run in db.runs_between(start, start + timedelta(days=9))] \
                == [1, 2, 3, 4]


def test_another_programs_write_lock_is_waited_for_then_named(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        assert school.night(school.start).run.outcome == "complete"
        school.set_policy("lock_wait_seconds = 0.5")
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys, time\n"
             "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "conn.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(120)",
             str(school.db)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            requests = school.emulator.stats.total
            with pytest.raises(GuardError) as refused:
                school.night(school.start + timedelta(days=1))
        finally:
            holder.kill()
            holder.wait(30)
        message = refused.value.message
        assert refused.value.exit_code == ExitCode.ALREADY_RUNNING
        assert f"(pid {holder.pid})" in message and "lock_wait_seconds" in message, message
        assert school.emulator.stats.total == requests, "Graph was contacted"
        assert school.night(school.start + timedelta(days=1)).run.outcome == "complete"


def test_a_lock_file_removed_mid_run_stops_the_run_before_it_writes(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        first = school.night(school.start)

        def clear_the_stale_lock(done: int, total: int, lock: Path = school.db) -> None:
            # what a technician "clearing a stale lock" does
            lock.with_name(lock.name + ".lock").unlink(missing_ok=True)

        second_night = school.start + timedelta(days=1)
        with pytest.raises(GuardError) as stopped:
            school.night(second_night, progress=clear_the_stale_lock)
        assert stopped.value.exit_code == ExitCode.ALREADY_RUNNING
        assert "was removed or replaced" in stopped.value.message
        with StateDB.open(school.db) as db:
            run = db.run(2)
            assert run.outcome == "failed" and "was removed or replaced" in run.error
            assert len(db.findings()) == len(first.update.new)  # nothing of its own written
        assert not (school.root / "out" / f"findings-{second_night.date()}.csv").exists()
        again = school.night(second_night)
        assert again.run.outcome == "complete"


def test_a_state_belongs_to_one_tenant(tiny: dict[str, Any], tmp_path: Path,
                                       emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        school.night(school.start)
        tenant = school.conn.tenant_id
        with StateDB.open(school.db) as db:
            assert db.fact("tenant_id") == tenant
        requests = school.emulator.stats.total
        other = dataclasses.replace(school.conn, tenant_id=OTHER_TENANT)
        with pytest.raises(GuardError) as refused:
            school.night(school.start + timedelta(days=1), conn=other)
        message = refused.value.message
        assert refused.value.exit_code == ExitCode.STATE_REFUSED
        assert tenant in message and OTHER_TENANT in message and "[state] path" in message
        assert "\n" not in message
        assert school.emulator.stats.total == requests, "Graph was contacted"


BAD_ROSTER = "name,personal address\nJane Smith,jane@gmail.com\n"  # not upn,personal_email


def test_a_bad_roster_ends_the_night_before_graph_and_is_recorded(
        tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        (school.root / "staff.csv").write_text(BAD_ROSTER, encoding="utf-8")
        school.policy_file.write_text(POLICY.replace(
            "[people]\n", '[people]\nstaff_roster = "staff.csv"\n'), encoding="utf-8")
        requests = school.emulator.stats.total
        with pytest.raises(GuardError) as refused:
            school.night(school.start)
        assert refused.value.exit_code == ExitCode.INPUT_FILE_ERROR
        assert "missing column upn" in refused.value.message
        assert school.emulator.stats.total == requests, "Graph was contacted"
        with StateDB.open(school.db) as db:  # recorded with its reason, not "killed"
            assert db.run(1).outcome == "failed"
            assert db.run(1).error == refused.value.message


@pytest.mark.parametrize("command", ["policy", "doctor"])
def test_policy_check_and_doctor_check_local_inputs_as_the_nightly_does(
        command: str, tiny: dict[str, Any], tmp_path: Path, emu_workdir: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for school in serve(tiny, tmp_path / "site", emu_workdir):
        (school.root / "staff.csv").write_text(BAD_ROSTER, encoding="utf-8")
        school.policy_file.write_text(POLICY.replace(
            "[people]\n", '[people]\nstaff_roster = "staff.csv"\n'), encoding="utf-8")
        args = (["policy", "check", "--config", str(school.policy_file)] if command == "policy"
                else ["doctor", "--config", str(school.policy_file)])
        done = run_cli_inprocess(args, connection_env(school.emulator.settings), capsys,
                                 monkeypatch)
        # the doctor prints its table (the roster's line FAIL) and exits with the roster's code
        assert done.code == ExitCode.INPUT_FILE_ERROR, done.stderr
        if command == "policy":
            assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
            assert "missing column upn" in done.stderr

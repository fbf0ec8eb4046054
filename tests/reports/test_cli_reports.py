"""The report commands end to end: real policy file, real state, files written, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from sample_school import build_sample_school
from typer.testing import CliRunner

from m365guard.cli.main import app
from m365guard.errors import ExitCode, GuardError


def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(
        '[school]\nname = "Manby Lodge Infant School"\ndomains = ["school.example"]\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n[output]\ndir = "{tmp_path / "out"}"\n',
        encoding="utf-8")
    return path


def test_list_ack_weekly_and_audit(tmp_path: Path) -> None:
    build_sample_school(tmp_path / "state.db").db.close()
    config = str(policy_file(tmp_path))
    runner = CliRunner()
    listed = runner.invoke(app, ["findings", "list", "-c", config])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.output.splitlines()] == ["F1", "F3", "F5", "F6"]
    acked = runner.invoke(app, ["findings", "ack", "F6", "--by", "Head", "--reason", "talked",
                                "-c", config])
    assert acked.exit_code == 0, acked.output
    out_csv = tmp_path / "acked.csv"
    runner.invoke(app, ["findings", "list", "-c", config, "--status", "acknowledged",
                        "--out", str(out_csv)])
    table = pd.read_csv(out_csv, encoding="utf-8-sig")
    assert sorted(table["finding_id"]) == ["F2", "F6"]
    weekly = runner.invoke(app, ["weekly", "-c", config, "--week", "2025-W11"])
    assert weekly.exit_code == 0, weekly.output
    assert (tmp_path / "out" / "weekly-summary-2025-W11.csv").exists()
    audit = runner.invoke(app, ["audit", "-c", config, "--from", "2025-03-01",
                                "--to", "2025-03-16"])
    assert audit.exit_code == 0, audit.output
    clauses = pd.read_csv(tmp_path / "out" / "audit-pack-2025-03-01_2025-03-16" / "clauses.csv",
                          encoding="utf-8-sig")
    assert "AUP-MONITORING" in set(clauses["clause_id"])


def test_unknown_finding_id_is_one_line_and_exit_code(tmp_path: Path) -> None:
    build_sample_school(tmp_path / "state.db").db.close()
    result = subprocess.run(
        [sys.executable, "-c", "from m365guard.cli.main import run; run()", "findings", "ack",
         "NOPE", "--by", "Head", "--reason", "x", "-c", str(policy_file(tmp_path))],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == ExitCode.USAGE
    assert result.stderr.strip().splitlines() == [
        "error: no finding with id 'NOPE'; `m365guard findings list` shows the ids"]


def test_ack_unknown_id_and_missing_reason_are_user_errors(tmp_path: Path) -> None:
    """(moved from tests/test_statedb.py: the messages quote the command's flags)"""
    school = build_sample_school(tmp_path / "state.db")
    school.db.close()
    config = str(policy_file(tmp_path))
    runner = CliRunner()
    unknown = runner.invoke(app, ["findings", "ack", "nope", "--by", "Head", "--reason", "done",
                                  "-c", config])
    assert isinstance(unknown.exception, GuardError)  # run() prints it and exits with its code
    assert unknown.exception.exit_code == ExitCode.USAGE and "nope" in unknown.exception.message
    no_reason = runner.invoke(app, ["findings", "ack", "F6", "--by", "Head", "--reason", "  ",
                                    "-c", config])
    assert isinstance(no_reason.exception, GuardError)
    assert no_reason.exception.exit_code == ExitCode.USAGE
    listed = runner.invoke(app, ["findings", "list", "-c", config])
    assert "F6" in [line.split()[0] for line in listed.output.splitlines()]  # still open

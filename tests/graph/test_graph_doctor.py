"""`doctor` against the emulator: all lines pass with least privilege; a missing grant is named."""

from __future__ import annotations

from pathlib import Path

from graph_support import cert_conn, secret_conn
from typer.testing import CliRunner

from m365guard.cli.main import app
from m365guard.emulator import synth
from m365guard.emulator.identity import LEAST_PRIVILEGE_ROLES
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.graph.doctor import run_doctor
from m365guard.graph.permissions import REQUIRED_PERMISSIONS


def test_all_checks_pass(emulator: RunningEmulator) -> None:
    checks = run_doctor(cert_conn(emulator.settings), set(REQUIRED_PERMISSIONS))
    assert all(check.passed for check in checks), [c for c in checks if not c.passed]
    assert {f"call {kind}" for kind in REQUIRED_PERMISSIONS} <= {c.name for c in checks}


def test_missing_permission_is_named_with_its_fix(school: synth.SyntheticSchool,
                                                  tmp_path: Path) -> None:
    roles = [r for r in LEAST_PRIVILEGE_ROLES if r != "Chat.ReadBasic.All"]
    with start_in_thread(Tenant.from_document(school.tenant), workdir=tmp_path,
                         roles=roles) as emulator:
        checks = run_doctor(secret_conn(emulator.settings), set(REQUIRED_PERMISSIONS))
    failed = {c.name: c for c in checks if not c.passed}
    assert set(failed) == {"permission Chat.ReadBasic.All", "call chats"}
    assert "Chat.ReadBasic.All" in failed["call chats"].fix


def test_cli_exit_code(emulator: RunningEmulator, tmp_path: Path) -> None:
    settings = emulator.settings
    env = {"M365GUARD_TENANT_ID": settings.tenant_id, "M365GUARD_CLIENT_ID": settings.client_id,
           "M365GUARD_CLIENT_SECRET": settings.client_secret,
           "M365GUARD_AUTHORITY_HOST": settings.authority_host,
           "M365GUARD_GRAPH_ENDPOINT": settings.graph_endpoint,
           "M365GUARD_CA_BUNDLE": settings.ca_bundle}
    result = CliRunner().invoke(app, ["doctor"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output


def test_edu_roster_read_basic_is_not_enough(school: synth.SyntheticSchool,
                                             tmp_path: Path) -> None:
    """educationuser-list.md: application EduRoster.Read.All (ReadBasic does not serve it)."""
    roles = [r if r != "EduRoster.Read.All" else "EduRoster.ReadBasic.All"
             for r in LEAST_PRIVILEGE_ROLES]
    with start_in_thread(Tenant.from_document(school.tenant), workdir=tmp_path,
                         roles=roles) as emulator:
        checks = run_doctor(secret_conn(emulator.settings), {"edu_roles", "users"})
    failed = {c.name: c for c in checks if not c.passed}
    assert set(failed) == {"permission EduRoster.Read.All", "call edu_roles"}
    assert "403" in failed["call edu_roles"].detail
    assert "EduRoster.Read.All" in failed["call edu_roles"].fix

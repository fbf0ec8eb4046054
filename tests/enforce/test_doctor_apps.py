"""`doctor` names each app registration and what it can do: nightly read-only, enforcement
with MailboxSettings.ReadWrite; tokens come from the emulator through the real msal."""

from __future__ import annotations

from pathlib import Path

from enforce_site import Site
from enforce_support import conn_for, read_emulator, workdir, write_emulator

from m365guard.config import load_policy
from m365guard.emulator.server import RunningEmulator
from m365guard.enforce.doctor import app_checks

__all__ = ["read_emulator", "workdir", "write_emulator"]


def _checks(emulator: RunningEmulator, root: Path, *, enabled: bool, extra: str = "",
            env: dict[str, str] | None = None) -> dict[str, tuple[bool, str, str]]:
    site = Site.make(root, emulator, enabled=enabled)
    if extra:
        config = site.root / "policies.toml"
        config.write_text(config.read_text() + extra)
    policy = load_policy(site.root / "policies.toml")
    return {check.name: (check.passed, check.detail, check.fix)
            for check in app_checks(policy, conn_for(emulator.settings),
                                    {**site.env, **(env or {})})}


def test_read_only_nightly_app_with_enforcement_off(read_emulator: RunningEmulator,
                                                    tmp_path: Path) -> None:
    checks = _checks(read_emulator, tmp_path, enabled=False)
    assert checks["app nightly"][0] and "cannot change anything" in checks["app nightly"][1]
    assert checks["app enforcement"][0] and "enforcement is off" in checks["app enforcement"][1]


def test_enforcement_on_without_the_write_permission_names_the_grant(
        read_emulator: RunningEmulator, tmp_path: Path) -> None:
    passed, detail, fix = _checks(read_emulator, tmp_path, enabled=True)["app enforcement"]
    assert not passed and "lacks MailboxSettings.ReadWrite" in detail
    assert "Grant admin consent" in fix and "RBAC for Applications" in fix


def test_one_app_that_enforces(write_emulator: RunningEmulator, tmp_path: Path) -> None:
    checks = _checks(write_emulator, tmp_path, enabled=True)
    assert checks["app enforcement"][0] and "can disable inbox rules" in checks[
        "app enforcement"][1]
    off = _checks(write_emulator, tmp_path / "off", enabled=False)
    assert not off["app nightly"][0] and "remove MailboxSettings.ReadWrite" in off[
        "app nightly"][2]


def test_a_second_app_the_tenant_does_not_know(write_emulator: RunningEmulator,
                                               tmp_path: Path) -> None:
    extra = 'client_id = "00000000-0000-4000-8000-00000000abcd"\n'
    without = _checks(write_emulator, tmp_path / "a", enabled=True, extra=extra)
    assert "no credential" in without["app enforcement"][2]
    checks = _checks(write_emulator, tmp_path / "b", enabled=True, extra=extra,
                     env={"M365GUARD_ENFORCE_CLIENT_SECRET": "its own secret"})
    passed, detail, fix = checks["app enforcement"]
    assert not passed and "00000000-0000-4000-8000-00000000abcd" in detail
    assert "is not registered" in fix
    assert not checks["app nightly"][0]  # with a second app, the nightly app must not write

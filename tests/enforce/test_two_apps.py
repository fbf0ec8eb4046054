"""The least-privilege set-up README describes: the nightly app reads, a second app registration
holding only MailboxSettings.ReadWrite enforces. Two real msal clients, two tokens."""

from __future__ import annotations

import re
from pathlib import Path

from enforce_site import Site
from enforce_support import FORWARD_RULE, TEACHER, read_emulator, workdir

from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode

__all__ = ["read_emulator", "workdir"]


def test_the_second_app_enforces_and_the_nightly_app_cannot(read_emulator: RunningEmulator,
                                                            tmp_path: Path) -> None:
    # the nightly app alone (no [enforce] client_id) holds no write permission: refused
    alone = Site.make(tmp_path / "alone", read_emulator)
    alone.nightly()
    refused = alone.cli("enforce", "apply", str(alone.plan()), "--approved-by", "Bob", "--yes")
    assert refused.returncode == int(ExitCode.PERMISSION_MISSING)
    assert "has no MailboxSettings.ReadWrite" in refused.stderr and alone.patches() == 0

    writer = read_emulator.register_app(["MailboxSettings.ReadWrite"])
    site = Site.make(tmp_path / "site", read_emulator,
                     enforce=f'client_id = "{writer.client_id}"\n')
    site.nightly()
    plan = site.plan("--rule", "external-forwarding-personal")
    secret = {"M365GUARD_ENFORCE_CLIENT_SECRET": writer.client_secret}
    without = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes")
    assert without.returncode == int(ExitCode.CONFIG_ERROR)
    assert "no credential" in without.stderr and len(without.stderr.splitlines()) == 1
    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes",
                    extra=secret)
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.rule(TEACHER, FORWARD_RULE)["isEnabled"] is False  # type: ignore[index]
    assert site.patches() == 2
    doctor = site.cli("doctor", extra=secret)
    table = re.sub(r"[\s│┃]", "", doctor.stdout)  # rich folds long cells over lines
    assert f"client{writer.client_id}:candisableinboxrules" in table
    assert "cannotchangeanything" in table

"""`m365guard nightly --all CONFIG_DIR`: a trust's tenants, each in its own process and state."""

from __future__ import annotations

import subprocess
from pathlib import Path

from site_support import CLI, make_site, policy_text, process_env

from m365guard.emulator import synth
from m365guard.emulator.server import RunningEmulator
from m365guard.state import StateDB


def _tenant_table(emulator: RunningEmulator) -> str:
    """The [tenant] table a tenant's folder keeps (its own app and certificate)."""
    settings = emulator.settings
    return (f'\n[tenant]\ntenant_id = "{settings.tenant_id}"\nclient_id = "{settings.client_id}"'
            f'\ncertificate_path = "{settings.certificate_path}"\nauthority_host = '
            f'"{settings.authority_host}"\ngraph_endpoint = "{settings.graph_endpoint}"\n'
            f'ca_bundle = "{settings.ca_bundle}"\n')


def test_every_tenant_runs_with_its_own_state_and_one_line(
        tmp_path: Path, school: synth.SyntheticSchool, emulator: RunningEmulator) -> None:
    trust = tmp_path / "trust"
    for name in ("north", "south"):
        make_site(trust / name, school, emulator.settings,
                  text=policy_text(school) + _tenant_table(emulator))
    done = subprocess.run([str(CLI), "nightly", "--all", str(trust), "--parallel", "2"],
                          env=process_env({}), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 3, done.stdout + done.stderr[-2000:]  # new high findings
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["north", "south"], lines
    assert all(line.startswith(f"{name}: complete") and line.endswith("(exit 3)")
               for name, line in zip(("north", "south"), lines, strict=True)), lines
    for name in ("north", "south"):
        with StateDB.open(trust / name / "state" / "m365guard.db") as db:
            assert not db.findings().empty
        assert (trust / name / "state" / "m365guard-mail" / "manifest.json").is_file()
        assert list((trust / name / "out").glob("*findings*.csv"))


def test_two_tenants_sharing_a_state_file_are_refused_before_any_run(
        tmp_path: Path, school: synth.SyntheticSchool, emulator: RunningEmulator) -> None:
    trust = tmp_path / "trust"
    shared = (tmp_path / "shared.db").as_posix()
    text = (policy_text(school).replace('path = "state/m365guard.db"', f'path = "{shared}"')
            + _tenant_table(emulator))
    for name in ("north", "south"):
        make_site(trust / name, school, emulator.settings, text=text)
    done = subprocess.run([str(CLI), "nightly", "--all", str(trust)], env=process_env({}),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 6, done.stdout + done.stderr
    assert "share the state file" in done.stderr
    assert not Path(shared).exists()

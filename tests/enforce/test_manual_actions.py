"""Mailbox forwarding has no Graph API: the plan gives the exact PowerShell, apply hands it to
an admin (journalled `manual`), and the nights after say pending until the export shows the
forwarding gone, then verified. The export file is what Export-Csv writes on Windows."""

from __future__ import annotations

import json
from pathlib import Path

from enforce_site import Site
from enforce_support import TEACHER, workdir, write_emulator

from m365guard.emulator.server import RunningEmulator
from m365guard.enforce import journal

__all__ = ["workdir", "write_emulator"]
HEADER = ('#TYPE Selected.Microsoft.Exchange.Data.Directory.Management.Mailbox\n'
          '"UserPrincipalName","PrimarySmtpAddress","ForwardingSmtpAddress","ForwardingAddress",'
          '"DeliverToMailboxAndForward"\n')


def _export(site: Site, address: str) -> None:
    folder = site.root / "exports"
    folder.mkdir(exist_ok=True)
    (folder / "mailbox-forwarding.csv").write_text(
        HEADER + f'"{TEACHER}","{TEACHER}","{address}","","True"\n', encoding="utf-8-sig")


def test_mailbox_forwarding_is_handed_over_and_verified(tmp_path: Path,
                                                        write_emulator: RunningEmulator) -> None:
    site = Site.make(tmp_path / "site", write_emulator,
                     collect='exchange_forwarding_export = "exports/mailbox-forwarding.csv"\n')
    _export(site, "smtp:jane.smith1987@gmail.com")
    site.nightly()
    object_id = f"{TEACHER}/jane.smith1987@gmail.com"
    plan = site.plan("--rule", "external-forwarding-personal")
    action = next(a for a in json.loads(plan.read_text())["actions"]
                  if a["object_id"] == object_id)
    assert action["kind"] == "exchange_powershell"
    assert action["commands"][-1] == (f"Set-Mailbox -Identity '{TEACHER}' -ForwardingSmtpAddress"
                                      " $null -ForwardingAddress $null"
                                      " -DeliverToMailboxAndForward $false")
    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{action['action_id']}: for an Exchange admin: Get-EXOMailbox" in done.stdout
    site.nightly()
    _export(site, "")  # the admin ran Set-Mailbox; the next export shows no forwarding
    site.nightly()
    store = journal.connect(site.root / "state" / "m365guard.db")
    try:
        events = [e["event"] for e in journal.events(store)
                  if e["action_id"] == action["action_id"]]
    finally:
        store.close()
    assert events == ["planned", "manual", "pending", "verified"]
    assert object_id not in set(site.findings().query("status == 'open' and times_seen > 2")
                                ["object_id"])  # not seen on the third night


def _posture(site: Site, mode: str, *, age_days: int = 0) -> None:
    from datetime import UTC, datetime, timedelta

    folder = site.root / "exports"
    folder.mkdir(exist_ok=True)
    stamp = (datetime.now(UTC) - timedelta(days=age_days)).isoformat()
    files = {"export-info.json": {"exportedAt": stamp},
             "outbound-spam-policies.json": {"Name": "Default", "IsDefault": True,
                                             "AutoForwardingMode": mode, "Rules": []},
             "remote-domains.json": {"Identity": "Default", "DomainName": "*",
                                     "AutoForwardEnabled": False},
             "transport-rules.json": []}
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value), encoding="utf-8-sig")


def test_the_nightly_reads_the_tenant_posture_and_a_stale_export_is_partial(
        tmp_path: Path, write_emulator: RunningEmulator) -> None:
    site = Site.make(tmp_path / "site", write_emulator, enforce='exchange_export = "exports"\n')
    _posture(site, "On")
    assert site.nightly().returncode == 3  # new high findings
    object_id = "outbound_spam_policy/Default"

    def status() -> list[str]:
        found = site.findings()
        return found.loc[found["object_id"] == object_id, "status"].tolist()

    assert status() == ["open"]
    plan = json.loads(site.plan("--rule", "tenant-auto-forwarding").read_text())
    assert plan["actions"][0]["commands"] == [
        "Set-HostedOutboundSpamFilterPolicy -Identity 'Default' -AutoForwardingMode Off"]
    _posture(site, "Off", age_days=30)  # fixed, but the export is a month old
    stale = site.cli("nightly")
    assert stale.returncode == 4, stale.stdout + stale.stderr  # partial: never clean
    assert status() == ["open"]
    _posture(site, "Off")
    site.nightly()
    assert status() == ["resolved"]

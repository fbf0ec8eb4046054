"""The Exchange export as export-exchange.ps1 writes it (UTF-8 with BOM, one-item lists as
objects, as Windows PowerShell 5.1 does), imported into posture findings; stale never clean."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from m365guard.enforce.exchange_export import read_export
from m365guard.errors import ExitCode, GuardError

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
SCHOOL = frozenset({"manbylodge.sch.uk", "manbylodge.onmicrosoft.com"})


def _write(folder: Path, name: str, value: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"\xef\xbb\xbf" + json.dumps(value, indent=4).encode())


def _export(folder: Path, *, age: timedelta = timedelta(days=1), policies: Any = None,
            domains: Any = None, transport: Any = None) -> Path:
    _write(folder, "export-info.json", {"exportedAt": (NOW - age).isoformat(),
                                        "organization": "manbylodge.onmicrosoft.com"})
    _write(folder, "outbound-spam-policies.json", policies if policies is not None else [
        {"Name": "Default", "IsDefault": True, "AutoForwardingMode": "Automatic", "Rules": []}])
    _write(folder, "remote-domains.json", domains if domains is not None else
           {"Identity": "Default", "DomainName": "*", "AutoForwardEnabled": False})
    _write(folder, "transport-rules.json", transport if transport is not None else [])
    return folder


def _read(folder: Path, max_age: int = 8) -> Any:
    return read_export(folder, now=NOW, max_age_days=max_age, school_domains=SCHOOL)


def test_a_locked_down_tenant_has_no_findings(tmp_path: Path) -> None:
    posture = _read(_export(tmp_path))
    assert posture.status == "ok" and posture.findings.empty


def test_a_tenant_that_allows_external_forwarding(tmp_path: Path) -> None:
    policies = [
        {"Name": "Default", "IsDefault": True, "AutoForwardingMode": "On", "Rules": []},
        {"Name": "Office", "IsDefault": False, "AutoForwardingMode": "On",
         "Rules": {"Name": "Office rule", "State": "Enabled", "Priority": 0,
                   "From": ["office@manbylodge.sch.uk"], "FromMemberOf": [],
                   "SenderDomainIs": []}},
        {"Name": "Unused", "IsDefault": False, "AutoForwardingMode": "On",
         "Rules": [{"Name": "off", "State": "Disabled", "From": ["x@manbylodge.sch.uk"]}]},
    ]
    domains = [{"Identity": "Default", "DomainName": "*", "AutoForwardEnabled": True},
               {"Identity": "Council", "DomainName": "lincolnshire.gov.uk",
                "AutoForwardEnabled": False}]
    transport = {"Name": "Copy head's mail", "State": "Enabled", "SentToScope": "",
                 "RedirectMessageTo": [], "BlindCopyTo": ["head.home@gmail.com"],
                 "CopyTo": ["deputy@manbylodge.sch.uk"], "AddToRecipients": []}
    posture = _read(_export(tmp_path, policies=policies, domains=domains, transport=transport))
    found = {row.object_id: row for row in posture.findings.itertuples()}
    assert set(found) == {"outbound_spam_policy/Default", "outbound_spam_policy/Office",
                          "remote_domain/Default", "transport_rule/Copy head's mail"}
    assert "everyone" in found["outbound_spam_policy/Default"].summary
    assert "office@manbylodge.sch.uk" in found["outbound_spam_policy/Office"].summary
    assert found["transport_rule/Copy head's mail"].counterparts == "head.home@gmail.com"
    assert found["outbound_spam_policy/Default"].severity == "high"
    assert set(posture.findings["rule_id"]) == {"tenant-auto-forwarding"}


def test_an_old_export_is_stale_never_clean(tmp_path: Path) -> None:
    policies = [{"Name": "Default", "IsDefault": True, "AutoForwardingMode": "On", "Rules": []}]
    posture = _read(_export(tmp_path, age=timedelta(days=9), policies=policies))
    assert posture.status == "stale" and posture.status != "ok"
    assert _read(tmp_path, max_age=10).status == "ok"


@pytest.mark.parametrize("broken", ["missing", "not json", "no time zone", "not a list"])
def test_a_broken_export_is_one_line(tmp_path: Path, broken: str) -> None:
    folder = _export(tmp_path)
    if broken == "missing":
        (folder / "remote-domains.json").unlink()
    elif broken == "not json":
        (folder / "transport-rules.json").write_text("<html>")
    elif broken == "no time zone":
        _write(folder, "export-info.json", {"exportedAt": "2026-12-01T00:00:00"})
    else:
        _write(folder, "remote-domains.json", ["Default"])
    with pytest.raises(GuardError) as error:
        _read(folder)
    assert error.value.exit_code == ExitCode.INPUT_FILE_ERROR
    assert "\n" not in error.value.message and str(folder) in error.value.message


def test_the_plan_gives_the_powershell_for_posture_findings(tmp_path: Path) -> None:
    from m365guard.enforce.planner import build_plan

    policies = [{"Name": "Default", "IsDefault": True, "AutoForwardingMode": "On", "Rules": []}]
    posture = _read(_export(tmp_path, policies=policies, domains=[
        {"Identity": "Default", "DomainName": "*", "AutoForwardEnabled": True}]))

    def no_graph(user: str, rule: str) -> Any:
        raise AssertionError("posture needs no Graph read")

    plan = build_plan(posture.findings, no_graph, author="Alice", tenant_id="t", now=NOW)
    commands = [command for action in plan.actions for command in action.commands]
    assert commands == [
        "Set-HostedOutboundSpamFilterPolicy -Identity 'Default' -AutoForwardingMode Off",
        "Set-RemoteDomain -Identity 'Default' -AutoForwardEnabled $false"]
    assert all(action.kind == "exchange_powershell" for action in plan.actions)


def test_the_night_reads_the_export_and_a_stale_one_is_a_gap(tmp_path: Path) -> None:
    from m365guard.enforce.exchange_export import posture_for_night

    policies = [{"Name": "Default", "IsDefault": True, "AutoForwardingMode": "On", "Rules": []}]
    fresh = _export(tmp_path / "fresh", policies=policies)
    found, coverage = posture_for_night(fresh, now=NOW, max_age_days=8, school_domains=SCHOOL)
    assert found["object_id"].tolist() == ["outbound_spam_policy/Default"]
    assert coverage[["folder", "status", "items"]].values.tolist() == [["exchangeExport", "ok", 1]]
    old = _export(tmp_path / "old", policies=policies, age=timedelta(days=30))
    found, coverage = posture_for_night(old, now=NOW, max_age_days=8, school_domains=SCHOOL)
    assert found.empty and coverage["status"].tolist() == ["failed"]
    assert coverage["reason"].iloc[0].startswith("stale: exported at 2026-11-02")
    none = posture_for_night(None, now=NOW, max_age_days=8, school_domains=SCHOOL)
    assert none[0].empty and none[1].empty

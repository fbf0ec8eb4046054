"""Import the Exchange export jobs/windows/export-exchange.ps1 writes: the forwarding posture.

Graph cannot read whether the tenant lets mail be forwarded outside automatically. The export
folder holds `export-info.json` (when it was made), `outbound-spam-policies.json` (each
policy's AutoForwardingMode and the rules saying whom it covers), `remote-domains.json`
(AutoForwardEnabled) and `transport-rules.json` (rules that redirect or copy mail outside).
Findings follow ScubaGear MS.EXO.1.1 and Prowler's
`defender_antispam_outbound_policy_forwarding_disabled`: a policy with AutoForwardingMode On
that is the default or covers someone through an enabled rule, a remote domain with
AutoForwardEnabled true, an enabled transport rule sending mail to an outside address.
An export older than the policy's limit is `stale`: its posture is unknown, never clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pandas as pd

from m365guard import tables
from m365guard.errors import ExitCode, GuardError
from m365guard.rules.base import make_findings

RULE_ID = "tenant-auto-forwarding"
CLAUSE = "AUP-INTENDED-RECIPIENTS"
FILES = ("export-info.json", "outbound-spam-policies.json", "remote-domains.json",
         "transport-rules.json")
REDIRECTING = ("RedirectMessageTo", "BlindCopyTo", "CopyTo", "AddToRecipients")
ExportStatus = Literal["ok", "stale"]


@dataclass
class Posture:
    """What one export says: when it was made, whether it is fresh, and its findings."""

    status: ExportStatus
    exported_at: datetime
    findings: pd.DataFrame = field(default_factory=lambda: tables.empty("findings"))


def _load(folder: Path, name: str) -> Any:
    path = folder / name
    try:
        return orjson.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except FileNotFoundError:
        raise GuardError(f"Exchange export {folder}: {name} is missing; run"
                         " jobs/windows/export-exchange.ps1 again", ExitCode.INPUT_FILE_ERROR
                         ) from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise GuardError(f"Exchange export {path}: not JSON ({str(exc)[:60]}); run the export"
                         " again", ExitCode.INPUT_FILE_ERROR) from None


def _items(value: Any, name: str, folder: Path) -> list[dict[str, Any]]:
    """ConvertTo-Json writes one object (not a list) when there is one item."""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise GuardError(f"Exchange export {folder}: {name} is not a list of objects; run the"
                         " export again", ExitCode.INPUT_FILE_ERROR)
    return items


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value]) if str(v)]


def _outside(addresses: list[str], school_domains: frozenset[str]) -> list[str]:
    return [a for a in addresses
            if "@" in a and a.rsplit("@", 1)[1].lower().strip() not in school_domains]


def read_export(folder: Path, *, now: datetime, max_age_days: int,
                school_domains: frozenset[str]) -> Posture:
    """The posture findings of an export folder; `stale` (no findings) when too old."""
    info = _load(folder, "export-info.json")
    try:
        exported_at = datetime.fromisoformat(str(info["exportedAt"]).replace("Z", "+00:00"))
        if exported_at.tzinfo is None:
            raise ValueError("no time zone")
    except (KeyError, TypeError, ValueError) as exc:
        raise GuardError(f"Exchange export {folder}: export-info.json needs exportedAt as ISO"
                         f" 8601 with a time zone ({exc})", ExitCode.INPUT_FILE_ERROR) from None
    if now - exported_at > timedelta(days=max_age_days):
        return Posture("stale", exported_at)
    policies = _items(_load(folder, "outbound-spam-policies.json"), "outbound-spam-policies.json",
                      folder)
    rows: list[dict[str, Any]] = []
    for policy in policies:
        name = str(policy.get("Name", ""))
        if str(policy.get("AutoForwardingMode", "")).lower() != "on":
            continue
        rules = [r for r in _items(policy.get("Rules") or [], "Rules", folder)
                 if str(r.get("State", "Enabled")).lower() == "enabled"]
        if not (policy.get("IsDefault") or rules):
            continue  # a custom policy no enabled rule applies to covers nobody
        covers = "everyone (the default policy)" if policy.get("IsDefault") else "; ".join(
            ", ".join(_list(r.get("From")) + _list(r.get("FromMemberOf"))
                      + _list(r.get("SenderDomainIs"))) or str(r.get("Name", ""))
            for r in rules)
        rows.append(_row("outbound_spam_policy", name, "high",
                         f"Outbound spam policy \"{name}\" allows automatic forwarding outside"
                         f" the school (AutoForwardingMode On) for {covers}."))
    for domain in _items(_load(folder, "remote-domains.json"), "remote-domains.json", folder):
        if domain.get("AutoForwardEnabled") is True:
            name = str(domain.get("Identity") or domain.get("Name") or "")
            rows.append(_row("remote_domain", name, "medium",
                             f"Remote domain \"{name}\" ({domain.get('DomainName', '')}) allows"
                             " automatic forwarding (AutoForwardEnabled true)."))
    for rule in _items(_load(folder, "transport-rules.json"), "transport-rules.json", folder):
        if str(rule.get("State", "Enabled")).lower() != "enabled":
            continue
        targets = _outside([a for key in REDIRECTING for a in _list(rule.get(key))],
                           school_domains)
        if targets:
            name = str(rule.get("Name", ""))
            rows.append(_row("transport_rule", name, "high",
                             f"Transport rule \"{name}\" sends mail to {', '.join(targets)},"
                             " outside the school.", ";".join(t.lower() for t in targets)))
    findings = make_findings(RULE_ID, CLAUSE, pd.DataFrame(rows)) if rows \
        else tables.empty("findings")
    return Posture("ok", exported_at, findings)


def _row(kind: str, name: str, severity: str, summary: str, counterparts: str = ""
         ) -> dict[str, Any]:
    return {"severity": severity, "occurred_at": pd.NaT, "actor": "", "actor_role": "tenant",
            "counterparts": counterparts, "object_type": kind, "object_id": f"{kind}/{name}",
            "summary": summary}


COVERAGE_FOLDER = "exchangeExport"  # the coverage row a night writes for the export


def posture_for_night(folder: Path | None, *, now: datetime, max_age_days: int,
                      school_domains: frozenset[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tonight's posture findings and the export's coverage row (none without an export).
    A stale export's row is `failed` (reason "stale: ..."), so the night is partial, never
    clean, and the posture findings it last gave are not resolved."""
    if folder is None:
        return tables.empty("findings"), tables.empty("coverage")
    posture = read_export(folder, now=now, max_age_days=max_age_days,
                          school_domains=school_domains)
    stamp = posture.exported_at.isoformat(timespec="seconds")
    if posture.status == "stale":
        status, reason = "failed", (f"stale: exported at {stamp}, older than {max_age_days}"
                                    " days; run jobs/windows/export-exchange.ps1")
    else:
        status, reason = "ok", f"exported at {stamp}"
    coverage = tables.make_table("coverage", [{"mailbox": "", "folder": COVERAGE_FOLDER,
                                               "status": status, "reason": reason,
                                               "items": len(posture.findings)}])
    return posture.findings, coverage


def with_posture(collected: tables.Collected, found: pd.DataFrame, posture: pd.DataFrame,
                 coverage: pd.DataFrame) -> pd.DataFrame:
    """Tonight's findings with the posture's, the export's coverage row added to the night's
    coverage (in place: the collected tables are large, and only coverage changes)."""
    if coverage.empty:
        return found
    collected.tables["coverage"] = tables.conform(
        "coverage", pd.concat([collected["coverage"], coverage], ignore_index=True))
    frames = [frame for frame in (found, posture) if not frame.empty]
    return tables.conform("findings", pd.concat(frames, ignore_index=True)) if frames else found

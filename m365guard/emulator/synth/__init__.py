"""Seeded synthetic schools: a tenant in the documented format plus its ground truth.

`generate("small", seed)` builds Manby Lodge Infant School with a month of realistic mail,
Teams chats, inbox rules and audit records, routine near misses at a school's weekly volume,
plants violations of every rule sub-case, and labels each one (docs/tenant-format.md, "Ground
truth"). `generate("quiet", seed)` is the same school keeping its policy: no violation
planted. The same seed always gives byte-identical JSON, so tests, the demo and benchmarks can
share schools by seed.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from m365guard.emulator.synth._base import (
    CLOCK_START,
    PARTNERS,
    PROFILES,
    SKUS,
    Builder,
    Json,
    iso,
)
from m365guard.emulator.synth._directory import build_directory
from m365guard.emulator.synth._plants import build_plants
from m365guard.emulator.synth._routine import build_routine
from m365guard.emulator.synth._traffic import build_traffic
from m365guard.errors import ExitCode, GuardError

__all__ = ["SIZES", "SyntheticSchool", "forwarding_export_csv", "generate"]

SIZES = tuple(PROFILES)
STAFF_GROUPS = ("All Staff", "Teaching Staff", "Support Staff")
GOVERNOR_GROUPS = ("Governors",)


@dataclass
class SyntheticSchool:
    """A generated tenant, its labels, and the roster and export files a school would keep."""

    size: str
    seed: int
    tenant: Json
    truth: list[Json]
    parent_roster: list[tuple[str, str, str]] = field(default_factory=list)  # email, name, upns
    staff_roster: list[tuple[str, str]] = field(default_factory=list)  # upn, personal email
    export_only: list[tuple[str, str]] = field(default_factory=list)  # upn, forwarding address

    def parent_roster_csv(self) -> str:
        """The school's parent contact list: email,name,pupil_upns (UPNs joined with ";")."""
        return _csv(("email", "name", "pupil_upns"), self.parent_roster)

    def staff_roster_csv(self) -> str:
        """Staff personal addresses the school knows: upn,personal_email."""
        return _csv(("upn", "personal_email"), self.staff_roster)

    def write(self, directory: Path) -> Path:
        """Write tenant.json (tenant.json.gz for the large school), truth.json, parents.csv,
        staff-personal.csv and exchange-forwarding.csv; returns the tenant file's path."""
        directory.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(self.tenant)
        if self.size == "large":
            tenant_path = directory / "tenant.json.gz"
            tenant_path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
        else:
            tenant_path = directory / "tenant.json"
            tenant_path.write_bytes(data)
        (directory / "truth.json").write_bytes(orjson.dumps(self.truth, option=orjson.OPT_INDENT_2))
        self.write_inputs(directory)
        return tenant_path

    def write_inputs(self, directory: Path) -> None:
        """The files a school keeps beside its policy: parents.csv, staff-personal.csv and
        exchange-forwarding.csv, the export dated (file time) when the school's clock starts."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "parents.csv").write_text(self.parent_roster_csv(), encoding="utf-8")
        (directory / "staff-personal.csv").write_text(self.staff_roster_csv(), encoding="utf-8")
        export = directory / "exchange-forwarding.csv"
        export.write_text(forwarding_export_csv(self), encoding="utf-8")
        taken = datetime.fromisoformat(self.tenant["clock"]["start"]).timestamp()
        os.utime(export, (taken, taken))

    def policy_toml(self, *, inputs: str = ".",
                    collect: Mapping[str, str | int | float | bool] | None = None) -> str:
        """A policies.toml for this school from its x-policyHints, reading the rosters and the
        Exchange export that `write` puts in `inputs` (relative to the policy file); `collect`
        adds keys to [collect]. Callers append [tenant], [state], [output] or [rules.*]."""
        hints = self.tenant["x-policyHints"]
        pupil = hints["pupilDomains"]
        collect_keys = {"exchange_forwarding_export": f"{inputs}/exchange-forwarding.csv",
                        **(collect or {})}

        def toml(value: object) -> str:
            return orjson.dumps(value).decode()

        return "\n".join([
            "[school]",
            f"name = {toml(self.tenant['tenant']['displayName'])}",
            f"domains = {toml([d for d in hints['schoolDomains'] if d not in pupil])}",
            f"pupil_domains = {toml(pupil)}",
            "", "[people]",
            f"pupil_groups = {toml(hints['pupilGroups'])}",
            f"staff_groups = {toml(hints['staffGroups'])}",
            f"governor_groups = {toml(hints['governorGroups'])}",
            f"staff_roster = {toml(f'{inputs}/staff-personal.csv')}",
            f"parent_roster = {toml(f'{inputs}/parents.csv')}",
            "", "[addresses]",
            f"partner_domains = {toml(hints['partnerDomains'])}",
            "", "[allow]",
            f"mailboxes = {toml(hints['sharedMailboxes'])}",
            "", "[collect]",
            *(f"{key} = {toml(value)}" for key, value in collect_keys.items()),
            "",
        ])


def _csv(header: tuple[str, ...], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def generate(size: str, seed: int, *, history_days: int = 30,
             future_days: int = 0) -> SyntheticSchool:
    """Build a school of `size` (small | quiet | medium | large) from `seed`. clock.start is the
    end of the history; mail continues `future_days` past it so later nights see new mail."""
    if size not in PROFILES:
        raise GuardError(f"school size {size!r} is not one of {', '.join(SIZES)}", ExitCode.USAGE)
    if history_days < 1 or future_days < 0:
        raise GuardError("history days must be at least 1 and future days at least 0",
                         ExitCode.USAGE)
    builder = Builder(PROFILES[size], random.Random(seed), history_days, future_days)
    build_directory(builder)
    build_traffic(builder)
    build_routine(builder)
    labels = builder.labels if builder.profile.keeps_policy else build_plants(builder)
    return SyntheticSchool(
        size=size, seed=seed, tenant=_tenant(builder), truth=labels,
        parent_roster=[(p.address, p.name, ";".join(p.pupil_upns))
                       for p in builder.parents if p.rostered],
        staff_roster=list(builder.staff_roster), export_only=list(builder.export_only),
    )


def _tenant(b: Builder) -> Json:
    p = b.profile
    onmicrosoft = p.domain.split(".")[0] + ".onmicrosoft.com"
    skus = [{
        "accountId": b.tenant_id, "appliesTo": "User", "capabilityStatus": "Enabled",
        "consumedUnits": b.sku_counts.get(part, 0), "id": f"{b.tenant_id}_{sku_id}",
        "skuId": sku_id, "skuPartNumber": part,
        "prepaidUnits": {"enabled": 1_000_000 if "STU" in part else 500, "suspended": 0,
                         "warning": 0, "lockedOut": 0},
        "servicePlans": [],
    } for part, sku_id in SKUS.items()]
    year_groups = [g["displayName"] for g in b.groups if g["displayName"].endswith(" Pupils")]
    return {
        "formatVersion": 1,
        "tenant": {"id": b.tenant_id, "displayName": p.name,
                   "verifiedDomains": [p.domain, p.pupil_domain, onmicrosoft]},
        "clock": {"start": iso(CLOCK_START)},
        "x-policyHints": {
            "schoolDomains": [p.domain, p.pupil_domain, onmicrosoft],
            "pupilDomains": [p.pupil_domain],
            "partnerDomains": [d for d in PARTNERS if d != p.domain],
            "staffGroups": list(STAFF_GROUPS), "pupilGroups": year_groups,
            "governorGroups": list(GOVERNOR_GROUPS), "sharedMailboxes": [f"office@{p.domain}"],
        },
        "subscribedSkus": skus,
        "users": b.users,
        "groups": b.groups,
        "educationUsers": b.education_users,
        "mailboxes": b.mailboxes,
        "chats": b.chats,
        "auditRecords": sorted(b.audit, key=lambda r: (r["createdDateTime"], r["id"])),
    }


def forwarding_export_csv(school: SyntheticSchool) -> str:
    """`Get-EXOMailbox -ResultSize Unlimited -Properties ForwardingSmtpAddress,ForwardingAddress,
    DeliverToMailboxAndForward | Export-Csv` as taken at clock.start: the audit log's latest
    forwarding per mailbox, plus forwarding that only the export shows."""
    tenant = school.tenant
    start = tenant["clock"]["start"]
    state: dict[str, tuple[str, str, str]] = {}  # upn -> (smtp, address, deliver)
    for record in tenant["auditRecords"]:
        if record["operation"] != "Set-Mailbox" or record["createdDateTime"] > start:
            continue
        params = {p["Name"]: p["Value"] for p in record["auditData"].get("Parameters", [])}
        if "ForwardingSmtpAddress" in params or "ForwardingAddress" in params:
            state[params.get("Identity", record["objectId"])] = (
                params.get("ForwardingSmtpAddress", ""), params.get("ForwardingAddress", ""),
                params.get("DeliverToMailboxAndForward", "False"))
    for upn, address in school.export_only:
        state[upn] = (f"smtp:{address}", "", "True")
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(("UserPrincipalName", "PrimarySmtpAddress", "ForwardingSmtpAddress",
                     "ForwardingAddress", "DeliverToMailboxAndForward"))
    for user in tenant["users"]:
        if user.get("x-hasMailbox", True):
            smtp, address, deliver = state.get(user["userPrincipalName"], ("", "", "False"))
            writer.writerow((user["userPrincipalName"], user["mail"], smtp, address, deliver))
    return out.getvalue()

"""The demo: the real nightly, weekly and audit jobs against an in-process emulated school.

It starts the emulator with the small synthetic school (Manby Lodge Infant School), points the
school's own policies.toml at it (tenant, state, output and rosters overridden, nothing else),
then runs nightly over simulated nights while the emulator's clock moves a day at a time: new
mail, rules and chats appear, and some violations are fixed. Then the weekly summary and the
audit pack. Everything lands under one folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from m365guard.clauses import clause_texts
from m365guard.cli.reading import audit_inputs
from m365guard.cli.weekly_input import read_weekly_input
from m365guard.config import Policy
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import EmulatorSettings, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.synth import SyntheticSchool, generate
from m365guard.graph.settings import ConnectionSettings, TenantSection, resolve_connection
from m365guard.pipeline import NightlyOutcome, run_nightly
from m365guard.reports.audit import build_audit_pack, clause_coverage
from m365guard.reports.weekly_files import write_weekly_reports
from m365guard.reports.weeks import IsoWeek, school_zone
from m365guard.rules import RULES, rule_titles
from m365guard.state import StateDB

NIGHTLY_HOUR = 2  # the jobs/ schedule: 02:00

# Graph allows 30 Teams GETs a second (the collector paces at 25): a night of the emulated
# school's ~300 chat lists would wait 12 s, 28 nights 6 minutes; the demo is not about
# that limit, so it raises the emulator's and the pace together (test_graph_teams.py keeps it)
DEMO_TEAMS_RATE = 10_000.0


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote things, and how each night ended."""

    out_dir: Path
    nights: list[NightlyOutcome]
    weekly_html: Path
    audit_zip: Path


def connection_for(settings: EmulatorSettings) -> ConnectionSettings:
    """Certificate auth (the recommended way) against the emulator, trusting its CA only."""
    section = TenantSection(
        tenant_id=settings.tenant_id,
        client_id=settings.client_id,
        certificate_path=Path(settings.certificate_path),
        authority_host=settings.authority_host,
        graph_endpoint=settings.graph_endpoint,
        ca_bundle=Path(settings.ca_bundle),
    )
    return resolve_connection(section, {})


def policy_for_demo(policy: Policy, school: SyntheticSchool, out_dir: Path) -> Policy:
    """The school's policy with state, output, rosters and Exchange export in the demo folder."""
    inputs = out_dir / "inputs"
    school.write_inputs(inputs)
    return policy.model_copy(update={
        "collect": policy.collect.model_copy(
            # the emulator's audit query is done by its third poll: no need to wait between
            update={"exchange_forwarding_export": inputs / "exchange-forwarding.csv",
                    "audit_poll_seconds": 0.0,
                    "teams_requests_per_second": DEMO_TEAMS_RATE}),
        "people": policy.people.model_copy(update={
            "parent_roster": inputs / "parents.csv",
            "staff_roster": inputs / "staff-personal.csv"}),
        "state": policy.state.model_copy(update={"path": out_dir / "state" / "m365guard.db"}),
        "output": policy.output.model_copy(update={"dir": out_dir / "nightly"}),
    })


def run_demo(
    policy: Policy,
    out_dir: Path,
    *,
    nights: int = 28,
    seed: int = 1,
    school_size: str = "small",
    on_night: Callable[[int, NightlyOutcome], None] | None = None,
) -> DemoResult:
    """Generate the school (small: violations planted; quiet: the same school keeping its
    policy), serve it, run `nights` nightly jobs, then weekly and audit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    school = generate(school_size, seed, history_days=30, future_days=nights)
    tenant = Tenant.from_document(school.tenant)
    policy = policy_for_demo(policy, school, out_dir)
    first_night = tenant.now.replace(hour=NIGHTLY_HOUR, minute=0, second=0, microsecond=0)
    outcomes: list[NightlyOutcome] = []
    faults = FaultConfig(teams_requests_per_second=DEMO_TEAMS_RATE)
    with start_in_thread(tenant, workdir=out_dir / "emulator", faults=faults) as emulator:
        conn = connection_for(emulator.settings)
        for night in range(nights):
            now = first_night + timedelta(days=night)
            tenant.advance_to(now)
            outcome = run_nightly(policy, conn, policy.output.dir, now=now)
            outcomes.append(outcome)
            if on_night is not None:
                on_night(night + 1, outcome)
    end: datetime = first_night + timedelta(days=nights - 1)
    db = StateDB.open(policy.state.path)
    try:
        zone = school_zone(policy.school.time_zone)
        # read the morning after the last night, as the headteacher would
        morning = end.replace(hour=7) + timedelta(days=1)
        data = read_weekly_input(db, IsoWeek.last_complete(morning, zone), morning,
                                 school_name=policy.school.name, rule_titles=rule_titles())
        weekly = write_weekly_reports(out_dir / "weekly", data)
        period = first_night.date(), end.date()
        pack = build_audit_pack(
            audit_inputs(db, *period), *period, out_dir / "audit", clause_texts(),
            clause_coverage(RULES), end, school_name=policy.school.name)
    finally:
        db.close()
    return DemoResult(out_dir=out_dir, nights=outcomes, weekly_html=weekly.html,
                      audit_zip=pack.zip_path)

"""A synthetic school served by the emulator, with [notify] pointing at its outbox (helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from m365guard.config import NotifySection, Policy, load_policy
from m365guard.demo import DEMO_TEAMS_RATE, NIGHTLY_HOUR, connection_for, policy_for_demo
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.sendmail import Outbox, outbox
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.synth import generate
from m365guard.graph.settings import ConnectionSettings
from m365guard.pipeline import NightlyOutcome, run_nightly

REPO = Path(__file__).resolve().parents[2]
SENDER = "office@manbylodge.sch.uk"
ADDRESSES = {"headteacher": "head@manbylodge.sch.uk", "dsl": "dsl@manbylodge.sch.uk",
             "dpo": "dpo@manbylodge.sch.uk", "it": "it@manbylodge.sch.uk"}


@dataclass
class School:
    tenant: Tenant
    emulator: RunningEmulator
    conn: ConnectionSettings
    policy: Policy
    first_night: datetime

    @property
    def outbox(self) -> Outbox:
        return outbox(self.tenant)

    def night(self, number: int) -> NightlyOutcome:
        now = self.first_night + timedelta(days=number)
        self.tenant.advance_to(now)
        return run_nightly(self.policy, self.conn, self.policy.output.dir, now=now)


def school_for(tmp_path: Path, *, scoped: bool) -> Iterator[School]:
    synthetic = generate("small", 1, history_days=30, future_days=3)
    tenant = Tenant.from_document(synthetic.tenant)
    base = policy_for_demo(load_policy(REPO / "policies.toml"), synthetic, tmp_path / "out")
    # the demo's policy paces Teams requests at DEMO_TEAMS_RATE: the emulator allows as many
    # (these tests are about alerts, not Graph's 30 requests/s limit: tests/graph is)
    faults = FaultConfig(teams_requests_per_second=DEMO_TEAMS_RATE)
    with start_in_thread(tenant, workdir=tmp_path / "emulator", faults=faults) as emulator:
        hook = tmp_path / "teams-webhook-url.txt"
        hook.write_text(f"{emulator.settings.graph_endpoint}/webhooks/teams\n", encoding="utf-8")
        policy = base.model_copy(update={"notify": NotifySection(
            sender=SENDER, teams_webhook_file=hook,
            **{role: [address] for role, address in ADDRESSES.items()})})
        if scoped:  # New-ManagementRoleAssignment -Role "Application Mail.Send" -> SENDER only
            outbox(tenant).grant(emulator.settings.client_id, SENDER)
        first = tenant.now.replace(hour=NIGHTLY_HOUR, minute=0, second=0, microsecond=0)
        yield School(tenant, emulator, connection_for(emulator.settings), policy, first)

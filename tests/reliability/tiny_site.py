"""The tiny tenant (tests/data/tiny-tenant.json) served by its own emulator, and its site.

Tests move its clock night by night (`School.night(now)`), make one mailbox fail (outside the
app's Exchange scope: 403 ErrorAccessDenied), and plant a BCC exposure in Jane Smith's sent items.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from site_support import DATA

from m365guard.config import load_policy
from m365guard.demo import connection_for
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.graph.settings import ConnectionSettings
from m365guard.pipeline import NightlyOutcome, ProgressSink, run_nightly

TEACHER = "a1000000-0000-4000-8000-000000000002"  # jsmith@manbylodge.sch.uk
PLANTED = "<planted-bcc@manbylodge.sch.uk>"
POLICY = """\
[school]
name = "Manby Lodge"
domains = ["manbylodge.sch.uk"]
[people]
staff_groups = ["All Staff"]
[collect]
include_audit_log = false
[state]
path = "state/m365guard.db"
[output]
dir = "out"
"""


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def planted_message(sent_at: datetime) -> dict[str, Any]:
    """Jane Smith to three parents on webmail, all in To: visible once `sent_at` has passed."""
    def parent(n: int) -> dict[str, Any]:
        return {"emailAddress": {"name": f"Parent {n}", "address": f"parent.{n}@gmail.com"}}

    return {
        "id": "AAMkPLANTED0001=", "internetMessageId": PLANTED, "conversationId": "AAQkPLANTED",
        "subject": "Class trip", "createdDateTime": stamp(sent_at),
        "lastModifiedDateTime": stamp(sent_at), "sentDateTime": stamp(sent_at),
        "receivedDateTime": stamp(sent_at), "hasAttachments": False, "isRead": True,
        "isDraft": False,
        "from": {"emailAddress": {"name": "Jane Smith", "address": "jsmith@manbylodge.sch.uk"}},
        "toRecipients": [parent(1), parent(2), parent(3)], "ccRecipients": [],
        "bccRecipients": [], "replyTo": [],
    }


@dataclass
class School:
    """The tiny tenant served over HTTPS, and its installation under `root`."""

    tenant: Tenant
    emulator: RunningEmulator
    root: Path
    start: datetime

    @property
    def db(self) -> Path:
        return self.root / "state" / "m365guard.db"

    @property
    def policy_file(self) -> Path:
        return self.root / "policies.toml"

    def set_policy(self, extra_state: str) -> None:
        """POLICY with lines added to its [state] table."""
        self.policy_file.write_text(POLICY.replace("[state]\n", f"[state]\n{extra_state}\n"),
                                    encoding="utf-8")

    @property
    def conn(self) -> ConnectionSettings:
        return connection_for(self.emulator.settings)

    def night(self, now: datetime, *, failing: str | None = None,
              progress: ProgressSink | None = None,
              conn: ConnectionSettings | None = None) -> NightlyOutcome:
        """One nightly run at `now`; `failing`: a user id whose mailbox answers 403."""
        if now > self.tenant.now:
            self.tenant.advance_to(now)
        scope = None
        if failing is not None:
            scope = frozenset(u["id"] for u in self.tenant.users if u["id"] != failing)
        self.emulator.set_faults(FaultConfig(retry_after_s=(0.01,), mailbox_scope=scope))
        try:
            return run_nightly(load_policy(self.policy_file), conn or self.conn,
                               self.root / "out", now=now, progress=progress)
        finally:
            self.emulator.set_faults(FaultConfig(retry_after_s=(0.01,)))


def serve(doc: dict[str, Any], root: Path, workdir: Path) -> Iterator[School]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies.toml").write_text(POLICY, encoding="utf-8")
    tenant = Tenant.from_document(doc)
    with start_in_thread(tenant, workdir=workdir) as running:
        yield School(tenant, running, root, tenant.now)


def tiny_document() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((DATA / "tiny-tenant.json").read_bytes())
    return doc


@pytest.fixture
def tiny() -> dict[str, Any]:
    return tiny_document()


def with_planted(doc: dict[str, Any], sent_at: datetime) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["mailboxes"][TEACHER]["sentitems"].append(planted_message(sent_at))
    return doc


def found(outcome: NightlyOutcome, object_id: str = PLANTED) -> bool:
    """Whether the night reported a new finding about the object (the planted message)."""
    return bool((outcome.update.new["object_id"] == object_id).any())

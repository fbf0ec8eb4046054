"""What is checked before Graph is contacted: local inputs, the state file, the clock.

Why: a staff roster with a wrong header, an unusable output folder or a damaged state found
after a full collection costs the night (and once was recorded as "killed or crashed"); found
first, it is one line, its exit code, and nothing half-written. `nightly`, `policy check` and
`doctor` run the same checks (`check_local`); the nightly then checks the state it holds open
(`check_state`): sound, writable, the same tenant's, and a clock that agrees with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from m365guard import state_file
from m365guard.config import Policy
from m365guard.directory import check_roster
from m365guard.enforce.exchange_export import posture_for_night
from m365guard.errors import ExitCode, GuardError
from m365guard.exports import ForwardingExport, load_forwarding_export
from m365guard.records import RunRecord
from m365guard.state import StateDB
from m365guard.windows import check_clock
from m365guard.writable import usable_folder

TENANT_FACT = "tenant_id"


@dataclass(frozen=True)
class LocalInputs:
    """The local files a night reads, read before Graph is contacted."""

    export: ForwardingExport | None
    posture: tuple[pd.DataFrame, pd.DataFrame]  # enforce.exchange_export.posture_for_night


def local_inputs(policy: Policy, now: datetime) -> LocalInputs:
    """Rosters (file and header), the Exchange forwarding export, the enforcement export."""
    people = policy.people
    for path, kind in ((people.staff_roster, "staff"), (people.parent_roster, "parent")):
        if path is not None:
            check_roster(path, kind)
    enforce = policy.enforce
    return LocalInputs(
        export=load_forwarding_export(policy.collect.exchange_forwarding_export),
        posture=posture_for_night(enforce.exchange_export, now=now,
                                  school_domains=policy.school.all_domains,
                                  max_age_days=enforce.exchange_export_max_age_days))


def check_folder(folder: Path, setting: str) -> None:
    """A folder a run will write to: usable if it exists, else one that can be made (nothing
    is created: `policy check` and `doctor` only look)."""
    if folder.exists() or folder.is_symlink():
        usable_folder(folder, setting)
        return
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise GuardError(f"{setting} {folder} does not exist and cannot be made: {parent} is not"
                         " a folder this account can write to; create it or choose another",
                         ExitCode.CONFIG_ERROR)


def check_tenant(db: StateDB, tenant_id: str | None) -> None:
    """A state file belongs to the tenant of its first night: never mix two tenants' findings."""
    recorded = db.fact(TENANT_FACT)
    if recorded is not None and tenant_id and recorded.lower() != tenant_id.lower():
        raise GuardError(
            f"the state file {db.path} belongs to tenant {recorded}, but this run is for tenant"
            f" {tenant_id} ([tenant] tenant_id / M365GUARD_TENANT_ID): point [state] path at"
            f" that tenant's own state file, or set tenant_id back to {recorded}",
            ExitCode.STATE_REFUSED)


def configured_tenant(policy: Policy, env: Mapping[str, str]) -> str | None:
    """The tenant id a run would use (M365GUARD_TENANT_ID wins, as in graph/settings.py)."""
    return env.get("M365GUARD_TENANT_ID", "").strip() or policy.tenant.tenant_id


def check_local(policy: Policy, out_dir: Path, tenant_id: str | None, now: datetime) -> None:
    """Everything local a night needs, without writing anything (`policy check`, `doctor`)."""
    local_inputs(policy, now)
    check_folder(out_dir, "[output] dir")
    path = policy.state.path
    check_folder(path.parent, "the folder of [state] path")
    if not path.exists():
        state_file.check_missing(path)
        return
    with StateDB.open(path, wait_seconds=policy.state.lock_wait_seconds) as db:
        db.check_integrity()
        check_tenant(db, tenant_id)


def check_state(db: StateDB, policy: Policy, tenant_id: str, now: datetime) -> RunRecord | None:
    """The nightly's checks of the state it holds: sound, writable (another program's lock
    is met here), this tenant's, and a clock that agrees with it. Returns the last run that
    stored results (its window end starts tonight's window)."""
    db.check_integrity()
    db.check_writable()
    check_tenant(db, tenant_id)
    last = db.last_successful_run(include_partial=True)
    check_clock(last.window_end if last else None, now, policy.state.max_gap_days)
    return last

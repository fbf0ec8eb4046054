"""The enforce commands' work, behind the thin Typer layer in cli/enforce.py.

Each function loads the policy, refuses when enforcement is off, and returns the lines to
print with the exit code; user mistakes raise GuardError (one line, a documented code).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from m365guard.config import Policy, load_policy
from m365guard.enforce import journal
from m365guard.enforce.apply import apply_plan, check_approval
from m365guard.enforce.notice import send_notices
from m365guard.enforce.plan import printable, read_plan, summary_text
from m365guard.enforce.planner import build_plan, select_findings
from m365guard.enforce.settings import require_enabled, write_connection
from m365guard.enforce.undo import undo_action
from m365guard.errors import ExitCode, GuardError
from m365guard.files import ensure_private_dir, write_bytes_atomic, write_text_atomic
from m365guard.graph.client import GraphSession, open_session
from m365guard.graph.rule_write import WRITE_PERMISSION, RuleClient
from m365guard.graph.sendmail import OutgoingMail, send_mail
from m365guard.graph.settings import resolve_connection
from m365guard.logs import setup_logging
from m365guard.state import StateDB

Result = tuple[list[str], ExitCode]


def _now() -> datetime:
    return datetime.now(UTC)


def _policy(config: Path, verbose: bool) -> Policy:
    policy = load_policy(config)
    require_enabled(policy)
    if policy.enforce.staff_notice and policy.notify.sender is None:
        raise GuardError("[enforce] staff_notice needs [notify] sender, the school mailbox the"
                         " notice comes from", ExitCode.CONFIG_ERROR)
    setup_logging(policy.output.dir / "m365guard.log", verbose=verbose)
    return policy


def _require_write(session: GraphSession) -> None:
    if WRITE_PERMISSION not in session.granted_roles:
        raise GuardError(f"the write app has no {WRITE_PERMISSION}: grant it to the [enforce]"
                         " app registration (README: Enforcement)", ExitCode.PERMISSION_MISSING)


def plan(config: Path, *, by: str, finding: Sequence[str], rule: str | None, out: Path | None,
         verbose: bool) -> Result:
    """Write a plan and its summary; record it in the journal."""
    policy = _policy(config, verbose)
    if finding and rule:
        raise GuardError("give --finding or --rule, not both", ExitCode.USAGE)
    with StateDB.open(policy.state.path) as db:
        selected = select_findings(db.findings(status="open"), finding, rule)
    if selected.empty:
        return ["no open findings to act on; no plan written"], ExitCode.CLEAN
    conn = resolve_connection(policy.tenant, os.environ)
    with open_session(conn) as session:
        made = build_plan(selected, RuleClient(session).read, author=by,
                          tenant_id=conn.tenant_id, now=_now())
    folder = ensure_private_dir(out or policy.enforce.plans_dir)
    path = write_bytes_atomic(folder / f"plan-{made.plan_id}.json", made.as_json())
    text = summary_text(made)
    write_text_atomic(folder / f"plan-{made.plan_id}.txt", text)
    store = journal.connect(policy.state.path)
    try:
        journal.record_plan(store, made)
    finally:
        store.close()
    return [text, f"plan written to {path}"], ExitCode.CLEAN


def apply(config: Path, plan_file: Path, *, approved_by: str | None, yes: bool,
          verbose: bool) -> Result:
    """Carry out (or dry-run) an approved plan under the run lock."""
    policy = _policy(config, verbose)
    made = read_plan(plan_file)
    approver = check_approval(made, approved_by)
    with StateDB.open(policy.state.path) as db, db.lock():
        store = journal.connect(policy.state.path)
        try:
            held: dict[str, str] = {}
            if yes and policy.enforce.staff_notice:  # the notice goes before the change
                journal.recorded_plan(store, made)
                with open_session(resolve_connection(policy.tenant, os.environ)) as mailer:
                    def send(mail: OutgoingMail) -> None:
                        send_mail(mailer, mail)

                    held = send_notices(store, policy, made, send, by=approver, now=_now())
            with open_session(write_connection(policy, os.environ)) as session:
                if yes and any(a.kind == "disable_inbox_rule" for a in made.actions):
                    _require_write(session)
                outcomes = apply_plan(store, made, RuleClient(session), approved_by=approver,
                                      yes=yes, clock=_now, held=held)
        finally:
            store.close()
    lines = [printable(outcome.line) for outcome in outcomes]
    if not yes:
        lines.append("dry run: nothing was changed; add --yes to carry out the plan")
    complete = all(outcome.complete for outcome in outcomes)
    return lines, ExitCode.CLEAN if complete else ExitCode.ENFORCE_INCOMPLETE


def undo(config: Path, action_id: str, *, by: str, yes: bool, verbose: bool) -> Result:
    """Undo one action (or say what undo would do)."""
    policy = _policy(config, verbose)
    with StateDB.open(policy.state.path) as db, db.lock():
        store = journal.connect(policy.state.path)
        try:
            with open_session(write_connection(policy, os.environ)) as session:
                if yes:
                    _require_write(session)
                line = undo_action(store, action_id, RuleClient(session), by=by, yes=yes,
                                   clock=_now)
        finally:
            store.close()
    lines = [printable(line)]
    if not yes:
        lines.append("dry run: nothing was changed; add --yes to undo")
    return lines, ExitCode.CLEAN


def show_journal(config: Path) -> Result:
    """Every journalled action, one line each."""
    policy = load_policy(config)
    store = journal.connect(policy.state.path)
    try:
        rows = journal.actions(store)
    finally:
        store.close()
    lines = [printable(f"{row.action_id}  {row.status:<12} {row.kind:<20} {row.object_id}"
                       f"  planned by {row.planned_by}, approved by {row.approved_by},"
                       f" {row.updated_at}  {row.detail}") for row in rows]
    return lines or ["no enforcement actions yet"], ExitCode.CLEAN

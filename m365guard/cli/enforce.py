"""`m365guard enforce plan | apply | undo | journal`: fix open findings, with a second approver.

Exit codes: 0 done (or a dry run), 16 refused (enforcement off, not approved by someone other
than the plan's author, or a rule changed after the action), 17 some actions skipped or
failed (each line says which and why), 15 the write app lacks MailboxSettings.ReadWrite.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from m365guard.config import Policy, load_policy
from m365guard.enforce import journal
from m365guard.enforce.apply import apply_plan, check_approval
from m365guard.enforce.plan import printable, read_plan, summary_text
from m365guard.enforce.planner import build_plan, select_findings
from m365guard.enforce.settings import require_enabled, write_connection
from m365guard.enforce.undo import undo_action
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.client import open_session
from m365guard.graph.rule_write import WRITE_PERMISSION, RuleClient
from m365guard.graph.settings import resolve_connection
from m365guard.logs import setup_logging
from m365guard.reports.csvfile import ensure_private_dir, write_bytes_atomic, write_text_atomic
from m365guard.state import StateDB

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The policies.toml to use.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Carry it out (without: a dry run).")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log steps to stderr.")]


def _now() -> datetime:
    return datetime.now(UTC)


def _policy(config: Path, verbose: bool) -> Policy:
    policy = load_policy(config)
    require_enabled(policy)
    setup_logging(policy.output.dir / "m365guard.log", verbose=verbose)
    return policy


def _writer(session_roles: frozenset[str]) -> None:
    if WRITE_PERMISSION not in session_roles:
        raise GuardError(f"the write app has no {WRITE_PERMISSION}: grant it to the [enforce]"
                         " app registration (README: Enforcement)", ExitCode.PERMISSION_MISSING)


def register(app: typer.Typer) -> None:
    """Add the `enforce` command group."""
    enforce = typer.Typer(help="Plan, approve, apply and undo fixes for open findings.",
                          no_args_is_help=True)
    app.add_typer(enforce, name="enforce")

    @enforce.command("plan")
    def plan(
        by: Annotated[str, typer.Option("--by", help="Who makes the plan.")] = "",
        finding: Annotated[list[str] | None, typer.Option(
            "--finding", help="A finding id (repeat for more); default: every open one.")] = None,
        rule: Annotated[str | None, typer.Option("--rule", help="Only this rule's findings.")
                        ] = None,
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Folder for the plan (default: [enforce] plans_dir).")] = None,
        config: ConfigOption = Path("policies.toml"),
        verbose: VerboseOption = False,
    ) -> None:
        """Write a plan (JSON + summary) with each object's state read fresh through Graph."""
        policy = _policy(config, verbose)
        if finding and rule:
            raise GuardError("give --finding or --rule, not both", ExitCode.USAGE)
        with StateDB.open(policy.state.path) as db:
            selected = select_findings(db.findings(status="open"), finding or (), rule)
        if selected.empty:
            typer.echo("no open findings to act on; no plan written")
            return
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
        typer.echo(text + f"\nplan written to {path}")

    @enforce.command("apply")
    def apply(
        plan_file: Annotated[Path, typer.Argument(help="The plan JSON `enforce plan` wrote.")],
        approved_by: Annotated[str | None, typer.Option(
            "--approved-by", help="Who approved the plan (not its author).")] = None,
        yes: YesOption = False,
        config: ConfigOption = Path("policies.toml"),
        verbose: VerboseOption = False,
    ) -> None:
        """Carry out an approved plan; each action only if its object is still as planned."""
        policy = _policy(config, verbose)
        made = read_plan(plan_file)
        approver = check_approval(made, approved_by)
        db = StateDB.open(policy.state.path)
        try:
            with db.lock():
                store = journal.connect(policy.state.path)
                try:
                    with open_session(write_connection(policy, os.environ)) as session:
                        if yes and any(a.kind == "disable_inbox_rule" for a in made.actions):
                            _writer(session.granted_roles)
                        outcomes = apply_plan(store, made, RuleClient(session),
                                              approved_by=approver, yes=yes, clock=_now)
                finally:
                    store.close()
        finally:
            db.close()
        for outcome in outcomes:
            typer.echo(outcome.line)
        if not yes:
            typer.echo("dry run: nothing was changed; add --yes to carry out the plan")
        if not all(outcome.complete for outcome in outcomes):
            raise typer.Exit(int(ExitCode.ENFORCE_INCOMPLETE))

    @enforce.command("undo")
    def undo(
        action_id: Annotated[str, typer.Argument(help="The action id (see `enforce journal`).")],
        by: Annotated[str, typer.Option("--by", help="Who undoes it.")] = "",
        yes: YesOption = False,
        config: ConfigOption = Path("policies.toml"),
        verbose: VerboseOption = False,
    ) -> None:
        """Put the rule back exactly as the journal recorded it before the action."""
        policy = _policy(config, verbose)
        db = StateDB.open(policy.state.path)
        try:
            with db.lock():
                store = journal.connect(policy.state.path)
                try:
                    with open_session(write_connection(policy, os.environ)) as session:
                        if yes:
                            _writer(session.granted_roles)
                        line = undo_action(store, action_id, RuleClient(session), by=by,
                                           yes=yes, clock=_now)
                finally:
                    store.close()
        finally:
            db.close()
        typer.echo(line)
        if not yes:
            typer.echo("dry run: nothing was changed; add --yes to undo")

    @enforce.command("journal")
    def show_journal(config: ConfigOption = Path("policies.toml")) -> None:
        """Every journalled action: id, status, object, who planned and approved it."""
        policy = load_policy(config)
        store = journal.connect(policy.state.path)
        try:
            rows = journal.actions(store)
        finally:
            store.close()
        for row in rows:
            typer.echo(printable(f"{row.action_id}  {row.status:<12} {row.kind:<20}"
                                 f" {row.object_id}  planned by {row.planned_by}, approved by"
                                 f" {row.approved_by}, {row.updated_at}  {row.detail}"))
        if not rows:
            typer.echo("no enforcement actions yet")

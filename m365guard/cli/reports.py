"""`m365guard weekly`, `audit`, `findings list` and `findings ack`: reports read from state.

These commands only read the state the nightly run wrote (ack adds one status change), so they
never need Graph or credentials and can run while a nightly run holds the lock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from m365guard.errors import ExitCode, GuardError

if TYPE_CHECKING:  # pandas, the state and the reports load when a command runs, not for --help
    from m365guard.config import Policy
    from m365guard.records import FindingStatus
    from m365guard.state import StateDB

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The policies.toml to use.")
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Folder for the reports (default: [output] dir in policies.toml)."),
]
DEFAULT_CONFIG = Path("policies.toml")


def _open_state(policy: Policy) -> StateDB:
    """The existing state file; a missing one means no night has run yet."""
    from m365guard.state import StateDB

    if not policy.state.path.exists():
        raise GuardError(
            f"no state file at {policy.state.path} yet; run `m365guard nightly` first"
            " (or check [state] path)", ExitCode.CONFIG_ERROR)
    return StateDB.open(policy.state.path)


def _parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise GuardError(f"{option} {text!r} is not a date; write it like 2025-09-01",
                         ExitCode.USAGE) from None


def register(app: typer.Typer) -> None:
    """Add weekly, audit and the findings group."""

    @app.command()
    def weekly(
        config: ConfigOption = DEFAULT_CONFIG,
        out: OutOption = None,
        week: Annotated[str | None, typer.Option(
            "--week", help="ISO week such as 2025-W10 (default: the last complete week).")] = None,
        send: Annotated[bool, typer.Option(
            "--send", help="Also mail the page (CSVs attached) to [notify] weekly_to.")] = False,
    ) -> None:
        """Write the weekly summary CSVs and the one-page HTML for the headteacher."""
        from m365guard.cli.weekly_input import read_weekly_input
        from m365guard.config import load_policy
        from m365guard.reports.weekly_files import write_weekly_reports
        from m365guard.reports.weeks import IsoWeek, refuse_future_week, school_zone
        from m365guard.rules import rule_titles

        policy = load_policy(config)
        zone = school_zone(policy.school.time_zone)
        now = datetime.now(UTC)
        chosen = IsoWeek.parse(week, zone) if week else IsoWeek.last_complete(now, zone)
        refuse_future_week(chosen, now)
        with _open_state(policy) as db:
            data = read_weekly_input(db, chosen, now, school_name=policy.school.name,
                                     rule_titles=rule_titles())
        paths = write_weekly_reports(out or policy.output.dir, data)
        for path in (paths.summary_csv, paths.detail_csv, paths.by_staff_csv, paths.html):
            typer.echo(str(path))
        if send:
            import os

            from m365guard.graph.settings import resolve_connection
            from m365guard.notify.weekly import send_weekly_page

            conn = resolve_connection(policy.tenant, os.environ)
            typer.echo(send_weekly_page(policy, conn, data, paths, now))

    @app.command()
    def audit(
        period_from: Annotated[str, typer.Option("--from", help="First day, e.g. 2025-09-01.")],
        period_to: Annotated[str, typer.Option("--to", help="Last day, e.g. 2026-08-31.")],
        config: ConfigOption = DEFAULT_CONFIG,
        out: OutOption = None,
    ) -> None:
        """Build the audit pack (folder and zip) for the policy review and the governors."""
        from m365guard.clauses import clause_texts
        from m365guard.cli.reading import audit_inputs
        from m365guard.config import load_policy
        from m365guard.reports.audit import build_audit_pack, clause_coverage
        from m365guard.reports.weeks import refuse_future_period, school_zone
        from m365guard.rules import RULES

        policy = load_policy(config)
        start, end = _parse_day(period_from, "--from"), _parse_day(period_to, "--to")
        refuse_future_period(start, end, datetime.now(UTC), school_zone(policy.school.time_zone))
        with _open_state(policy) as db:
            pack = build_audit_pack(
                audit_inputs(db, start, end), start, end, out or policy.output.dir,
                clause_texts(),
                clause_coverage(RULES), datetime.now(UTC), school_name=policy.school.name)
        typer.echo(str(pack.folder))
        typer.echo(str(pack.zip_path))

    findings = typer.Typer(help="List findings, or record that one has been dealt with.")
    app.add_typer(findings, name="findings")

    @findings.command("list")
    def list_findings(
        config: ConfigOption = DEFAULT_CONFIG,
        status: Annotated[str, typer.Option(
            "--status", help="open, resolved, acknowledged or all.")] = "open",
        out: Annotated[Path | None, typer.Option(
            "--out", help="Write every column to this CSV instead of printing.")] = None,
    ) -> None:
        """Show findings (ids for `findings ack`), highest severity first."""
        from m365guard.config import load_policy
        from m365guard.logs import printable
        from m365guard.records import FINDING_STATUSES, records
        from m365guard.reports.csvfile import write_csv
        from m365guard.tables import SEVERITY_RANK

        if status not in (*FINDING_STATUSES, "all"):
            raise GuardError(f"--status {status!r}: use {', '.join(FINDING_STATUSES)} or all",
                             ExitCode.USAGE)
        policy = load_policy(config)
        with _open_state(policy) as db:
            table = db.findings() if status == "all" else db.findings(
                status=cast("FindingStatus", status))
        from m365guard.notify import exceptions
        from m365guard.notify import log as notify_log

        conn = notify_log.connect(policy.state.path)
        try:  # an open finding an exception covers now reads "accepted"
            accepted = exceptions.covered(table, exceptions.exceptions(conn), datetime.now(UTC))
        finally:
            conn.close()
        table = table.assign(status=table["status"].where(
            ~(table["finding_id"].isin(accepted) & (table["status"] == "open")), "accepted"))
        if out is not None:
            typer.echo(str(write_csv(table, out)))
            return
        table = table.assign(_rank=-table["severity"].map(SEVERITY_RANK)).sort_values(
            ["_rank", "first_seen"], kind="stable")
        if table.empty:
            typer.echo(f"no {status} findings" if status != "all" else "no findings")
        for row in records(table):
            typer.echo(printable(
                f"{row['finding_id']}  {row['severity']:<6} {row['status']:<12} {row['rule_id']}"
                f"  {row['actor']}  first seen {row['first_seen']:%Y-%m-%d}"
                f" ({row['times_seen']}x)  {row['summary']}"))

    @findings.command("ack")
    def ack(
        by: Annotated[str, typer.Option("--by", help="Who dealt with it.")],
        reason: Annotated[str, typer.Option("--reason", help="What was done.")],
        finding_ids: Annotated[list[str] | None, typer.Argument(
            help="Finding ids (from `findings list`); or use the filters.")] = None,
        rule: Annotated[str | None, typer.Option("--rule", help="Open findings of a rule.")] = None,
        actor: Annotated[str | None, typer.Option("--actor", help="Open findings of a person.")
                         ] = None,
        severity: Annotated[str | None, typer.Option("--severity", help="Open findings of a "
                                                     "severity.")] = None,
        config: ConfigOption = DEFAULT_CONFIG,
    ) -> None:
        """Acknowledge findings: they leave the open list and stay acknowledged if seen again."""
        from m365guard.cli.casework import select_findings
        from m365guard.config import load_policy
        from m365guard.ledger import acknowledge
        from m365guard.records import records

        if not by.strip() or not reason.strip():
            raise GuardError(
                "acknowledging a finding needs --by (who) and --reason (what was done)",
                ExitCode.USAGE)
        policy = load_policy(config)
        with _open_state(policy) as db, db.transaction():
            chosen = select_findings(db.findings(), list(finding_ids or []), rule, actor,
                                     severity)
            for row in records(chosen):
                db.write_findings(acknowledge(row, by.strip(), reason.strip(),
                                              datetime.now(UTC)))
        ids = list(chosen["finding_id"])
        typer.echo(f"acknowledged {ids[0]}" if len(ids) == 1
                   else f"acknowledged {len(ids)} findings")

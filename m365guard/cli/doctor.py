"""`m365guard doctor`: is the tenant connection ready for tonight's run?"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from m365guard.errors import ExitCode

if TYPE_CHECKING:  # msal, the SDK and rich load when the doctor runs, not for --help
    from rich.console import Console

    from m365guard.config import Policy
    from m365guard.graph.doctor import DoctorCheck


def kinds_for_policy(policy: Policy | None) -> set[str]:
    """The data kinds (REQUIRED_PERMISSIONS keys) the enabled checks read; all without a policy."""
    from m365guard.graph.permissions import REQUIRED_PERMISSIONS

    if policy is None:
        return set(REQUIRED_PERMISSIONS)
    recognise = set(policy.people.recognise)
    people = policy.people
    kinds = {"users", "messages"}
    if "licence" in recognise:
        kinds.add("skus")
    if "education_role" in recognise:
        kinds.add("edu_roles")
    if "group" in recognise and (people.pupil_groups or people.staff_groups
                                 or people.governor_groups):
        kinds.add("group_members")
    if policy.rules.forwarding.enabled:
        kinds.add("messageRules")
    if policy.collect.include_chats:
        kinds.add("chats")
    if policy.collect.include_audit_log:
        kinds.add("auditLog")
    return kinds


def local_check(policy: Policy | None) -> list[tuple[DoctorCheck, ExitCode]]:
    """The nightly's local checks (preflight.py) as a doctor line, with its exit code."""
    from datetime import UTC, datetime

    from m365guard.errors import GuardError
    from m365guard.graph.doctor import DoctorCheck
    from m365guard.preflight import check_local, configured_tenant

    if policy is None:
        return []
    try:
        check_local(policy, policy.output.dir, configured_tenant(policy, os.environ),
                    datetime.now(UTC))
    except GuardError as exc:
        return [(DoctorCheck("local inputs", False, exc.message, "fix the file or folder named"),
                 exc.exit_code)]
    return [(DoctorCheck("local inputs", True, "rosters, exports, output folder, state file"),
             ExitCode.CLEAN)]


def print_checks(checks: list[DoctorCheck], console: Console) -> None:
    """The pass/fail table with the fix for every failing line."""
    from rich.table import Table

    table = Table(show_lines=False)
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]",
                      check.detail, check.fix)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `m365guard doctor`."""

    @app.command()
    def doctor(
        config: Annotated[Path | None, typer.Option(
            "--config", help="policies.toml (default: ./policies.toml if present).")] = None,
    ) -> None:
        """Check configuration, authority, token, permissions and one call per endpoint."""
        from rich.console import Console

        from m365guard.config import load_policy
        from m365guard.enforce.doctor import app_checks
        from m365guard.graph.doctor import run_doctor
        from m365guard.graph.settings import TenantSection, resolve_connection

        path = config if config is not None else Path("policies.toml")
        policy = load_policy(path) if config is not None or path.is_file() else None
        local = local_check(policy)  # before Graph is contacted, as the nightly does
        section = policy.tenant if policy is not None else TenantSection()
        conn = resolve_connection(section, os.environ)
        checks = [check for check, _ in local] + run_doctor(conn, kinds_for_policy(policy))
        checks += app_checks(policy, conn, os.environ)
        if policy is not None and policy.notify.sender is not None and all(
                check.passed for check in checks):
            from m365guard.graph.sendmail import sending_check

            checks.append(sending_check(conn, policy.notify.sender))
        print_checks(checks, Console(width=160))
        if not all(check.passed for check in checks):
            if any(c.name.startswith("permission") and not c.passed for c in checks):
                raise typer.Exit(int(ExitCode.PERMISSION_MISSING))
            raise typer.Exit(next((int(code) for check, code in local if not check.passed),
                                  int(ExitCode.CONFIG_ERROR)))

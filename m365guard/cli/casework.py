"""`findings accept` and `breaches list|decide`: the DPO's and headteacher's records.

Like the other report commands these read and write only the state file (no Graph), so they
can run while a nightly run holds the lock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from m365guard.errors import ExitCode, GuardError

if TYPE_CHECKING:
    import pandas as pd

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The policies.toml to use.")]
DEFAULT_CONFIG = Path("policies.toml")


def _state_path(config: Path) -> Path:
    from m365guard.config import load_policy

    policy = load_policy(config)
    if not policy.state.path.exists():
        raise GuardError(f"no state file at {policy.state.path} yet; run `m365guard nightly`"
                         " first (or check [state] path)", ExitCode.CONFIG_ERROR)
    return policy.state.path


def select_findings(findings: pd.DataFrame, ids: list[str], rule: str | None,
                    actor: str | None, severity: str | None) -> pd.DataFrame:
    """Open findings by id and/or filter (all filters must match); GuardError if none."""
    if not (ids or rule or actor or severity):
        raise GuardError("name finding ids, or a filter: --rule, --actor, --severity",
                         ExitCode.USAGE)
    chosen = findings[findings["status"] == "open"]
    unknown = sorted(set(ids) - set(findings["finding_id"]))
    if unknown:
        raise GuardError(f"no finding with id {unknown[0]!r}; `m365guard findings list` shows"
                         " the ids", ExitCode.USAGE)
    if ids:
        chosen = chosen[chosen["finding_id"].isin(ids)]
    if rule:
        chosen = chosen[chosen["rule_id"] == rule]
    if actor:
        chosen = chosen[chosen["actor"].str.lower() == actor.lower()]
    if severity:
        chosen = chosen[chosen["severity"] == severity]
    if chosen.empty:
        raise GuardError("no open finding matches; `m365guard findings list` shows them",
                         ExitCode.USAGE)
    return chosen


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise GuardError(f"--until {text!r} is not a date; write it like 2026-07-31",
                         ExitCode.USAGE) from None


def register(app: typer.Typer) -> None:
    """Add `findings accept` (to the findings group) and the `breaches` group."""
    group = next(info.typer_instance for info in app.registered_groups
                 if info.name == "findings" and info.typer_instance is not None)

    @group.command("accept")
    def accept(
        by: Annotated[str, typer.Option("--by", help="Who decided to accept it.")],
        reason: Annotated[str, typer.Option("--reason", help="Why it is acceptable.")],
        until: Annotated[str, typer.Option("--until", help="Last day it applies (2026-07-31).")],
        finding_id: Annotated[str | None, typer.Argument(help="One finding id.")] = None,
        mailbox: Annotated[str | None, typer.Option("--mailbox", help="Every finding of a "
                                                    "mailbox (its UPN).")] = None,
        address: Annotated[str | None, typer.Option("--address", help="Every finding naming "
                                                    "this outside address.")] = None,
        rule: Annotated[str | None, typer.Option("--rule", help="Every finding of a rule.")] = None,
        config: ConfigOption = DEFAULT_CONFIG,
    ) -> None:
        """Accept a known, justified exception until a date: shown as accepted, not alerted."""
        from m365guard.config import load_policy
        from m365guard.notify import exceptions
        from m365guard.notify import log as notify_log
        from m365guard.reports.weeks import school_zone

        policy = load_policy(config)
        scope, value = exceptions.target(finding_id, mailbox, address, rule)
        last_day = _day(until)
        conn = notify_log.connect(_state_path(config))
        try:
            if scope == "finding" and conn.execute(
                    "SELECT 1 FROM findings WHERE finding_id = ?", (value,)).fetchone() is None:
                raise GuardError(f"no finding with id {value!r}; `m365guard findings list`"
                                 " shows the ids", ExitCode.USAGE)
            number = exceptions.accept(conn, scope, value, by, reason, last_day,
                                       datetime.now(UTC), school_zone(policy.school.time_zone))
        finally:
            conn.close()
        typer.echo(f"exception {number}: {scope} {value} accepted until {last_day}")

    breaches = typer.Typer(help="The breach log for the DPO: list entries, record decisions.")
    app.add_typer(breaches, name="breaches")

    @breaches.command("list")
    def list_breaches(
        config: ConfigOption = DEFAULT_CONFIG,
        out: Annotated[Path | None, typer.Option("--out", help="Write the log as CSV.")] = None,
    ) -> None:
        """Every exposure of parents' or personal addresses, undecided first."""
        from m365guard.notify import breaches as log
        from m365guard.notify import log as notify_log
        from m365guard.reports.csvfile import write_csv
        from m365guard.state import StateDB

        path = _state_path(config)
        with StateDB.open(path) as db:
            findings = db.findings()
        conn = notify_log.connect(path)
        try:
            log.open_entries(conn, findings)
            table = log.entries(conn)
        finally:
            conn.close()
        if out is not None:
            typer.echo(str(write_csv(table, out)))
            return
        if table.empty:
            typer.echo("no breach-log entries")
        for row in table.to_dict("records"):
            state = (f"{row['decision']} by {row['decided_by']}" if row["decision"]
                     else f"DECIDE BY {row['decide_by']:%Y-%m-%d %H:%M} UTC")
            typer.echo(f"{row['finding_id']}  {state}  {row['actor']}  "
                       f"{row['addresses_shown']} shown ({row['parents_or_personal']} parents or"
                       f" personal), found {row['found_at']:%Y-%m-%d %H:%M} UTC")

    @breaches.command("decide")
    def decide(
        finding_id: Annotated[str, typer.Argument(help="The entry's finding id.")],
        decision: Annotated[str, typer.Option("--decision", help="reported or not-reportable.")],
        by: Annotated[str, typer.Option("--by", help="Who decided (the DPO).")],
        note: Annotated[str, typer.Option("--note", help="Why, or the ICO reference.")],
        config: ConfigOption = DEFAULT_CONFIG,
    ) -> None:
        """Record whether the exposure was reported to the ICO, by whom and when."""
        from m365guard.notify import breaches as log
        from m365guard.notify import log as notify_log

        conn = notify_log.connect(_state_path(config))
        try:
            log.decide(conn, finding_id, decision, by, note, datetime.now(UTC))
        finally:
            conn.close()
        typer.echo(f"{finding_id}: {decision}")

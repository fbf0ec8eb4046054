"""`m365guard enforce plan | apply | undo | journal`: fix open findings, with a second approver.

Exit codes: 0 done (or a dry run), 16 refused (enforcement off, not approved by someone other
than the plan's author, or a rule changed after the action), 17 some actions skipped or
failed (each line says which and why), 15 the write app lacks MailboxSettings.ReadWrite.
The work lives in m365guard/enforce/commands.py, loaded only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The policies.toml to use.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Carry it out (without: a dry run).")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log steps to stderr.")]


def _finish(result: tuple[list[str], int]) -> None:
    lines, code = result
    for line in lines:
        typer.echo(line)
    if code:
        raise typer.Exit(int(code))


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
        from m365guard.enforce import commands

        _finish(commands.plan(config, by=by, finding=finding or [], rule=rule, out=out,
                              verbose=verbose))

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
        from m365guard.enforce import commands

        _finish(commands.apply(config, plan_file, approved_by=approved_by, yes=yes,
                               verbose=verbose))

    @enforce.command("undo")
    def undo(
        action_id: Annotated[str, typer.Argument(help="The action id (see `enforce journal`).")],
        by: Annotated[str, typer.Option("--by", help="Who undoes it.")] = "",
        yes: YesOption = False,
        config: ConfigOption = Path("policies.toml"),
        verbose: VerboseOption = False,
    ) -> None:
        """Put the rule back exactly as the journal recorded it before the action."""
        from m365guard.enforce import commands

        _finish(commands.undo(config, action_id, by=by, yes=yes, verbose=verbose))

    @enforce.command("journal")
    def show_journal(config: ConfigOption = Path("policies.toml")) -> None:
        """Every journalled action: id, status, object, who planned and approved it."""
        from m365guard.enforce import commands

        _finish(commands.show_journal(config))

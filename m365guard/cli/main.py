"""The `m365guard` entry point: builds the Typer app and turns GuardError into exit codes."""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from m365guard import __version__
from m365guard.errors import ExitCode, GuardError
from m365guard.logs import printable

# One module per command group; each defines `register(app)`.
COMMAND_MODULES = (
    "m365guard.cli.emulator",
    "m365guard.cli.doctor",
    "m365guard.cli.policy",
    "m365guard.cli.rules",
    "m365guard.cli.reports",
    "m365guard.cli.casework",  # after reports: adds `findings accept` to its group
    "m365guard.cli.nightly",
    "m365guard.cli.demo",
    "m365guard.cli.enforce",
)

app = typer.Typer(
    name="m365guard",
    help="Check a school's Microsoft 365 tenant against its staff Acceptable Use Policy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[output] dir" literally
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"m365guard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Check a school's Microsoft 365 tenant against its staff Acceptable Use Policy."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _usage_line(exc: UsageError) -> str:
    """Click's usage error as one line: the command, what is wrong, where the help is."""
    command = exc.ctx.command_path if exc.ctx is not None else "m365guard"
    what = " ".join(exc.format_message().split())  # click lists choices on lines of their own
    return f"error: {command}: {what} (see `{command} --help`)"


def run() -> None:
    """Console-script entry: one line for user errors, a logged traceback for bugs."""
    try:
        # Without standalone mode click *returns* the code of a typer.Exit instead of raising
        # it; dropping it would turn every exit code (3: new findings, 4: partial) into 0.
        code = app(standalone_mode=False)
    except GuardError as exc:
        typer.echo(f"error: {printable(exc.message)}", err=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except NoArgsIsHelpError as exc:  # a group named without its command: its help
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    except UsageError as exc:  # typer bundles its own click: these are its exception types
        typer.echo(printable(_usage_line(exc)), err=True)
        sys.exit(int(ExitCode.USAGE))
    except ClickException as exc:
        typer.echo(f"error: {printable(exc.format_message())}", err=True)
        sys.exit(int(ExitCode.USAGE))
    except Exception as exc:  # a bug
        logging.getLogger("m365guard").exception("internal error")
        typer.echo(printable(f"internal error: {type(exc).__name__}: {exc} (see the log)"),
                   err=True)
        sys.exit(int(ExitCode.INTERNAL_ERROR))
    sys.exit(code if isinstance(code, int) else 0)

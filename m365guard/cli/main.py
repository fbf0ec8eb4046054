"""The `m365guard` entry point: builds the Typer app and turns GuardError into exit codes."""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from m365guard import __version__
from m365guard.errors import ExitCode, GuardError

# One module per command group; each defines `register(app)`.
COMMAND_MODULES = (
    "m365guard.cli.emulator",
    "m365guard.cli.doctor",
    "m365guard.cli.policy",
    "m365guard.cli.rules",
    "m365guard.cli.reports",
    "m365guard.cli.nightly",
    "m365guard.cli.demo",
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


def run() -> None:
    """Console-script entry: one line for user errors, a logged traceback for bugs."""
    try:
        # Without standalone mode click *returns* the code of a typer.Exit instead of raising
        # it; dropping it would turn every exit code (3: new findings, 4: partial) into 0.
        code = app(standalone_mode=False)
    except GuardError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and bugs
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        logging.getLogger("m365guard").exception("internal error")
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (see the log)", err=True)
        sys.exit(int(ExitCode.INTERNAL_ERROR))
    sys.exit(code if isinstance(code, int) else 0)

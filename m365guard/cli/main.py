"""The `m365guard` entry point: builds the Typer app and turns GuardError into exit codes."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import signal
import sys
from pathlib import Path

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from m365guard import __version__, stopping
from m365guard.errors import ExitCode, GuardError
from m365guard.logs import masked

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


_NOT_SECRET = re.compile(r"^([0-9a-fA-F-]{36}|https://\S+|[A-Za-z]:\\.*|/.*|[a-z]+)$")


_UNWRITABLE_DB = re.compile(r"disk is full|readonly database|unable to open|disk I/O error")


def _mask_environment() -> None:
    """Mask every M365GUARD_* value that is not plainly a GUID, URL, path or a word (cloud
    names): a secret pasted into the wrong variable must not be echoed by the error about it."""
    from m365guard.logs import mask_secret

    for name, value in os.environ.items():
        if name.startswith("M365GUARD_") and not _NOT_SECRET.match(value.strip()):
            mask_secret(value)
            mask_secret(value.strip())
    secret_file = os.environ.get("M365GUARD_CLIENT_SECRET_FILE", "")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if secret_file and os.path.getsize(secret_file) < 4096:
            mask_secret(Path(secret_file).read_text(encoding="utf-8-sig").strip())


def _stop_on_signals() -> None:
    """SIGTERM (systemd's stop, a shutdown) and SIGINT (Ctrl-C) end the run at once."""

    def interrupt(signum: int, frame: object) -> None:
        stopping.request(signal.Signals(signum).name)  # typer turns the raise into exit 130
        # the requests and tasks cut short say so as they unwind (asyncio's "Task exception
        # was never retrieved", SSL transport errors, each with a traceback): the one line
        # this run prints is enough
        logging.getLogger("asyncio").disabled = True
        sys.unraisablehook = lambda unraisable: None
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def _die_by(signum: int) -> None:
    """Exit the way an interrupted program does (killed by the signal), for schedulers."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # where the signal cannot end the process (Windows)


def _interrupted() -> None:
    """One line in the log and on stderr, then end by the signal that stopped the run."""
    name = stopping.requested() or "SIGINT"
    logging.getLogger("m365guard").info(  # info: stderr gets the one line below
        "interrupted by %s: stopped at once; the next run completes it", name)
    typer.echo(f"interrupted by {name}: stopped; the next run completes this one", err=True)
    _die_by(signal.Signals[name])


def run() -> None:
    """Console-script entry: one line for user errors, a logged traceback for bugs."""
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal or pipe must not break a run
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    _mask_environment()
    _stop_on_signals()
    log = logging.getLogger("m365guard")
    try:
        # Without standalone mode click *returns* the code of a typer.Exit instead of raising
        # it; dropping it would turn every exit code (3: new findings, 4: partial) into 0.
        code = app(standalone_mode=False)
    except GuardError as exc:
        typer.echo(f"error: {masked(exc.message)}", err=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        if stopping.requested() and exc.exit_code == 130:
            _interrupted()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except NoArgsIsHelpError as exc:  # a group named without its command: its help
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    except UsageError as exc:  # typer bundles its own click: these are its exception types
        typer.echo(masked(_usage_line(exc)), err=True)
        sys.exit(int(ExitCode.USAGE))
    except ClickException as exc:
        typer.echo(f"error: {masked(exc.format_message())}", err=True)
        sys.exit(int(ExitCode.USAGE))
    except OSError as exc:  # a full disk, a folder that went read-only mid-run
        from m365guard.writable import os_error_line

        log.info("%s", os_error_line(exc))  # stderr gets the one line below
        typer.echo(f"error: {masked(os_error_line(exc))}", err=True)
        sys.exit(int(ExitCode.CONFIG_ERROR))
    except Exception as exc:  # a bug, or SQLite unable to write the state (full, read-only)
        import sqlite3

        if isinstance(exc, sqlite3.OperationalError) and _UNWRITABLE_DB.search(str(exc)):
            line = (f"the state file cannot be written ({exc}); free space on its disk or "
                    "point [state] path at a writable folder")
            log.info("%s", line)
            typer.echo(f"error: {masked(line)}", err=True)
            sys.exit(int(ExitCode.CONFIG_ERROR))
        log.exception("internal error")
        typer.echo(masked(f"internal error: {type(exc).__name__}: {exc} (see the log)"),
                   err=True)
        sys.exit(int(ExitCode.INTERNAL_ERROR))
    if stopping.requested() and code == 130:  # typer's code for the KeyboardInterrupt a signal
        _interrupted()  # raised; a command that handled it (emulator serve) returns normally
    sys.exit(code if isinstance(code, int) else 0)

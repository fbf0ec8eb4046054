"""`m365guard nightly`: the scheduled job. Its exit code is what the scheduler sees.

`nightly --all CONFIG_DIR` is the job of a trust with many tenants: each CONFIG_DIR/*/policies.toml
(one tenant: its own [tenant], state and output) runs as its own `m365guard nightly` process,
`--parallel` at a time, so one tenant's memory, lock, failure or crash is its own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from m365guard.logs import printable

if TYPE_CHECKING:  # the pipeline, Graph and rich load when the job runs, not for --help
    from m365guard.pipeline import ProgressSink

log = logging.getLogger(__name__)


@contextmanager
def progress_sink() -> Iterator[ProgressSink]:
    """A rich progress bar on a terminal; a log line every 10% when run by a scheduler."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("reading mailboxes", total=None)

            def show(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield show
        return
    last_decile = -1

    def report(done: int, total: int) -> None:
        nonlocal last_decile
        decile = done * 10 // max(total, 1)
        if decile != last_decile:
            last_decile = decile
            log.info("collected %d of %d mailbox streams", done, total)

    yield report


def tenant_configs(folder: Path) -> list[Path]:
    """Each tenant's policies.toml under `folder`; two tenants sharing a state file is refused
    before any runs (their runs would take each other's lock and delta links)."""
    from m365guard.config import load_policy
    from m365guard.errors import ExitCode, GuardError

    configs = sorted(folder.glob("*/policies.toml"))
    if not configs:
        raise GuardError(f"--all {folder}: no */policies.toml in it; put each tenant's "
                         "policies.toml in a folder of its own there", ExitCode.CONFIG_ERROR)
    states: dict[Path, Path] = {}
    for config in configs:
        state = load_policy(config).state.path.resolve()
        if state in states:
            raise GuardError(f"{config} and {states[state]} share the state file {state}: give "
                             "each tenant its own [state] path", ExitCode.CONFIG_ERROR)
        states[state] = config
    return configs


def combined_exit(codes: Sequence[int]) -> int:
    """One code for the trust: a tenant's error first, then partial, then new findings."""
    from m365guard.errors import ExitCode

    quiet = (ExitCode.CLEAN, ExitCode.NEW_HIGH_FINDINGS, ExitCode.PARTIAL_RUN)
    return next((code for code in codes if code not in quiet),
                max(codes, key=lambda code: quiet.index(ExitCode(code)), default=0))


def run_all(folder: Path, parallel: int, verbose: bool) -> int:
    """Every tenant's night in its own process; one line per tenant, the combined exit code."""
    configs = tenant_configs(folder)

    def night(config: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
        command = [sys.executable, "-c", "from m365guard.cli.main import run; run()",
                   "nightly", "--config", str(config), *(["--verbose"] if verbose else [])]
        return config, subprocess.run(command, capture_output=True, text=True, check=False)

    codes = []
    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        for config, done in pool.map(night, configs):
            lines = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()
            typer.echo(printable(f"{config.parent.name}: {lines[-1]} (exit {done.returncode})"))
            codes.append(done.returncode)
    return combined_exit(codes)


def register(app: typer.Typer) -> None:
    """Add `nightly`."""

    @app.command()
    def nightly(
        config: Annotated[Path, typer.Option(
            "--config", "-c", help="The policies.toml to use.")] = Path("policies.toml"),
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Folder for the CSVs (default: [output] dir).")] = None,
        verbose: Annotated[bool, typer.Option(
            "--verbose", "-v", help="Log progress to stderr.")] = False,
        all_tenants: Annotated[Path | None, typer.Option(
            "--all", help="Run every CONFIG_DIR/*/policies.toml, each tenant in its own "
                          "process with its own state (a trust of many tenants).",
            metavar="CONFIG_DIR")] = None,
        parallel: Annotated[int, typer.Option(
            help="With --all: tenants run at once.")] = 1,
    ) -> None:
        """Collect since the last run, check every rule, write the findings CSV and run JSON.

        Exit codes: 0 clean, 3 new high-severity findings, 4 partial run, 5 already running,
        6 configuration error, 10-15 connection and permission errors (README.md). With --all,
        one line per tenant and the first tenant error's code, else partial, else findings.
        """
        if all_tenants is not None:
            raise typer.Exit(run_all(all_tenants, parallel, verbose))
        from m365guard.config import load_policy
        from m365guard.errors import ExitCode, GuardError
        from m365guard.graph.settings import resolve_connection
        from m365guard.logs import setup_logging
        from m365guard.pipeline import run_nightly
        from m365guard.writable import os_error_line, remove_stale_temp_files, usable_folder

        started = time.time()
        policy = load_policy(config)
        out_dir = usable_folder(out or policy.output.dir, "[output] dir")
        usable_folder(policy.state.path.parent, "the folder of [state] path")
        setup_logging(policy.output.log_file or out_dir / "m365guard.log", verbose=verbose)
        conn = resolve_connection(policy.tenant, os.environ)
        try:
            with progress_sink() as progress:
                outcome = run_nightly(policy, conn, out_dir, progress=progress)
        except GuardError as exc:
            if exc.exit_code != ExitCode.ALREADY_RUNNING:  # the other run's files are its own
                remove_stale_temp_files(out_dir, started)
            raise
        except OSError as exc:  # the disk filled up or went read-only while writing reports
            remove_stale_temp_files(out_dir, started)
            where = "" if exc.filename else "reports in [output] dir "
            exc.filename = exc.filename or str(out_dir)
            raise GuardError(os_error_line(exc, where.strip()), ExitCode.CONFIG_ERROR) from None
        from m365guard.notify.nightly import notify_after_run

        notify_after_run(policy, conn, outcome)
        for path in remove_stale_temp_files(out_dir, started):
            log.info("removed %s, left by a write that was killed", path)
        typer.echo(printable(f"{outcome.run.outcome}: {len(outcome.update.new)} new, "
                             f"{len(outcome.update.escalated)} escalated, "
                             f"{len(outcome.update.still_open)} still open, "
                             f"{len(outcome.update.resolved)} resolved -> "
                             f"{outcome.paths.findings_csv}"))
        raise typer.Exit(int(outcome.exit_code))

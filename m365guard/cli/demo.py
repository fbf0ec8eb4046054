"""`m365guard demo`: the whole tool on an emulated school, with nothing to set up."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from m365guard.errors import ExitCode, GuardError

if TYPE_CHECKING:
    from m365guard.pipeline import NightlyOutcome


class DemoSchool(StrEnum):
    """The synthetic schools the demo can run (both Manby Lodge, so policies.toml fits)."""

    small = "small"
    quiet = "quiet"


def register(app: typer.Typer) -> None:
    """Add `demo`."""

    @app.command()
    def demo(
        config: Annotated[Path, typer.Option(
            "--config", "-c", help="The school's policies.toml (its tenant, state and output "
            "settings are replaced by the demo's).")] = Path("policies.toml"),
        out: Annotated[Path, typer.Option(
            "--out", "-o", help="Folder for everything (must be empty or absent).")] = Path(
            "demo-out"),
        nights: Annotated[int, typer.Option(min=1, max=60, help="Simulated nights.")] = 28,
        seed: Annotated[int, typer.Option(help="Seed of the synthetic school.")] = 1,
        school: Annotated[DemoSchool, typer.Option(
            "--school", help="small: Manby Lodge with violations planted; quiet: the same "
            "school keeping its policy (every night should exit 0).")] = DemoSchool.small,
    ) -> None:
        """Run nightly, weekly and audit on an emulated school over simulated nights.

        Starts the local Graph tenant with the small synthetic school (Manby Lodge) in-process
        and writes everything to --out.
        """
        from m365guard.config import load_policy
        from m365guard.demo import run_demo
        from m365guard.logs import setup_logging

        policy = load_policy(config)
        if out.exists() and any(out.iterdir()):
            raise GuardError(f"{out} is not empty; remove it or choose another --out",
                             ExitCode.USAGE)
        setup_logging(out / "m365guard.log")

        def show(night: int, outcome: NightlyOutcome) -> None:
            update = outcome.update
            typer.echo(f"night {night:2d} {outcome.run.started_at:%Y-%m-%d}: "
                       f"{outcome.run.outcome}, {len(update.new)} new, "
                       f"{len(update.still_open)} still open, {len(update.resolved)} resolved "
                       f"(exit {int(outcome.exit_code)})")

        result = run_demo(policy, out, nights=nights, seed=seed, school_size=school.value,
                          on_night=show)
        typer.echo("")
        typer.echo(f"Nightly findings CSVs and run JSON: {out / 'nightly'}")
        typer.echo(f"Weekly summary for the headteacher: {result.weekly_html}")
        typer.echo(f"Audit evidence pack:                {result.audit_zip}")
        typer.echo(f"Log:                                {out / 'm365guard.log'}")

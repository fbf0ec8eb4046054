"""`m365guard emulator serve|routes`: run the local Graph-compatible tenant.

The school is a generated one (small|medium|large, seeded) or a tenant file. The client
settings are printed (the secret only goes to the owner-only --settings-out file and the
workdir), so a second terminal can point `m365guard` at the emulator.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from m365guard.errors import ExitCode, GuardError

if TYPE_CHECKING:  # the emulator (starlette, uvicorn, the synthetic school) loads to serve
    from m365guard.emulator.faults import FaultConfig
    from m365guard.emulator.server import EmulatorSettings
    from m365guard.emulator.state import Tenant

GENERATED_SIZES = ("small", "medium", "large")
SETTINGS_OUT_OPTION = typer.Option(
    None, help="Write the client settings as JSON here (owner-only).")
WORKDIR_OPTION = typer.Option(
    None, help="Where the CA, certificates and app registration live (default: temp).")


def load_school(school: str, seed: int) -> Tenant:
    """A generated school by size, or a tenant file (.json or .json.gz)."""
    from m365guard.emulator.state import Tenant

    if school in GENERATED_SIZES:
        synth = importlib.import_module("m365guard.emulator.synth")
        return Tenant.from_document(synth.generate(school, seed).tenant)
    path = Path(school)
    if not path.is_file():
        raise GuardError(f"--school: '{school}' is neither small|medium|large nor a tenant file",
                         ExitCode.USAGE)
    return Tenant.load(path)


def fault_config(*, seed: int, error_rate: float, latency_ms: float, reset_rate: float,
                 slow_rate: float, slow_seconds: float, batch_throttle_rate: float,
                 concurrency: int, budget: int, budget_window: float) -> FaultConfig:
    from m365guard.emulator.faults import FaultConfig

    try:
        return FaultConfig(seed=seed, error_rate=error_rate, latency_ms=latency_ms,
                           reset_rate=reset_rate, slow_rate=slow_rate, slow_seconds=slow_seconds,
                           batch_item_throttle_rate=batch_throttle_rate,
                           mailbox_concurrency=concurrency, budget_requests=budget,
                           budget_window_s=budget_window)
    except ValueError as exc:
        raise GuardError(f"fault options: {exc}", ExitCode.USAGE) from exc


def describe(settings: EmulatorSettings, settings_out: Path | None, workdir: Path) -> str:
    shown = settings.model_dump(exclude={"client_secret"})
    secret_at = settings_out or workdir / "app.json"
    lines = [f"  {key}: {value}" for key, value in shown.items()]
    lines.append(f"  client_secret: (in {secret_at}, owner-only)")
    return "\n".join(["m365guard emulator listening; client settings:", *lines,
                      "Press Ctrl-C to stop."])


def register(app: typer.Typer) -> None:
    """Add the emulator command group."""
    sub = typer.Typer(help="Run the local Graph-compatible tenant (the emulator).",
                      no_args_is_help=True)
    app.add_typer(sub, name="emulator")

    @sub.command()
    def serve(
        school: str = typer.Option("small", help="small|medium|large (generated) or a tenant "
                                                 "file (.json / .json.gz)."),
        seed: int = typer.Option(1, help="Seed for the generated school and the faults."),
        port: int = typer.Option(0, help="Port on 127.0.0.1 (0: any free port)."),
        settings_out: Path | None = SETTINGS_OUT_OPTION,
        workdir: Path | None = WORKDIR_OPTION,
        error_rate: float = typer.Option(0.0, help="Fraction of requests failing 429/5xx."),
        latency_ms: float = typer.Option(0.0, help="Latency added to every Graph request."),
        reset_rate: float = typer.Option(0.0, help="Fraction of connections reset mid-answer."),
        slow_rate: float = typer.Option(0.0, help="Fraction answered after --slow-seconds."),
        slow_seconds: float = typer.Option(30.0, help="Delay of a slow answer."),
        batch_throttle_rate: float = typer.Option(0.0, help="Fraction of $batch items 429."),
        concurrency: int = typer.Option(4, help="Concurrent requests per app and mailbox."),
        budget: int = typer.Option(10_000, help="Requests per app and mailbox per window."),
        budget_window: float = typer.Option(600.0, help="Throttling window in seconds."),
        roles: str | None = typer.Option(
            None, help="Comma-separated application roles to grant (default: least privilege)."),
    ) -> None:
        """Serve a tenant over HTTPS on 127.0.0.1 until Ctrl-C."""
        from m365guard.emulator.server import serve as run_server
        from m365guard.emulator.tls import write_private

        faults = fault_config(seed=seed, error_rate=error_rate, latency_ms=latency_ms,
                              reset_rate=reset_rate, slow_rate=slow_rate,
                              slow_seconds=slow_seconds, batch_throttle_rate=batch_throttle_rate,
                              concurrency=concurrency, budget=budget, budget_window=budget_window)
        tenant = load_school(school, seed)
        home = workdir or Path(tempfile.mkdtemp(prefix="m365guard-emulator-"))
        granted = None if roles is None else [r.strip() for r in roles.split(",") if r.strip()]

        def ready(settings: EmulatorSettings) -> None:
            if settings_out is not None:
                write_private(settings_out, settings.model_dump_json(indent=2).encode())
            typer.echo(describe(settings, settings_out, home))

        run_server(tenant, workdir=home, faults=faults, roles=granted, port=port,
                   on_ready=ready)
        typer.echo("emulator stopped")

    @sub.command("routes")
    def routes() -> None:
        """Print the implemented Graph endpoints and the roles each accepts."""
        from m365guard.emulator.routes import route_table

        for method, path, accepted in route_table():
            typer.echo(f"{method:5} /v1.0{path}  [{', '.join(accepted)}]")

"""`m365guard emulator serve|routes`: run the local Graph-compatible tenant.

The school is a generated one (small|medium|large, seeded) or a tenant file. Its dates are
moved to end now (`--clock now`, the default), so `m365guard nightly`, which reads the last days
by the real clock, finds its mail; `--clock fixed` keeps the dates as generated (tests),
`--clock 2026-09-01T08:00:00Z` ends them then. The client settings are printed (the secret only
goes to the owner-only --settings-out file and the workdir); `--print-env` prints the
M365GUARD_* lines to paste into a second terminal, `--policy-out` a policies.toml for the
generated school, so that terminal can run `m365guard nightly` against the emulator.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from m365guard.errors import ExitCode, GuardError

if TYPE_CHECKING:  # the emulator (starlette, uvicorn, the synthetic school) loads to serve
    from m365guard.emulator.faults import FaultConfig
    from m365guard.emulator.server import EmulatorSettings
    from m365guard.emulator.state import Tenant
    from m365guard.emulator.synth import SyntheticSchool

GENERATED_SIZES = ("small", "medium", "large")
SETTINGS_OUT_OPTION = typer.Option(
    None, help="Write the client settings as JSON here (owner-only).")
POLICY_OUT_OPTION = typer.Option(
    None, help="Write policies.toml (and its rosters and export) for the generated school "
               "into this folder.")
WORKDIR_OPTION = typer.Option(
    None, help="Where the CA, certificates and app registration live (default: temp).")


_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z?)$")
# What a client reads from the environment (graph/settings.py), from the emulator's settings.
ENV_FROM_SETTINGS = (
    ("M365GUARD_TENANT_ID", "tenant_id"),
    ("M365GUARD_CLIENT_ID", "client_id"),
    ("M365GUARD_AUTHORITY_HOST", "authority_host"),
    ("M365GUARD_GRAPH_ENDPOINT", "graph_endpoint"),
    ("M365GUARD_CA_BUNDLE", "ca_bundle"),
    ("M365GUARD_CERT_PATH", "certificate_path"),
)


def shift_times(value: Any, delta: timedelta) -> Any:
    """The document with every ISO 8601 timestamp moved by delta (format kept)."""
    if isinstance(value, dict):
        return {key: shift_times(item, delta) for key, item in value.items()}
    if isinstance(value, list):
        return [shift_times(item, delta) for item in value]
    if isinstance(value, str) and (match := _STAMP.match(value)):
        moved = datetime.fromisoformat(match.group(1)) + delta
        return moved.strftime("%Y-%m-%dT%H:%M:%S") + (match.group(3) or "")
    return value


def clock_target(clock: str, now: datetime) -> datetime | None:
    """When the school's clock should start: now, a given moment, or None (keep its dates)."""
    if clock == "fixed":
        return None
    if clock == "now":
        return now.replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(clock.replace("Z", "+00:00"))
    except ValueError:
        raise GuardError(f"--clock {clock!r}: use now, fixed or a time like "
                         "2026-09-01T08:00:00Z", ExitCode.USAGE) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _moved(doc: dict[str, Any], target: datetime | None) -> dict[str, Any]:
    if target is None:
        return doc
    start = datetime.fromisoformat(doc["clock"]["start"].replace("Z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    moved: dict[str, Any] = shift_times(doc, target - start)
    return moved


def load_school(school: str, seed: int, clock: str = "fixed",
                now: datetime | None = None) -> tuple[Tenant, SyntheticSchool | None]:
    """A generated school by size, or a tenant file (.json or .json.gz), dated by `clock`; the
    generated school too (it can write its policy and input files)."""
    from m365guard.emulator.state import Tenant

    target = clock_target(clock, now or datetime.now(UTC))
    if school.partition(":")[0] == "district":  # district[:SCHOOLS]: 1,000 mailboxes a
        # school (100 by default), mail generated as it is read, on its generated dates
        district = importlib.import_module("m365guard.emulator.synth.district")
        schools = school.partition(":")[2]
        if target is not None or not (schools or "1").isdigit():
            raise GuardError("--school district[:SCHOOLS] keeps its generated dates: use "
                             "--clock fixed", ExitCode.USAGE)
        whole: SyntheticSchool = district.district(seed, schools=int(schools or
                                                                     district.SCHOOLS))
        return district.district_tenant(whole), whole
    if school in GENERATED_SIZES:
        synth = importlib.import_module("m365guard.emulator.synth")
        generated: SyntheticSchool = synth.generate(school, seed)
        generated.tenant = _moved(generated.tenant, target)
        return Tenant.from_document(generated.tenant), generated
    path = Path(school)
    if not path.is_file():
        raise GuardError(f"--school: '{school}' is neither small|medium|large nor a tenant file",
                         ExitCode.USAGE)
    tenant = Tenant.load(path)
    if target is None:
        return tenant, None
    return Tenant.from_document(_moved(tenant.to_document(), target)), None


def env_lines(settings: EmulatorSettings, shell: str = "sh") -> list[str]:
    """The M365GUARD_* settings as lines to paste into a shell (sh or powershell)."""
    values = settings.model_dump()
    if shell == "powershell":
        return [f"$env:{name} = '{values[key]}'" for name, key in ENV_FROM_SETTINGS]
    return [f"export {name}={shlex.quote(str(values[key]))}" for name, key in ENV_FROM_SETTINGS]


def write_policy(school: SyntheticSchool, folder: Path) -> Path:
    """policies.toml for the generated school, its rosters and export, state and output, all
    in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    school.write_inputs(folder / "inputs")
    text = school.policy_toml(inputs="inputs", collect={"first_run_days": 30}) + (
        '\n[state]\npath = "state/m365guard.db"\n\n[output]\ndir = "out"\n')
    path = folder / "policies.toml"
    path.write_text(text, encoding="utf-8")
    return path


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
        school: str = typer.Option("small", help="small|medium|large|district (generated) or a "
                                                 "tenant file (.json / .json.gz)."),
        seed: int = typer.Option(1, help="Seed for the generated school and the faults."),
        port: int = typer.Option(0, help="Port on 127.0.0.1 (0: any free port)."),
        clock: str = typer.Option(
            "now", help="now (the school's dates end now), fixed (as generated or in the "
                        "file), or a time like 2026-09-01T08:00:00Z."),
        print_env: bool = typer.Option(
            False, "--print-env", help="Print the M365GUARD_* lines to paste into the shell "
                                       "that runs m365guard."),
        env_format: str = typer.Option("sh", help="--print-env lines for sh or powershell."),
        policy_out: Path | None = POLICY_OUT_OPTION,
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

        if env_format not in ("sh", "powershell"):
            raise GuardError(f"--env-format {env_format!r}: use sh or powershell",
                             ExitCode.USAGE)
        faults = fault_config(seed=seed, error_rate=error_rate, latency_ms=latency_ms,
                              reset_rate=reset_rate, slow_rate=slow_rate,
                              slow_seconds=slow_seconds, batch_throttle_rate=batch_throttle_rate,
                              concurrency=concurrency, budget=budget, budget_window=budget_window)
        tenant, generated = load_school(school, seed, clock)
        if policy_out is not None:
            if generated is None:
                raise GuardError("--policy-out needs a generated school (small|medium|large)",
                                 ExitCode.USAGE)
            typer.echo(f"policy for {tenant.id}: {write_policy(generated, policy_out)}")
        home = workdir or Path(tempfile.mkdtemp(prefix="m365guard-emulator-"))
        granted = None if roles is None else [r.strip() for r in roles.split(",") if r.strip()]

        def ready(settings: EmulatorSettings) -> None:
            if settings_out is not None:
                write_private(settings_out, settings.model_dump_json(indent=2).encode())
            typer.echo(describe(settings, settings_out, home))
            if print_env:
                typer.echo("# paste into the shell that runs m365guard:")
                for line in env_lines(settings, env_format):
                    typer.echo(line)

        run_server(tenant, workdir=home, faults=faults, roles=granted, port=port,
                   on_ready=ready)
        typer.echo("emulator stopped")

    @sub.command("routes")
    def routes() -> None:
        """Print the implemented Graph endpoints and the roles each accepts."""
        from m365guard.emulator.route_table import route_table

        for method, path, accepted in route_table():
            typer.echo(f"{method:5} /v1.0{path}  [{', '.join(accepted)}]")

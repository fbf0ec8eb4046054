"""`m365guard emulator ...` (being built)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the emulator command group."""
    sub = typer.Typer(help="Run the local Graph-compatible tenant (the emulator).")
    app.add_typer(sub, name="emulator")

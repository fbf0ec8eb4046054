"""`--version` and every `--help` load no heavy library: they only describe the commands.

How long start-up takes is measured by bench/cli_startup.py; this test guards the reason it is
fast (pandas, msal, the SDK, the emulator and rich load only where a command runs), so a
module-level import added to a command module later is caught here, not by a slow scheduler.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command

from m365guard.cli.main import app

# pydantic is not listed: typer 0.29 itself validates parameters with it.
HEAVY = ("pandas", "numpy", "pyarrow", "msal", "msgraph", "aiohttp", "starlette", "uvicorn",
         "rich", "cryptography", "matplotlib", "m365guard.emulator.server", "m365guard.pipeline",
         "m365guard.config")
PROBE = ("import sys\nsys.argv = ['m365guard', *sys.argv[1:]]\n"
         "from m365guard.cli.main import run\n"
         "try:\n    run()\nexcept SystemExit as exc:\n    code = exc.code\n"
         f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], code, file=sys.stderr)")


def _command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs: dict[str, object] = getattr(command, "commands", {})
    return [path, *(p for name, sub in subs.items() for p in _command_paths(sub, (*path, name)))]


COMMAND_LINES = [["--version"], *([*path, "--help"] for path in _command_paths(get_command(app)))]


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=[" ".join(a) for a in COMMAND_LINES])
def test_describing_a_command_loads_no_heavy_library(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=120, check=False)
    assert "LOADED [] 0" in done.stderr, done.stderr[-2000:]
    assert done.stdout.startswith("m365guard " if argv == ["--version"] else "Usage: ")

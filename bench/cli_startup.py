"""How long `m365guard --version`, `--help` and each command's `--help` take to start.

Each command line runs as a fresh process (the installed console script) several times; the
best wall time and the best CPU time (user + system of the child) are printed, with the ratio
to a bare `python -c pass` and to `import typer` (the floor: the CLI cannot start faster than its
framework). CPU time is the steadier figure on a shared machine. Goal: --version and --help
under 0.3 s wall on an idle machine.

    .venv/bin/python bench/cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "m365guard")
COMMAND_LINES: tuple[tuple[str, list[str]], ...] = (
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("python -c 'import typer'", [sys.executable, "-c", "import typer"]),
    ("m365guard --version", [CLI, "--version"]),
    ("m365guard --help", [CLI, "--help"]),
    ("m365guard nightly --help", [CLI, "nightly", "--help"]),
    ("m365guard emulator serve --help", [CLI, "emulator", "serve", "--help"]),
    ("m365guard nightly --bogus", [CLI, "nightly", "--bogus"]),
)
HEAVY = ("pandas", "numpy", "pyarrow", "msal", "msgraph", "aiohttp", "pydantic", "starlette",
         "uvicorn", "rich", "cryptography", "matplotlib")
LOADED = ("import sys, runpy; sys.argv = ['m365guard', *sys.argv[1:]]\n"
          "try:\n    from m365guard.cli.main import run; run()\n"
          "except SystemExit:\n    pass\n"
          f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")


def measure(argv: list[str], repeat: int) -> tuple[float, float]:
    """Best wall seconds and best child CPU seconds over `repeat` runs."""
    walls, cpus = [], []
    env = {k: v for k, v in os.environ.items() if not k.startswith("M365GUARD_")}
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), min(cpus)


def heavy_modules(args: list[str]) -> str:
    """The heavy libraries a command line imports (none is the goal for help and version)."""
    done = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True,
                          check=False)
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat
    results = {name: measure(argv, repeat) for name, argv in COMMAND_LINES}
    bare_wall, bare_cpu = results["python -c pass"]
    typer_wall, typer_cpu = results["python -c 'import typer'"]
    print(f"best of {repeat}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'command line':36} {'wall s':>7} {'cpu s':>7} {'cpu/python':>10} "
          f"{'cpu/typer':>9}  heavy imports")
    for name, argv in COMMAND_LINES:
        wall, cpu = results[name]
        heavy = heavy_modules(argv[1:]) if argv[0] == CLI else ""
        print(f"{name:36} {wall:7.3f} {cpu:7.3f} {cpu / bare_cpu:10.1f} "
              f"{cpu / typer_cpu:9.1f}  {heavy or '-'}")
    verdict = max(results["m365guard --version"][0], results["m365guard --help"][0])
    print(f"--version/--help slowest wall {verdict:.3f} s (goal < 0.3 s; floor: python "
          f"{bare_wall:.3f} s, typer {typer_wall:.3f} s)")


if __name__ == "__main__":
    main()

"""Usage errors: every command and option of the app, each mistake one line and exit 2.

The cases are not listed by hand: they are walked from the Typer app itself (every group,
command and parameter), so a command added tomorrow is covered by the same rules. Typer bundles
its own click; a handler that catches the other click's exceptions turns all of these into
tracebacks and exit 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from m365guard.cli.main import app, run
from m365guard.errors import ExitCode

CLI = Path(sys.executable).parent / "m365guard"


@dataclass(frozen=True)
class Case:
    """One mistaken command line and a word the error line must contain."""

    name: str
    argv: tuple[str, ...]
    names: str  # what the one line must mention


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def _sample(param: Any) -> str:
    """A value the parser accepts for a required parameter (all of ours are text or paths)."""
    descriptor = param.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return str(next(iter(descriptor.choices)))
    return "1" if descriptor.annotation in (int, float) else "x"


def _required(command: Any, leave_out: Any = None) -> list[str]:
    """Every required parameter but `leave_out`, given a sample value."""
    argv: list[str] = []
    for param in command.params:
        if param.required and param is not leave_out:
            if param.param_type_name == "argument":
                argv.append(_sample(param))
            else:
                argv += [param.opts[0], _sample(param)]
    return argv


def cases() -> list[Case]:
    root = get_command(app)
    found: list[Case] = [Case("m365guard: misspelt command", ("nightlyy",), "nightlyy")]
    for path, command in _walk(root, ()):
        where = " ".join(("m365guard", *path))
        if hasattr(command, "commands"):
            found.append(Case(f"{where}: unknown command", (*path, "no-such-command"),
                              "no-such-command"))
            found.append(Case(f"{where}: unknown option", (*path, "--no-such-option"),
                              "--no-such-option"))
            continue
        required = _required(command)
        found.append(Case(f"{where}: unknown option",
                          (*path, *required, "--no-such-option"), "--no-such-option"))
        if not any(p.param_type_name == "argument" for p in command.params):
            found.append(Case(f"{where}: stray argument", (*path, *required, "stray"), "stray"))
        for param in command.params:
            if param.param_type_name == "argument":
                if param.required:
                    found.append(Case(f"{where}: {param.name} missing",
                                      (*path, *_required(command, param)), "Missing argument"))
                continue
            opt = max(param.opts, key=len)
            if param.is_flag:
                found.append(Case(f"{where} {opt}=value", (*path, *required, f"{opt}=yes"), opt))
                continue
            others = _required(command, param)
            found.append(Case(f"{where} {opt} without its value", (*path, *others, opt), opt))
            if param.required:
                found.append(Case(f"{where} {opt} missing", (*path, *others), opt))
            descriptor = param.type_descriptor
            if descriptor.is_choice:
                found.append(Case(f"{where} {opt} bad choice",
                                  (*path, *others, opt, "nonsense"), "nonsense"))
            if descriptor.annotation in (int, float):
                found.append(Case(f"{where} {opt} not a number",
                                  (*path, *others, opt, "many"), opt))
            if getattr(param, "min", None) is not None:
                found.append(Case(f"{where} {opt} below its minimum",
                                  (*path, *others, opt, str(param.min - 1)), opt))
            if getattr(param, "max", None) is not None:
                found.append(Case(f"{where} {opt} above its maximum",
                                  (*path, *others, opt, str(param.max + 1)), opt))
    return found


CASES = cases()


def run_inprocess(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """The console entry point in this process (the same code as the installed script)."""
    monkeypatch.setattr(sys, "argv", ["m365guard", *argv])
    capsys.readouterr()
    try:
        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def test_the_walk_reaches_every_command_and_the_reported_mistakes() -> None:
    names = {case.name for case in CASES}
    for expected in ("m365guard nightly: unknown option", "m365guard: misspelt command",
                     "m365guard audit --from missing", "m365guard audit --to missing",
                     "m365guard findings ack --by missing", "m365guard rules --format bad choice",
                     "m365guard emulator serve --port not a number",
                     "m365guard demo --nights below its minimum",
                     "m365guard policy check: stray argument"):
        assert expected in names, sorted(names)
    assert len(CASES) > 60


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_usage_error_is_one_line_and_exit_2(case: Case, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_inprocess(case.argv, capsys, monkeypatch)
    assert code == ExitCode.USAGE, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert case.names in err, err
    assert "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing was written


def test_a_control_character_in_an_argument_stays_on_its_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_inprocess(("rules", "--format", "md\n\x1b[2Jforged"), capsys, monkeypatch)
    assert code == ExitCode.USAGE
    assert err.count("\n") == 1 and "\x1b" not in err and "forged" in err, err


@pytest.mark.parametrize("argv", [["nightly", "--bogus"], ["nightlyy"], ["audit"],
                                  ["findings", "ack", "ID", "--reason", "done"],
                                  ["rules", "--format", "nonsense"]])
def test_the_installed_script_reports_the_issue_examples_in_one_line(argv: list[str],
                                                                     tmp_path: Path) -> None:
    """As the technician ran them: the console script, a fresh process."""
    done = subprocess.run([str(CLI), *argv], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, check=False,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("M365GUARD_")})
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_a_group_without_its_command_shows_its_help(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_inprocess(("emulator",), capsys, monkeypatch)
    assert code == ExitCode.USAGE
    assert "serve" in err and "routes" in err and "Traceback" not in err

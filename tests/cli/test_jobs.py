"""The job files in jobs/ and the README's install recipe: they work as written.

systemd units are checked by `systemd-analyze verify` (where it is installed) against a scratch
root that holds exactly what the recipe installs, and by a parser: every path a unit, the cron
file or a scheduled task names is created by the recipe, or by systemd itself. The Task
Scheduler XML is parsed and its elements checked against the schema's sequences; the
PowerShell wrapper is read for the three things that decide what "Last Run Result" shows.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from configparser import ConfigParser
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"
UNITS = sorted((JOBS / "systemd").iterdir())
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
TIMERS = [unit for unit in UNITS if unit.suffix == ".timer"]
TASKS = sorted((JOBS / "windows").glob("*.xml"))
WRAPPER = JOBS / "windows" / "run-m365guard.ps1"
README = (ROOT / "README.md").read_text(encoding="utf-8")
TASK_NS = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"


def readme_block(heading: str, language: str) -> list[str]:
    """The fenced code blocks of one `### heading` section, as lines (comments dropped)."""
    section = README.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.S)
    return [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def unit_settings(path: Path) -> list[tuple[str, str]]:
    """(key, value) of every setting line of a unit file, in order (keys repeat)."""
    return [tuple(line.split("=", 1)) for line in path.read_text().splitlines()  # type: ignore[misc]
            if "=" in line and not line.startswith(("#", ";", "["))]


class Recipe:
    """What the Ubuntu recipe leaves on the machine: files, folders, accounts."""

    def __init__(self, lines: list[str]) -> None:
        self.files: set[PurePosixPath] = set()
        self.dirs: set[PurePosixPath] = set()
        self.users: set[str] = set()
        for line in lines:
            for command in line.split("&&"):
                self._run(shlex.split(command))

    def _run(self, words: list[str]) -> None:
        words = words[1:] if words[:1] == ["sudo"] else words
        flags_with_values = {"-m", "-o", "-g", "--home-dir", "--shell"}
        args, i = [], 1
        while i < len(words):
            if words[i] in flags_with_values:
                i += 2
                continue
            if not words[i].startswith("-"):
                args.append(words[i])
            i += 1
        name = words[0] if words else ""
        if name == "useradd":
            self.users.add(args[-1])
        elif name == "install" and "-d" in words:
            self.dirs.update(PurePosixPath(a) for a in args)
        elif name == "install":
            *sources, dest = args
            self.files.update(PurePosixPath(dest) / Path(s).name for s in sources) \
                if dest.endswith("/") else self.files.add(PurePosixPath(dest))
        elif name == "python3" and words[1:3] == ["-m", "venv"]:
            self.dirs.add(PurePosixPath(words[3]))
        elif name.endswith("/bin/pip") and any(a.endswith(".whl") for a in args):
            self.files.add(PurePosixPath(name).parent / "m365guard")
        elif name == "cp" and "-r" in words:
            source, dest = args
            self.files.update(PurePosixPath(dest) / path.relative_to(ROOT / source).as_posix()
                              for path in (ROOT / source).rglob("*") if path.is_file())

    def makes(self, path: PurePosixPath) -> bool:
        return path in self.files or path in self.dirs


RECIPE = Recipe(readme_block("Ubuntu 24.04", "sh"))
SYSTEMD_MADE = {PurePosixPath("/var/lib") / v for unit in SERVICES
                for k, v in unit_settings(unit) if k == "StateDirectory"} | \
               {PurePosixPath("/var/log") / v for unit in SERVICES
                for k, v in unit_settings(unit) if k == "LogsDirectory"}
ABSOLUTE = re.compile(r"(?<![\w%./-])(/[A-Za-z0-9._@-]+(?:/[A-Za-z0-9._@-]+)*)")


def named_paths(text: str) -> set[PurePosixPath]:
    """Absolute paths in a job file's non-comment lines (file:// URLs included)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    found = ABSOLUTE.findall("\n".join(lines).replace("file://", ""))
    return {PurePosixPath(p) for p in found if not p.startswith(("/bin", "/usr/", "/dev/"))}


def test_the_recipe_is_parsed() -> None:
    assert "m365guard" in RECIPE.users
    assert PurePosixPath("/opt/m365guard/venv/bin/m365guard") in RECIPE.files
    assert PurePosixPath("/opt/m365guard/jobs/systemd/m365guard-nightly.service") in RECIPE.files
    assert PurePosixPath("/etc/m365guard/credentials/m365guard.pem") in RECIPE.files


@pytest.mark.parametrize("unit", SERVICES, ids=[u.name for u in SERVICES])
def test_every_path_and_account_a_service_names_is_made_by_the_recipe(unit: Path) -> None:
    paths = named_paths(unit.read_text())
    assert paths, "no path found: the parser is broken"
    missing = {p for p in paths if not RECIPE.makes(p) and p not in SYSTEMD_MADE}
    assert not missing, f"{unit.name} names paths the recipe never creates: {sorted(missing)}"
    settings = dict(unit_settings(unit))
    assert settings["User"] in RECIPE.users
    assert "ReadWritePaths" not in settings  # only StateDirectory=/LogsDirectory= are written
    assert settings["ProtectSystem"] == "strict" and settings["UMask"] == "0077"


def test_the_server_policy_writes_only_where_systemd_lets_it() -> None:
    """The README's policies.toml for Ubuntu: state, output and log inside the unit's
    StateDirectory= / LogsDirectory= (ProtectSystem=strict makes the rest read-only)."""
    section = README.split("### Ubuntu 24.04\n", 1)[1].split("\n### ", 1)[0]
    policy = tomllib.loads(re.findall(r"```toml\n(.*?)```", section, re.S)[0])
    for value in (policy["state"]["path"], policy["output"]["dir"], policy["output"]["log_file"]):
        path = PurePosixPath(value)
        assert any(path == d or d in path.parents for d in SYSTEMD_MADE), value
        assert RECIPE.makes(path) or RECIPE.makes(path.parent), value  # cron needs them too


def test_secrets_come_from_credentials_never_from_the_unit() -> None:
    nightly = dict(unit_settings(JOBS / "systemd" / "m365guard-nightly.service"))
    source = PurePosixPath(nightly["LoadCredential"].split(":", 1)[1])
    assert source in RECIPE.files and source.parent in RECIPE.dirs
    assert nightly["Environment"].startswith("M365GUARD_CERT_PATH=%d/")
    for unit in UNITS:
        assert not re.search(r"SECRET=|PASSWORD=", unit.read_text()), unit.name


@pytest.mark.parametrize("timer", TIMERS, ids=[t.name for t in TIMERS])
def test_timers_name_uk_time_and_catch_up_after_downtime(timer: Path) -> None:
    parser = ConfigParser(strict=False)
    parser.read(timer)
    assert parser["Timer"]["OnCalendar"].endswith(" Europe/London")
    assert parser["Timer"]["Persistent"] == "true"
    assert timer.with_suffix(".service").exists()
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "calendar", parser["Timer"]["OnCalendar"]],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and "Europe/London" in done.stdout, done.stderr


def _verify(root: Path, units: list[Path]) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify in a scratch root that holds what the recipe installs."""
    (root / "usr" / "lib" / "systemd").mkdir(parents=True, exist_ok=True)
    if not (root / "usr" / "lib" / "systemd" / "system").exists():
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system",
                        symlinks=True)
    for path in RECIPE.files:
        if path.name == "m365guard" and path.parent.name == "bin":
            target = root / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("#!/bin/sh\n")
            target.chmod(0o755)
    installed = root / "etc" / "systemd" / "system"
    installed.mkdir(parents=True, exist_ok=True)
    for unit in units:
        shutil.copy(unit, installed / unit.name)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           *(str(installed / u.name) for u in units)],
                          capture_output=True, text=True, check=False)


needs_systemd = pytest.mark.skipif(
    not shutil.which("systemd-analyze") or not Path("/usr/lib/systemd/system").is_dir(),
    reason="systemd-analyze is not installed (Debian package: systemd)")


@needs_systemd
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    done = _verify(tmp_path, UNITS)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


@needs_systemd
def test_systemd_analyze_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "m365guard-nightly.service"
    broken.write_text((JOBS / "systemd" / "m365guard-nightly.service").read_text()
                      .replace("ProtectSystem=strict", "ProtectSystm=strict")
                      .replace("/opt/m365guard/venv/", "/opt/m365guard/.venv/"))
    done = _verify(tmp_path / "root", [broken])
    assert "ProtectSystm" in done.stderr and ".venv/bin/m365guard" in done.stderr


def test_cron_says_the_server_time_zone_applies_and_names_only_made_paths() -> None:
    text = (JOBS / "m365guard.cron").read_text()
    assert not re.search(r"^\s*CRON_TZ=", text, re.M)  # Debian/Ubuntu cron ignore it
    assert "SERVER'S time zone" in text and "timedatectl set-timezone Europe/London" in text
    jobs_doc = (JOBS / "README.md").read_text()
    assert "ignore `CRON_TZ`" in jobs_doc and "timedatectl set-timezone Europe/London" in jobs_doc
    made = RECIPE.files | RECIPE.dirs
    missing = {p for p in named_paths(text)
               if p not in made and p.parent not in made}  # logs are created by appending
    assert not missing, sorted(missing)
    assert all(line.split()[5] in RECIPE.users for line in text.splitlines()
               if re.match(r"^[0-9*]", line))


# Sequences in the Task Scheduler schema (taskschd.xsd; learn.microsoft.com, "Task Scheduler
# Schema": triggerBaseType and calendarTriggerType are xs:sequence, execActionType too; taskType,
# settingsType and the schedule types are xs:all and may come in any order).
SEQUENCES = {
    "CalendarTrigger": ["Enabled", "StartBoundary", "EndBoundary", "Repetition",
                        "ExecutionTimeLimit", "RandomDelay", "ScheduleByDay", "ScheduleByWeek",
                        "ScheduleByMonth", "ScheduleByMonthDayOfWeek"],
    "Exec": ["Command", "Arguments", "WorkingDirectory"],
}


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_task_xml_is_well_formed_and_in_schema_order(task: Path) -> None:
    root = ET.parse(task).getroot()  # noqa: S314 (our own file) well-formed, or this raises
    assert root.tag == f"{TASK_NS}Task"
    children = {child.tag.removeprefix(TASK_NS) for child in root}
    assert children <= {"RegistrationInfo", "Triggers", "Settings", "Data", "Principals",
                        "Actions"} and "Actions" in children
    for parent, order in SEQUENCES.items():
        for element in root.iter(f"{TASK_NS}{parent}"):
            names = [child.tag.removeprefix(TASK_NS) for child in element]
            assert all(name in order for name in names), (parent, names)
            assert names == sorted(names, key=order.index), (parent, names)
    settings = root.find(f"{TASK_NS}Settings")
    assert settings is not None
    assert settings.findtext(f"{TASK_NS}MultipleInstancesPolicy") == "IgnoreNew"
    assert settings.findtext(f"{TASK_NS}StartWhenAvailable") == "true"


def test_the_order_check_would_catch_the_old_trigger() -> None:
    names = ["StartBoundary", "Enabled", "ScheduleByDay"]
    order = SEQUENCES["CalendarTrigger"]
    assert names != sorted(names, key=order.index)


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_tasks_run_the_wrapper_where_the_windows_recipe_puts_it(task: Path) -> None:
    root = ET.parse(task).getroot()  # noqa: S314 (our own file)
    exec_ = root.find(f"{TASK_NS}Actions/{TASK_NS}Exec")
    assert exec_ is not None
    arguments = exec_.findtext(f"{TASK_NS}Arguments") or ""
    script = PureWindowsPath(re.findall(r'-File "([^"]+)"', arguments)[0])
    windows = "\n".join(readme_block("Windows Server 2022", "powershell"))
    app = PureWindowsPath(re.findall(r'\$app = "([^"]+)"', windows)[0])
    data = PureWindowsPath(re.findall(r'\$data = "([^"]+)"', windows)[0])
    assert 'Copy-Item -Recurse jobs "$app\\jobs"' in windows
    assert (JOBS / script.relative_to(app / "jobs").as_posix()) == WRAPPER
    assert PureWindowsPath(exec_.findtext(f"{TASK_NS}WorkingDirectory") or "") == data
    assert exec_.findtext(f"{TASK_NS}Command") == "powershell.exe"  # Windows PowerShell 5.1


def test_the_wrapper_hands_m365guards_exit_code_to_task_scheduler() -> None:
    text = re.sub(r"<#.*?#>", "", WRAPPER.read_text(), flags=re.S)  # the help block
    code = [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    body = "\n".join(code)
    assert not re.search(r"\$ErrorActionPreference\s*=\s*['\"]Stop", body, re.I)
    call = next(i for i, line in enumerate(code) if line.startswith("& $Exe"))
    assert code[call + 1] == "$code = $LASTEXITCODE"  # read at once, before anything else runs
    assert code[-1] == "exit $code"
    assert "2>&1" in code[call] and "Write-Log" in code[call]  # stderr too, into the log
    assert "AppendAllText" in body  # appends; one encoding (UTF-8) under 5.1 and 7
    assert not re.search(r"Write-Log[^\n]*M365GUARD_CERT_PASSWORD", body)  # never logged
    assert "Get-Acl" in body  # the password file must be the task account's alone


def test_jobs_readme_explains_last_run_result_against_the_exit_codes() -> None:
    text = (JOBS / "README.md").read_text()
    assert "Last Run Result" in text and "(0x3)" in text and "0x41301" in text
    from m365guard.errors import ExitCode

    table = re.findall(r"^\| (\d+) \|", text, re.M)
    assert sorted(int(code) for code in table) == sorted(int(code) for code in ExitCode)

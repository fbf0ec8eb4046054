"""load_policy: the shipped policies.toml loads; every mistake is one line with key, line, fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m365guard.cli.main import app
from m365guard.config import load_policy
from m365guard.errors import ExitCode, GuardError

SHIPPED = Path(__file__).resolve().parents[1] / "policies.toml"


def test_shipped_policy_loads_with_resolved_paths() -> None:
    policy = load_policy(SHIPPED)
    assert policy.school.domains == ["manbylodge.sch.uk", "manbylodge.onmicrosoft.com"]
    assert policy.school.pupil_domains == ["pupils.manbylodge.sch.uk"]
    assert policy.output.dir == SHIPPED.parent / "m365guard-output"
    assert policy.rules.for_rule("multi-recipient-without-bcc").severity == "medium"


def _error(tmp_path: Path, old: str, new: str) -> GuardError:
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "policies.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(GuardError) as caught:
        load_policy(path)
    return caught.value


def _line_of(tmp_path: Path, needle: str) -> int:
    lines = (tmp_path / "policies.toml").read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


@pytest.mark.parametrize(("old", "new", "needle", "key", "fix"), [
    ('domains = ["manbylodge.sch.uk", "manbylodge.onmicrosoft.com"]',
     'domains = ["manbylodge.sch.uk",\n  "manby lodge.sch.uk"]',
     '"manby lodge.sch.uk"', 'school.domains[1] "manby lodge.sch.uk"', '"manbylodge.sch.uk"'),
    ("first_run_days = 30", 'first_run_days = "30"', "first_run_days", "collect.first_run_days",
     "whole number"),
    ("recognise = [", "recognize = [", "recognize", "people.recognize", '"recognise"'),
    ("[rules.multi-recipient-without-bcc]", "[rules.multi-recipient-without-bc]",
     "without-bc]", "rules.multi-recipient-without-bc is not a rule id",
     '"multi-recipient-without-bcc"'),
    ('severity = "medium"', 'severity = "urgent"', "urgent", "severity", "'high'"),
    ('[rules.school-business-personal-email]\n', '[rules.school-business-personal-email]\n'
     'clause = "AUP-NOPE"\n', "AUP-NOPE", "personal-email.clause", "AUP-PERSONAL-EMAIL"),
    ("use_free_email_list = true", "use_free_email_list = 1", "use_free_email_list",
     "addresses.use_free_email_list", "true or false"),
    ("max_concurrency = 4", "max_concurrency = 0", "max_concurrency", "collect.max_concurrency",
     "greater than or equal to 1"),
    ('mailboxes = ["office@manbylodge.sch.uk"]', 'mailboxes = ["office"]', '["office"]',
     'allow.mailboxes[0] "office"', "office@manbylodge.sch.uk"),
])
def test_each_mistake_is_one_line_naming_key_line_and_fix(
        tmp_path: Path, old: str, new: str, needle: str, key: str, fix: str) -> None:
    error = _error(tmp_path, old, new)
    assert error.exit_code is ExitCode.CONFIG_ERROR
    assert "\n" not in error.message
    assert error.message.startswith(f"policies.toml line {_line_of(tmp_path, needle)}: ")
    assert key in error.message and fix in error.message


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    error = _error(tmp_path, 'cloud = "global"', "cloud = global")
    assert error.exit_code is ExitCode.CONFIG_ERROR
    assert re.match(rf"policies.toml line {_line_of(tmp_path, 'cloud =')}: TOML syntax",
                    error.message)


def test_missing_required_key_points_at_its_table(tmp_path: Path) -> None:
    error = _error(tmp_path, 'name = "Manby Lodge Infant School"\n', "")
    assert error.message.startswith(f"policies.toml line {_line_of(tmp_path, '[school]')}: ")
    assert "school.name is missing" in error.message


def test_missing_roster_is_an_input_file_error(tmp_path: Path) -> None:
    error = _error(tmp_path, '# parent_roster = "rosters/parents.csv"',
                   'parent_roster = "rosters/parents.csv"')
    assert error.exit_code is ExitCode.INPUT_FILE_ERROR
    assert "people.parent_roster" in error.message
    assert str(tmp_path / "rosters" / "parents.csv") in error.message


def test_roster_paths_resolve_against_the_policy_folder(tmp_path: Path) -> None:
    (tmp_path / "rosters").mkdir()
    (tmp_path / "rosters" / "parents.csv").write_text("email,name,pupil_upns\n")
    text = SHIPPED.read_text().replace("# parent_roster = ", "parent_roster = ")
    (tmp_path / "policies.toml").write_text(text)
    policy = load_policy(tmp_path / "policies.toml")
    assert policy.people.parent_roster == tmp_path / "rosters" / "parents.csv"


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(GuardError) as caught:
        load_policy(tmp_path / "nope.toml")
    assert caught.value.exit_code is ExitCode.CONFIG_ERROR


def test_policy_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "check", "--config", str(SHIPPED)])
    assert ok.exit_code == 0 and ok.output.startswith("OK ")
    bad = tmp_path / "policies.toml"
    bad.write_text(SHIPPED.read_text().replace("first_run_days = 30", "first_run_days = -1"))
    failed = runner.invoke(app, ["policy", "check", "--config", str(bad)])
    assert isinstance(failed.exception, GuardError)
    assert failed.exception.exit_code is ExitCode.CONFIG_ERROR


def test_rules_command_lists_every_rule_and_docs_are_current() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["rules"])
    assert listed.exit_code == 0
    assert len(listed.output.strip().splitlines()) == 4
    markdown = runner.invoke(app, ["rules", "--format", "md"]).output
    docs = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
    assert docs.read_text(encoding="utf-8") == markdown

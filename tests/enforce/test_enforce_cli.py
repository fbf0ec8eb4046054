"""Plan, approve, apply, verify, undo: the real CLI against the emulator, state in SQLite."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from enforce_site import Site
from enforce_support import (
    DOC_RULE,
    FORWARD_RULE,
    READ_ONLY_RULE,
    TEACHER,
    session_for,
    workdir,
    write_emulator,
)

from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode
from m365guard.graph.rule_write import RuleClient

__all__ = ["workdir", "write_emulator"]
HEAD = "head@manbylodge.sch.uk"
FORWARDING = "external-forwarding-personal"


@pytest.fixture
def site(tmp_path: Path, write_emulator: RunningEmulator) -> Site:
    made = Site.make(tmp_path / "site", write_emulator)
    made.nightly()
    return made


def _status(site: Site, object_id: str, rule_id: str = FORWARDING) -> str:
    findings = site.findings()
    row = findings[(findings["object_id"] == object_id) & (findings["rule_id"] == rule_id)]
    return str(row["status"].iloc[0]) if len(row) else "absent"


def _actions(plan: Path) -> dict[str, dict[str, object]]:
    body = json.loads(plan.read_text())
    return {action["object_id"]: action for action in body["actions"]}


def test_plan_approve_apply_verify_undo(site: Site) -> None:
    before = site.rule(TEACHER, FORWARD_RULE)
    assert before is not None and before["isEnabled"] is True
    plan = site.plan("--rule", FORWARDING)
    actions = _actions(plan)
    mine = actions[f"{TEACHER}/{FORWARD_RULE}"]
    assert mine["kind"] == "disable_inbox_rule" and mine["before"] == before
    assert mine["change"] == {"isEnabled": False}
    read_only = actions[f"{TEACHER}/{READ_ONLY_RULE}"]
    assert read_only["kind"] == "not_fixable" and "read-only" in str(read_only["reason"])
    assert "client-side Outlook rules" in str(read_only["warning"])
    assert plan.with_suffix(".txt").read_text().count("disable_inbox_rule") == 2

    dry = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head")
    assert dry.returncode == 0, dry.stderr
    assert "would disable" in dry.stdout and "dry run" in dry.stdout
    assert site.rule(TEACHER, FORWARD_RULE) == before and site.patches() == 0

    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.rule(TEACHER, FORWARD_RULE) == {**before, "isEnabled": False}
    assert site.rule(HEAD, DOC_RULE)["isEnabled"] is False  # type: ignore[index]
    assert site.rule(TEACHER, READ_ONLY_RULE)["isEnabled"] is True  # type: ignore[index]
    assert site.patches() == 2

    again = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert again.returncode == 0 and again.stdout.count("already done") == 2
    assert site.patches() == 2

    site.nightly()
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}") == "resolved"
    assert _status(site, f"{TEACHER}/{READ_ONLY_RULE}") == "open"  # not fixable: still open

    journal = site.cli("enforce", "journal").stdout
    action_id = str(mine["action_id"])
    assert f"{action_id}  done" in journal and "approved by Bob Head" in journal
    undo = site.cli("enforce", "undo", action_id, "--by", "Bob Head", "--yes")
    assert undo.returncode == 0, undo.stderr
    assert site.rule(TEACHER, FORWARD_RULE) == before
    assert site.patches() == 3
    site.nightly()
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}") == "open"  # the rule is back: so is it
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}", "enforcement-drift") == "absent"

    today = datetime.now(UTC).date()
    pack = site.cli("audit", "--from", str(today - timedelta(days=1)), "--to", str(today))
    assert pack.returncode == 0, pack.stderr
    with open(Path(pack.stdout.splitlines()[0]) / "enforcement.csv", newline="") as handle:
        events = list(csv.DictReader(handle))
    mine_events = [e["event"] for e in events if e["action_id"] == action_id]
    assert mine_events == ["planned", "started", "done", "verified", "undo_started", "undone"]
    done_row = next(e for e in events if e["action_id"] == action_id and e["event"] == "done")
    assert (done_row["planned_by"], done_row["approved_by"]) == ("Alice Admin", "Bob Head")
    assert json.loads(done_row["after"]) == {**before, "isEnabled": False}


def test_an_object_changed_after_planning_is_skipped(site: Site) -> None:
    plan = site.plan("--rule", FORWARDING)
    with session_for(site.emulator) as session:  # someone edits the rule in Outlook meanwhile
        session.run(_rename(session, TEACHER, FORWARD_RULE))
    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert done.returncode == int(ExitCode.ENFORCE_INCOMPLETE), done.stderr
    assert "skipped: the rule changed since it was planned (displayName)" in done.stdout
    assert site.rule(TEACHER, FORWARD_RULE)["isEnabled"] is True  # type: ignore[index]
    assert site.rule(HEAD, DOC_RULE)["isEnabled"] is False  # type: ignore[index]
    assert site.patches() == 2  # the edit, and the head's rule


async def _rename(session: object, user: str, rule_id: str) -> None:
    from msgraph.generated.models.message_rule import MessageRule

    from m365guard.graph.client import GraphSession

    assert isinstance(session, GraphSession)
    item = session.client.users.by_user_id(user).mail_folders.by_mail_folder_id("inbox") \
        .message_rules.by_message_rule_id(rule_id)
    response = await session.send(item.to_patch_request_information(
        MessageRule(display_name="Forward to home (edited)")))
    assert response.status_code == 200


def test_refusals_are_one_line(site: Site, tmp_path: Path) -> None:
    plan = site.plan("--rule", FORWARDING)
    for args, fragment in (((), "is not approved: add --approved-by NAME"),
                           (("--approved-by", " alice ADMIN "), "someone else must approve it"),
                           (("--approved-by", "Alice Admin", "--yes"), "someone else")):
        refused = site.cli("enforce", "apply", str(plan), *args)
        assert refused.returncode == int(ExitCode.ENFORCE_REFUSED), refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0] and refused.stdout == ""
    body = json.loads(plan.read_text())
    body["actions"][0]["change"] = {"isEnabled": False, "displayName": "x"}
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(body))
    changed = site.cli("enforce", "apply", str(edited), "--approved-by", "Bob", "--yes")
    assert changed.returncode == int(ExitCode.INPUT_FILE_ERROR)
    assert "was changed after it was made" in changed.stderr
    off = Site.make(tmp_path / "off", site.emulator, enabled=False)
    refused = off.cli("enforce", "plan", "--by", "Alice")
    assert refused.returncode == int(ExitCode.ENFORCE_REFUSED)
    assert refused.stderr.strip() == ("error: enforcement is off: set enabled = true under"
                                      " [enforce] in policies.toml (README: Enforcement)")
    assert site.patches() == 0


@pytest.mark.parametrize("point", [r"journalled as started", r"Graph answered",
                                   r"journalled as done"])
def test_killed_mid_apply_then_rerun_does_each_action_once(site: Site, point: str) -> None:
    plan = site.plan("--rule", FORWARDING)
    killed = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes",
                      "--verbose", kill_at=point)
    assert killed.returncode == -9, killed.stderr
    rerun = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert site.patches() == 2  # one PATCH per action, whatever point the kill came at
    assert site.rule(TEACHER, FORWARD_RULE)["isEnabled"] is False  # type: ignore[index]
    assert site.rule(HEAD, DOC_RULE)["isEnabled"] is False  # type: ignore[index]
    journal = site.cli("enforce", "journal").stdout
    assert journal.count("  done ") == 2 and "started" not in journal
    third = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes")
    assert third.stdout.count("already done") == 2 and site.patches() == 2


def test_a_re_enabled_rule_is_drift(site: Site) -> None:
    plan = site.plan("--finding", _finding_id(site, f"{TEACHER}/{FORWARD_RULE}"))
    assert len(_actions(plan)) == 1
    assert site.cli("enforce", "apply", str(plan), "--approved-by", "Bob", "--yes"
                    ).returncode == 0
    site.nightly()
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}") == "resolved"
    with session_for(site.emulator) as session:  # the teacher turns it back on
        assert RuleClient(session).set_enabled(TEACHER, FORWARD_RULE, True).ok
    site.nightly()
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}", "enforcement-drift") == "open"
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}") == "open"
    drift = site.findings().query("rule_id == 'enforcement-drift'")
    assert drift["severity"].tolist() == ["high"]
    assert "approved by Bob" in drift["summary"].iloc[0]
    with session_for(site.emulator) as session:  # off again: the drift resolves
        assert RuleClient(session).set_enabled(TEACHER, FORWARD_RULE, False).ok
    site.nightly()
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}", "enforcement-drift") == "resolved"
    assert _status(site, f"{TEACHER}/{FORWARD_RULE}") == "resolved"


def _finding_id(site: Site, object_id: str) -> str:
    findings = site.findings()
    return str(findings[findings["object_id"] == object_id]["finding_id"].iloc[0])

"""[enforce] staff_notice: the member of staff is told before their mailbox is changed, once,
and a change whose notice could not go out waits. The real CLI against the emulator."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from enforce_site import Site
from enforce_support import DOC_RULE, FORWARD_RULE, TEACHER, workdir, write_emulator

from m365guard.emulator.sendmail import outbox
from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode

__all__ = ["workdir", "write_emulator"]
HEAD = "head@manbylodge.sch.uk"
SENDER = HEAD  # the tiny tenant's office account has no mailbox
NOTICE = f"""staff_notice = true
staff_notice_text = "Turning off {{rules}} at {{school}}. Questions: {{contact}}."

[notify]
sender = "{SENDER}"
"""


def _site(tmp_path: Path, emulator: RunningEmulator, enforce: str = NOTICE) -> Site:
    made = Site.make(tmp_path / "site", emulator, enforce=enforce)
    made.nightly()
    return made


def _events(site: Site) -> list[tuple[str, str]]:
    with sqlite3.connect(site.root / "state" / "m365guard.db") as conn:
        return conn.execute("SELECT action_id, event FROM enforcement_events"
                            " WHERE event != 'planned' ORDER BY id").fetchall()


def test_each_person_is_told_once_before_the_change(
        tmp_path: Path, write_emulator: RunningEmulator) -> None:
    box = outbox(write_emulator.tenant)
    box.grant(write_emulator.settings.client_id, SENDER)
    site = _site(tmp_path, write_emulator)
    sent_before = len(box.sent)
    plan = site.plan("--rule", "external-forwarding-personal")
    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    notices = box.sent[sent_before:]
    assert sorted(n.recipients()[0] for n in notices) == sorted([TEACHER, HEAD])
    assert all(n.sender == SENDER for n in notices)
    body = next(n for n in notices if n.recipients() == [TEACHER]).message["body"]["content"]
    assert "Manby Lodge Infant School" in body and SENDER in body
    assert "Forward to home" in body  # the rule's own name, as the person knows it
    events = [event for _, event in _events(site)]
    assert events.index("staff_notified") < events.index("started")  # told first
    assert events.count("staff_notified") == 2
    assert site.rule(TEACHER, FORWARD_RULE)["isEnabled"] is False  # type: ignore[index]

    again = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert again.returncode == 0, again.stderr
    assert len(box.sent) == sent_before + 2  # a rerun tells nobody twice


def test_a_change_whose_notice_failed_waits(
        tmp_path: Path, write_emulator: RunningEmulator) -> None:
    site = _site(tmp_path, write_emulator)  # no send right on the sender: Graph says 403
    plan = site.plan("--rule", "external-forwarding-personal")
    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert done.returncode == int(ExitCode.ENFORCE_INCOMPLETE), done.stdout + done.stderr
    assert done.stdout.count("could not be sent") == 2, done.stdout
    assert "Traceback" not in done.stderr
    assert site.patches() == 0
    assert site.rule(TEACHER, FORWARD_RULE)["isEnabled"] is True  # type: ignore[index]
    assert site.rule(HEAD, DOC_RULE)["isEnabled"] is True  # type: ignore[index]

    outbox(write_emulator.tenant).grant(write_emulator.settings.client_id, SENDER)
    retry = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert site.patches() == 2


@pytest.mark.parametrize(("extra", "says"), [
    ("staff_notice = true\n", "needs [notify] sender"),
    ('staff_notice = true\nstaff_notice_text = "Dear {name}"\n[notify]\n'
     f'sender = "{SENDER}"\n', "may only name {rules}, {school} and {contact}"),
])
def test_a_notice_that_cannot_be_written_is_one_line(
        tmp_path: Path, write_emulator: RunningEmulator, extra: str, says: str) -> None:
    site = Site.make(tmp_path / "site", write_emulator, enforce=extra)
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")
    done = site.cli("enforce", "apply", str(plan), "--approved-by", "Bob Head", "--yes")
    assert done.returncode == int(ExitCode.CONFIG_ERROR), done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr

"""What a person reads and what an admin pastes: no control characters, PowerShell quoting that
cannot be broken out of, plan files that refuse edits and garbage in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from m365guard.enforce.plan import Action, Plan, printable, ps_quote, read_plan, summary_text
from m365guard.errors import ExitCode, GuardError


def test_powershell_strings_cannot_be_broken_out_of() -> None:
    assert ps_quote("o'brien@manbylodge.sch.uk") == "'o''brien@manbylodge.sch.uk'"
    assert ps_quote("x\u2019; Remove-Mailbox y") == "'x''; Remove-Mailbox y'"
    assert ps_quote("a\x1b[31m\nb") == "'a[31mb'"


def test_the_summary_strips_control_characters() -> None:
    action = Action("p-1", "f1", "external-forwarding-personal", "disable_inbox_rule",
                    "t@manbylodge.sch.uk", "t@manbylodge.sch.uk/r1", "forwards\x1b[2J",
                    "disable", before={"displayName": "Home\x07\r\n", "isEnabled": True},
                    change={"isEnabled": False})
    text = summary_text(Plan("p", "2026-12-02T07:00:00+00:00", "Alice\x1b]0;x\x07", "t",
                             [action]))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "rule 'Home', enabled" in text and printable("a\x00b") == "ab"


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format": 2}',
                                     b'{"format": 1, "plan_id": "x"}',
                                     b'{"format": 1, "plan_id": "p", "created_at": "", '
                                     b'"author": "a", "tenant_id": "t", "actions": '
                                     b'[{"kind": "delete_rule"}]}'])
def test_a_file_that_is_not_a_plan_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(GuardError) as error:
        read_plan(path)
    assert error.value.exit_code == ExitCode.INPUT_FILE_ERROR
    assert "\n" not in error.value.message
    with pytest.raises(GuardError):
        read_plan(tmp_path / "missing.json")

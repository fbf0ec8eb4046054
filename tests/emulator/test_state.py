"""Tenant state with no HTTP: loading, the clock, visibility, delta changes, save/load."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from emulator_clients import TEACHER

from m365guard.emulator.resources import parse_time
from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode, GuardError


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [str(item["id"]) for item in items]


def test_messages_dated_after_now_are_invisible_until_the_clock_reaches_them(
        tenant: Tenant) -> None:
    sent = tenant.mailbox(TEACHER).folders["sentitems"]  # type: ignore[union-attr]
    first = tenant.delta_changes(sent, None, None)
    assert "AAMkADS0005=" not in ids(first)
    assert "AAMkADS0004=" in ids(first)
    tenant.advance_to(datetime(2024, 11, 22, tzinfo=UTC))
    later = tenant.delta_changes(sent, None, None)
    assert "AAMkADS0005=" in ids(later)
    assert "AAMkADS0004=" not in ids(later)  # x-deletedAt passed


def test_clock_never_goes_back(tenant: Tenant) -> None:
    with pytest.raises(ValueError, match="cannot go back"):
        tenant.advance_to(datetime(2020, 1, 1, tzinfo=UTC))


def test_delta_after_a_round_reports_new_and_removed_only(tenant: Tenant) -> None:
    sent = tenant.mailbox(TEACHER).folders["sentitems"]  # type: ignore[union-attr]
    token = tenant.start_delta(TEACHER, "sentitems", None, tenant.now_epoch)
    tenant.advance_to(datetime(2024, 11, 22, tzinfo=UTC))
    state = tenant.delta_state(token)
    assert state is not None
    changes = tenant.delta_changes(sent, state, None)
    assert ids(changes) == ["AAMkADS0005=", "AAMkADS0004="]
    assert changes[1]["@removed"] == {"reason": "deleted"}


def test_delta_tokens_expire(tenant: Tenant) -> None:
    token = tenant.start_delta(TEACHER, "inbox", None, tenant.now_epoch)
    tenant.advance_to(datetime(2025, 1, 30, tzinfo=UTC))
    assert tenant.delta_state(token) is None


def test_time_bounded_rules_chats_and_members(tenant: Tenant) -> None:
    mailbox = tenant.mailbox(TEACHER)
    assert mailbox is not None
    assert [r["displayName"] for r in tenant.message_rules(mailbox)] == ["Forward to home"]
    tenant.advance_to(datetime(2024, 11, 23, tzinfo=UTC))
    assert len(tenant.message_rules(mailbox)) == 2
    chat = tenant.chat("19:meeting_guestchat@thread.v2")
    assert chat is not None and [m["email"] for m in chat[1]] == ["jsmith@manbylodge.sch.uk"]
    tenant.advance_to(datetime(2024, 11, 26, tzinfo=UTC))
    assert len(tenant.message_rules(mailbox)) == 1


def test_transitive_members_expand_nested_groups_once(tenant: Tenant) -> None:
    members = tenant.transitive_members("b2000000-0000-4000-8000-000000000002")
    assert len(ids(members)) == len(set(ids(members))) == 6
    assert {m["@odata.type"] for m in members} == {"#microsoft.graph.user",
                                                   "#microsoft.graph.group"}


def test_user_without_mailbox_has_none(tenant: Tenant) -> None:
    assert tenant.mailbox("a1000000-0000-4000-8000-000000000005") is None
    assert tenant.user("JSMITH@manbylodge.sch.uk") is not None


def test_audit_query_matches_window_operations_and_clock(tenant: Tenant) -> None:
    query = tenant.create_audit_query({
        "filterStartDateTime": "2024-11-01T00:00:00Z", "filterEndDateTime": "2024-12-01T00:00:00Z",
        "operationFilters": ["set-mailbox", "New-InboxRule"]}, {"Exchange"})
    stored = tenant.audit_queries[query["id"]]
    assert [r["operation"] for r in stored.records] == ["Set-Mailbox", "New-InboxRule"]
    statuses = [tenant.poll_audit_query(query["id"])["status"] for _ in range(3)]  # type: ignore[index]
    assert statuses == ["notStarted", "running", "succeeded"]


@pytest.mark.parametrize("name", ["tenant.json", "tenant.json.gz"])
def test_save_and_load_round_trip(tenant: Tenant, tmp_path: Path, name: str) -> None:
    tenant.advance_to(datetime(2024, 11, 21, tzinfo=UTC))
    path = tmp_path / name
    tenant.save(path)
    again = Tenant.load(path)
    assert again.now == parse_time("2024-11-21T00:00:00Z")
    assert again.to_document() == tenant.to_document()


def test_bad_files_are_input_errors(tmp_path: Path, tiny_doc: dict[str, Any]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(GuardError) as caught:
        Tenant.load(broken)
    assert caught.value.exit_code is ExitCode.INPUT_FILE_ERROR
    wrong = tmp_path / "wrong.json.gz"
    wrong.write_bytes(gzip.compress(orjson.dumps({**tiny_doc, "formatVersion": 2})))
    with pytest.raises(GuardError, match="formatVersion"):
        Tenant.load(wrong)
    with pytest.raises(GuardError, match="malformed"):
        Tenant.from_document({**tiny_doc, "clock": {}})

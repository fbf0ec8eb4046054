"""Graph as Microsoft documents it (issue 11), each behaviour on in the emulator by default.

Every test names the docs-contrib page it follows; the collector is driven through the real
msal and msgraph-sdk over HTTPS, and its tables compared with the emulator's truth.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from graph_support import FAST_RETRY, assert_same_table, clock, secret_conn

from m365guard.emulator import synth
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.truth import expected_tables
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.client import RetryPolicy, open_session
from m365guard.graph.collect import CollectRequest, CollectResult, collect

CHATS_ONLY = {"include_rules": False, "include_audit": False, "folders": ()}
FOREIGN_TENANT = "99999999-0000-4000-8000-000000000099"


def _night(tenant: dict[str, Any], tmp_path: Path, *, faults: FaultConfig | None = None,
           retry: RetryPolicy = FAST_RETRY, **options: Any) -> tuple[CollectResult, Any]:
    now = dt.datetime.fromisoformat(tenant["clock"]["start"])
    with start_in_thread(Tenant.from_document(tenant), workdir=tmp_path,
                         faults=faults) as emulator:
        request = CollectRequest(since=now - dt.timedelta(days=30), until=now, page_size=40,
                                 audit_poll_seconds=0.0, **options)
        with open_session(secret_conn(emulator.settings), retry) as session:
            result = collect(session, request)
        return result, emulator.stats


def _member(user: dict[str, Any], tenant_id: str) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.aadUserConversationMember",
            "id": f"m-{user['id']}", "roles": ["owner"], "displayName": user["displayName"],
            "userId": user["id"], "email": user["mail"], "tenantId": tenant_id}


def _chat(chat_id: str, members: list[dict[str, Any]], created: str) -> dict[str, Any]:
    return {"id": chat_id, "topic": "Revision", "createdDateTime": created,
            "lastUpdatedDateTime": created, "chatType": "group", "members": members}


def test_chat_members_past_25_and_members_who_are_not_entra_users(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    """chat-list.md (known issue): `$expand=members` returns at most 25 members; the rest come
    from /chats/{id}/members (chat-list-members.md). conversationMember subtypes other than
    aadUserConversationMember (v1.0 metadata) are marked non_entra_type."""
    tenant = copy.deepcopy(school.tenant)
    home = tenant["tenant"]["id"]
    created = clock(school).strftime("%Y-%m-%dT%H:%M:%SZ")
    people = [u for u in tenant["users"] if u.get("mail")][:29]
    outsider = {**_member({"id": "ext-1", "displayName": "Club Coach",
                           "mail": "coach@club.org"}, FOREIGN_TENANT)}
    big = _chat("19:big-class@thread.v2", [_member(u, home) for u in people] + [outsider],
                created)
    personal = {"@odata.type": "#microsoft.graph.microsoftAccountUserConversationMember",
                "id": "m-live", "roles": [], "displayName": "Coach (personal)",
                "userId": "live-0001", "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z"}
    small = _chat("19:personal@thread.v2", [_member(people[0], home), personal], created)
    tenant["chats"] = [*tenant["chats"], big, small]
    result, stats = _night(tenant, tmp_path, **CHATS_ONLY)
    members = result.collected["chat_members"]
    want = expected_tables(tenant, now=clock(school), since=clock(school))["chat_members"]
    assert_same_table("chat_members", members, want)
    big_members = members[members["chat_id"] == big["id"]]
    assert len(big_members) == 30 and "coach@club.org" in set(big_members["email"])
    theirs = members[members["chat_id"] == small["id"]].set_index("user_id")
    assert theirs.loc["live-0001", "non_entra_type"] == "microsoftAccountUserConversationMember"
    assert theirs.loc[people[0]["id"], "non_entra_type"] == ""
    assert stats.per_route["GET /chats/{chat_id}/members"] == 1  # once, not once per member
    coverage = result.collected["coverage"]
    assert set(coverage["status"]) <= {"ok", "no_mailbox"}, result.errors


def test_guests_are_never_asked_and_never_make_a_night_partial(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    """A B2B guest (#EXT# in userPrincipalName, user-list.md) has no mailbox in the school's
    tenant: its mail, rules and chats are not asked for, and coverage says why."""
    tenant = copy.deepcopy(school.tenant)
    guest = {"id": "guest-0001",
             "userPrincipalName": "jo_gmail.com#EXT#@manbylodge.onmicrosoft.com",
             "mail": "jo@gmail.com", "displayName": "Jo (guest)", "accountEnabled": True,
             "assignedLicenses": []}
    tenant["users"] = [*tenant["users"], guest]
    result, stats = _night(tenant, tmp_path, include_audit=False)
    coverage = result.collected["coverage"]
    theirs = coverage[coverage["mailbox"] == guest["userPrincipalName"]]
    assert set(theirs["folder"]) == {"sentitems", "inbox", "messageRules"}
    assert set(theirs["status"]) == {"no_mailbox"}
    assert theirs["reason"].str.contains("guest").all()
    assert set(coverage["status"]) <= {"ok", "no_mailbox"}, result.errors
    assert stats.per_mailbox["guest-0001"] == 0


def test_html_gateway_pages_are_transient_on_every_call_path(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    """A gateway's HTML 502/503 (not Graph's JSON envelope) is retried like any 502/503
    (throttling-limits.md: retry 503s), on the directory, SKU, group, audit and $batch calls."""
    tenant = copy.deepcopy(school.tenant)
    html = FaultConfig(seed=7, error_rate=0.25, error_statuses=(502, 503), html_error_rate=1.0)
    names = tuple(g["displayName"] for g in tenant.get("groups", []))
    result, stats = _night(tenant, tmp_path, faults=html, group_names=names)
    assert stats.faults_injected > 0
    assert result.errors == []
    now = clock(school)
    want = expected_tables(tenant, now=now, since=now - dt.timedelta(days=30))
    for name in ("users", "skus", "edu_roles", "group_members", "messages", "chats"):
        assert_same_table(name, result.collected[name], want[name])
    # nothing but HTML errors: one clear GuardError, never a JSON decoding traceback
    always = FaultConfig(error_rate=1.0, error_statuses=(503,), html_error_rate=1.0)
    with pytest.raises(GuardError) as caught:
        _night(tenant, tmp_path / "always", faults=always,
               retry=RetryPolicy(attempts=2, base_seconds=0.01, max_seconds=0.02))
    assert caught.value.exit_code == ExitCode.HOST_UNREACHABLE
    assert "Graph kept failing" in caught.value.message

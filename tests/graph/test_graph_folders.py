"""Received mail in any folder (issue 11 item 5): rules and people file mail into subfolders
and Junk Email before the night runs (delta-query-messages.md: "Delta query is a per-folder
operation"). Received mail is read as one listing of the mailbox (user-list-messages.md),
Sent Items by its delta; the emulator keeps each mailbox's folder tree as
user-list-mailfolders.md and mailfolder-list-childfolders.md show it.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from graph_support import FAST_RETRY, assert_same_table, clock, secret_conn

from m365guard.emulator import synth
from m365guard.emulator.server import start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.truth import expected_tables
from m365guard.graph.client import open_session
from m365guard.graph.collect import CollectRequest, CollectResult, collect

MAIL_ONLY = {"include_rules": False, "include_chats": False, "include_audit": False}


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moved(box: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The last `count` messages of the inbox, taken out of it (a rule files them)."""
    taken, box["inbox"] = box["inbox"][-count:], box["inbox"][:-count]
    return taken


def _filed_school(school: synth.SyntheticSchool) -> tuple[dict[str, Any], str, str]:
    """The small school with one teacher's mail filed away: two messages by a rule into an
    Inbox subfolder, two into Junk Email, one draft; a folder made tomorrow with mail that
    arrives in it then; a folder deleted tomorrow (its mail gone with it)."""
    tenant = copy.deepcopy(school.tenant)
    now = clock(school)
    user_id = max(tenant["mailboxes"], key=lambda uid: len(tenant["mailboxes"][uid]["inbox"]))
    box = tenant["mailboxes"][user_id]
    template = dict(box["inbox"][0])
    tomorrow = now + dt.timedelta(hours=20)
    arriving = [{**template, "id": f"AAMkTONIGHT{n}", "internetMessageId": f"<tonight{n}@x>",
                 "receivedDateTime": _stamp(tomorrow - dt.timedelta(hours=n + 1)),
                 "sentDateTime": _stamp(tomorrow - dt.timedelta(hours=n + 1))}
                for n in range(2)]
    box["junkemail"] = _moved(box, 2)
    box["drafts"] = [{**template, "id": "AAMkDRAFT", "isDraft": True,
                      "receivedDateTime": _stamp(now - dt.timedelta(hours=2))}]
    box["folders"] = [
        {"id": "AAMkFolderParents", "displayName": "Parents", "parentFolderId": "inbox",
         "messages": _moved(box, 2)},
        {"id": "AAMkFolderTrip", "displayName": "Trip 2024", "parentFolderId": "inbox",
         "x-visibleFrom": _stamp(now + dt.timedelta(hours=1)), "messages": arriving},
        {"id": "AAMkFolderOld", "displayName": "Old", "parentFolderId": "AAMkFolderParents",
         "x-visibleUntil": _stamp(now + dt.timedelta(hours=1)), "messages": _moved(box, 1)},
    ]
    return tenant, user_id, box["folders"][0]["messages"][0]["id"]


def _night(served: Tenant, workdir: Path, since: dt.datetime, until: dt.datetime,
           links: dict[tuple[str, str], str] | None = None) -> tuple[CollectResult, Any]:
    served.advance_to(until)
    with start_in_thread(served, workdir=workdir) as emulator:
        request = CollectRequest(since=since, until=until, delta_links=links or {},
                                 page_size=40, **MAIL_ONLY)  # type: ignore[arg-type]
        with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
            return collect(session, request), emulator.stats


def test_mail_filed_into_subfolders_junk_and_new_folders_is_checked(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    tenant, user_id, filed_id = _filed_school(school)
    now = clock(school)
    since = now - dt.timedelta(days=30)
    served = Tenant.from_document(tenant)
    first, stats = _night(served, tmp_path, since, now)
    messages = first.collected["messages"]
    want = expected_tables(tenant, now=now, since=since)["messages"]
    assert_same_table("messages", messages, want)
    theirs = messages[messages["mailbox_id"] == user_id].set_index("message_id")
    junk = [m["id"] for m in tenant["mailboxes"][user_id]["junkemail"]]
    old = tenant["mailboxes"][user_id]["folders"][2]["messages"][0]["id"]
    assert set(theirs.loc[[filed_id, *junk, old], "folder"]) == {"inbox"}  # received mail
    assert "AAMkDRAFT" not in theirs.index  # a draft was never sent or received
    assert messages["message_id"].is_unique  # Sent Items copies are not listed twice
    assert set(first.collected["coverage"]["status"]) <= {"ok", "no_mailbox"}, first.errors
    # the whole mailbox is one listing: no request per folder
    assert stats.per_route["GET /users/{user_id}/mailFolders/{folder}/messages"] == 0
    assert stats.per_route["GET /users/{user_id}/messages"] >= len(tenant["mailboxes"])

    # the next night: "Trip 2024" was made and received mail, "Old" was deleted with its mail
    tomorrow = now + dt.timedelta(days=1)
    second, _ = _night(served, tmp_path / "second", now, tomorrow, first.delta_links)
    got = second.collected["messages"]
    assert {"AAMkTONIGHT0", "AAMkTONIGHT1"} <= set(got["message_id"])
    assert_same_table("messages", got, expected_tables(tenant, now=tomorrow,
                                                       since=now)["messages"])
    assert set(second.collected["coverage"]["status"]) <= {"ok", "no_mailbox"}, second.errors


def test_the_folder_tree_is_served_as_documented(school: synth.SyntheticSchool,
                                                 tmp_path: Path) -> None:
    """user-list-mailfolders.md: only the root's children, 10 a page (the default), each with
    childFolderCount; mailfolder-list-childfolders.md for the rest; a deleted folder is gone
    (404 ErrorItemNotFound) and its mail with it."""
    tenant, user_id, _ = _filed_school(school)
    served = Tenant.from_document(tenant)
    with start_in_thread(served, workdir=tmp_path) as emulator:
        with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
            token = session.tokens.token()
        base = f"{emulator.settings.graph_endpoint}/v1.0/users/{user_id}"
        with httpx.Client(verify=emulator.settings.ca_bundle,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            top = client.get(f"{base}/mailFolders").json()
            names = [f["displayName"] for f in top["value"]]
            assert names == ["Archive", "Conversation History", "Deleted Items", "Drafts",
                             "Inbox", "Junk Email", "Outbox", "Sent Items"]
            inbox = next(f for f in top["value"] if f["displayName"] == "Inbox")
            assert inbox["childFolderCount"] == 1  # "Trip 2024" does not exist yet
            children = client.get(f"{base}/mailFolders/{inbox['id']}/childFolders").json()
            assert [f["displayName"] for f in children["value"]] == ["Parents"]
            sent = client.get(f"{base}/mailFolders/sentitems", params={"$select": "id"}).json()
            assert sent["id"].startswith("AAMkFolder-sentitems")
            served.advance_to(clock(school) + dt.timedelta(hours=2))
            gone = client.get(f"{base}/mailFolders/AAMkFolderOld/messages")
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "ErrorItemNotFound"
            parents = client.get(f"{base}/mailFolders/AAMkFolderParents").json()
            assert parents["childFolderCount"] == 0

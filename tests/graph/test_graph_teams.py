"""Teams throttling (issue 11 item 7): "Other GET API calls for Microsoft Teams | 30 rps" per
app per tenant (concepts/throttling-limits.md, includes/throttling-teams.md), and "Requests in
a batch are evaluated individually against the applicable throttling limits"
(concepts/json-batching.md). The emulator enforces it by default; the collector paces its
chat requests at 25 a second, counting $batch items. These tests keep the limit on.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
from graph_support import FAST_RETRY, assert_same_table, clock, secret_conn

from m365guard.emulator import synth
from m365guard.emulator.server import start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.truth import expected_tables
from m365guard.graph.client import open_session
from m365guard.graph.collect import CollectRequest, collect
from m365guard.graph.replies import parse_retry_after

CHATS_ONLY = {"include_rules": False, "include_audit": False, "folders": ()}


def test_a_school_of_many_chats_is_read_with_no_429(school: synth.SyntheticSchool,
                                                    tmp_path: Path) -> None:
    """Hundreds of chat lists and member lists (every user's chats: ten seconds' worth at
    Graph's limit), paced under it: no 429, every chat and member read."""
    now = clock(school)
    with start_in_thread(Tenant.from_document(school.tenant), workdir=tmp_path) as emulator:
        request = CollectRequest(since=now - dt.timedelta(days=1), until=now,
                                 **CHATS_ONLY)  # type: ignore[arg-type]
        with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
            result = collect(session, request)
        stats = emulator.stats
    teams = stats.per_route["GET /users/{user_id}/chats"] \
        + stats.per_route["GET /chats/{chat_id}/members"]
    assert teams > 10 * 30  # more than ten seconds of Graph's limit
    assert stats.throttled == 0
    want = expected_tables(school.tenant, now=now, since=now)
    for name in ("chats", "chat_members"):
        assert_same_table(name, result.collected[name], want[name])
    assert set(result.collected["coverage"]["status"]) <= {"ok", "no_mailbox"}, result.errors


def test_the_emulator_refuses_a_burst_of_teams_gets(school: synth.SyntheticSchool,
                                                    tmp_path: Path) -> None:
    """40 chat lists in two $batch requests at once: past 30 in a second each item is 429 on
    its own, with a Retry-After within the second."""
    users = [u["id"] for u in school.tenant["users"]][:40]
    with start_in_thread(Tenant.from_document(school.tenant), workdir=tmp_path) as emulator:
        with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
            token = session.tokens.token()
        with httpx.Client(base_url=f"{emulator.settings.graph_endpoint}/v1.0",
                          verify=emulator.settings.ca_bundle,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            statuses, waits = [], []
            for part in (users[:20], users[20:]):
                body = {"requests": [{"id": str(n), "method": "GET", "url": f"/users/{uid}/chats"}
                                     for n, uid in enumerate(part)]}
                answer = client.post("/$batch", json=body)
                assert answer.status_code == 200
                for item in answer.json()["responses"]:
                    statuses.append(item["status"])
                    if item["status"] == 429:
                        assert item["body"]["error"]["code"] == "TooManyRequests"
                        waits.append(parse_retry_after(item["headers"]["Retry-After"]))
    assert statuses.count(200) == 30 and statuses.count(429) == 10
    assert all(wait is not None and 0 < wait <= 1 for wait in waits)

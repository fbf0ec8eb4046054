"""The large synthetic school with every documented behaviour on (the emulator's defaults:
Teams' 30 GETs a second, 25 expanded chat members, the filtered delta's 5,000, Outlook's 4
concurrent requests per mailbox) and 10% faults: the night completes and every table equals
the emulator's truth exactly (issue 11). Minutes long: the Teams limit alone makes ~2,000 chat
lists take 80 s.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from graph_support import FAST_RETRY, assert_same_table, clock, secret_conn

from m365guard import tables
from m365guard.emulator import synth
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.truth import expected_tables
from m365guard.graph.client import open_session
from m365guard.graph.collect import CollectRequest, collect

# 10% of requests fail (429/5xx, half the gateway errors as HTML, or a dropped connection),
# 10% of $batch items are throttled on their own, 10% of delta pages come empty
TEN_PERCENT = FaultConfig(seed=11, error_rate=0.08, reset_rate=0.02, html_error_rate=0.5,
                          batch_item_throttle_rate=0.1, empty_delta_page_rate=0.1,
                          retry_after_s=(0.05, 0.128))


@pytest.mark.slow
def test_the_large_school_under_faults_equals_truth(tmp_path: Path) -> None:
    school = synth.generate("large", 3, history_days=30)
    now = clock(school)
    since = now - dt.timedelta(days=30)
    groups = tuple(g["displayName"] for g in school.tenant.get("groups", []))
    with start_in_thread(Tenant.from_document(school.tenant), workdir=tmp_path,
                         faults=TEN_PERCENT) as emulator:
        request = CollectRequest(since=since, until=now, group_names=groups,
                                 audit_poll_seconds=0.0)
        with open_session(secret_conn(emulator.settings), FAST_RETRY) as session:
            result = collect(session, request)
        stats = emulator.stats
        assert stats.faults_injected >= 0.05 * stats.total and stats.throttled > 100
    assert result.errors == []
    assert set(result.collected["coverage"]["status"]) <= {"ok", "no_mailbox"}
    want = expected_tables(school.tenant, now=now, since=since)
    for name in tables.COLLECTED:
        if name == "coverage":
            continue
        expected = want[name]
        if name == "mailbox_forwarding":  # the audit query covers [since, now] only
            expected = expected[expected["observed_at"] >= since]
        assert_same_table(name, result.collected[name], expected)

"""The findings lifecycle as pure values: no SQLite, the known findings carried night to night."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from m365guard.ledger import FindingChanges, Ledger, acknowledge, compute_ledger
from m365guard.records import FINDING_FRAME_SCHEMA, empty_frame
from m365guard.tables import make_table

T0 = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
MAILBOX = "j.smith@school.example"


def night(n: int) -> datetime:
    return T0 + timedelta(days=n)


def finding(fid: str, object_type: str, object_id: str, **extra: Any) -> dict[str, Any]:
    return {"finding_id": fid, "rule_id": "r", "severity": "high", "policy_clause": "AUP-X",
            "actor": MAILBOX, "actor_role": "staff", "object_type": object_type,
            "object_id": object_id, "summary": "s", **extra}


RULE = finding("rule-1", "inbox_rule", f"{MAILBOX}/AQAB=")
MESSAGE = finding("msg-1", "message", "<m1@school.example>",
                  occurred_at="2025-03-02T10:00:00.123456Z")
CHAT = finding("chat-1", "chat", "19:abc@thread.v2")


def coverage(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return make_table("coverage", [{"mailbox": m, "folder": f, "status": s, "items": 1}
                                   for m, f, s in rows])


RULES_READ = coverage((MAILBOX, "messageRules", "ok"))


def apply(known: pd.DataFrame, changes: FindingChanges) -> pd.DataFrame:
    """What the store holds after writing `changes`."""
    kept = known[~known["finding_id"].isin(changes.rows["finding_id"])]
    return pd.concat([kept, changes.rows], ignore_index=True)


class Nights:
    """Known findings carried from one night's ledger to the next, as the store would."""

    def __init__(self) -> None:
        self.known = empty_frame(FINDING_FRAME_SCHEMA)

    def run(self, n: int, found: list[dict[str, Any]], cov: pd.DataFrame = RULES_READ) -> Ledger:
        ledger = compute_ledger(self.known, make_table("findings", found), cov, n, night(n))
        self.known = apply(self.known, ledger.changes)
        return ledger

    def status(self, fid: str) -> str:
        return str(self.known.set_index("finding_id").loc[fid, "status"])


def ids(table: pd.DataFrame) -> list[str]:
    return table["finding_id"].tolist()


def test_nothing_known_nothing_found_gives_empty_tables_with_the_schema() -> None:
    ledger = Nights().run(1, [])
    for table in (ledger.update.new, ledger.update.still_open, ledger.changes.rows):
        assert table.empty and list(table.columns) == list(FINDING_FRAME_SCHEMA)
    assert ledger.changes.events.empty


def test_a_new_finding_opens_with_the_run_time_to_the_second() -> None:
    ledger = Nights().run(1, [MESSAGE, MESSAGE])  # the same finding twice counts once
    assert ids(ledger.update.new) == ["msg-1"]
    row = ledger.update.new.iloc[0]
    assert (row["status"], row["times_seen"], row["status_reason"]) == ("open", 1, "found")
    assert row["first_seen"] == pd.Timestamp(night(1))
    assert row["occurred_at"] == pd.Timestamp("2025-03-02T10:00:00Z")  # as state keeps it
    assert ledger.changes.events["event"].tolist() == ["opened"]
    assert ledger.changes.seen == ("msg-1",)


def test_a_snapshot_resolves_when_its_source_was_read_and_reopens() -> None:
    nights = Nights()
    nights.run(1, [RULE])
    second = nights.run(2, [])
    assert ids(second.update.resolved) == ["rule-1"] and second.update.still_open.empty
    third = nights.run(3, [RULE])
    assert ids(third.update.reopened) == ["rule-1"] and third.update.new.empty
    assert third.update.reopened.iloc[0]["times_seen"] == 2
    assert third.changes.events["reason"].tolist() == ["seen again in run 3"]


def test_nothing_resolves_from_a_source_not_read_in_full() -> None:
    nights = Nights()
    nights.run(1, [RULE, CHAT], coverage((MAILBOX, "messageRules", "ok"), (MAILBOX, "chats", "ok")))
    for cov in (coverage((MAILBOX, "messageRules", "failed")),
                coverage(("other@school.example", "messageRules", "ok")),
                coverage((MAILBOX, "inbox", "ok")),
                coverage((MAILBOX, "chats", "ok"), ("b@school.example", "chats", "failed"))):
        ledger = nights.run(2, [], cov)
        assert ledger.update.resolved.empty, cov
        assert ids(ledger.update.still_open) == ["chat-1", "rule-1"]
    every_chat = nights.run(3, [], coverage((MAILBOX, "chats", "ok"), ("b@school.example",
                                                                        "chats", "resynced")))
    assert ids(every_chat.update.resolved) == ["chat-1"]


def test_messages_stay_open_and_an_acknowledged_finding_stays_acknowledged() -> None:
    nights = Nights()
    nights.run(1, [MESSAGE], coverage((MAILBOX, "sentitems", "ok")))
    assert ids(nights.run(2, [], coverage((MAILBOX, "sentitems", "ok"))).update.still_open) == [
        "msg-1"]
    row = nights.known.set_index("finding_id").loc["msg-1"].to_dict()
    acked = acknowledge({"finding_id": "msg-1", **row}, "Head", "spoken to", night(2))
    assert acked.events["event"].tolist() == ["acknowledged"]
    assert acked.events["run_id"].isna().all()
    nights.known = apply(nights.known, acked)
    again = nights.run(3, [MESSAGE])
    assert again.update.still_open.empty and again.update.new.empty
    assert nights.status("msg-1") == "acknowledged"
    assert nights.known.set_index("finding_id").loc["msg-1", "times_seen"] == 2
    assert again.changes.events["event"].tolist() == ["seen"]

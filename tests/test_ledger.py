"""The findings lifecycle as pure values: no SQLite, the known findings carried night to night."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m365guard.forwarding import latest_forwarding, remembered
from m365guard.ledger import FindingChanges, Ledger, acknowledge, compute_ledger
from m365guard.records import FINDING_FRAME_SCHEMA, empty_frame
from m365guard.tables import SEVERITIES, SEVERITY_RANK, make_table

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

    def run(self, n: int, found: list[dict[str, Any]], cov: pd.DataFrame = RULES_READ,
            **options: Any) -> Ledger:
        ledger = compute_ledger(self.known, make_table("findings", found), cov, n, night(n),
                                **options)
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


# -- what the object does now (issue 18) -------------------------------------------------------

OFF_RULE = {**RULE, "severity": "info", "counterparts": "jo@gmail.com",
            "summary": "forwards to jo@gmail.com (the rule is turned off)"}
ON_RULE = {**OFF_RULE, "severity": "high", "summary": "forwards to jo@gmail.com"}


def test_a_finding_whose_severity_rises_is_escalated_news_and_reopens_an_ack() -> None:
    nights = Nights()
    nights.run(1, [OFF_RULE])
    row = nights.known.set_index("finding_id").loc["rule-1"].to_dict()
    nights.known = apply(nights.known, acknowledge({"finding_id": "rule-1", **row}, "IT",
                                                   "the rule is off", night(1)))
    ledger = nights.run(2, [ON_RULE])
    assert ids(ledger.update.escalated) == ["rule-1"] and ledger.update.still_open.empty
    assert ledger.update.news == {"rule-1": "escalated"}
    after = nights.known.set_index("finding_id").loc["rule-1"]
    assert (after["severity"], after["status"], after["summary"]) == (
        "high", "open", "forwards to jo@gmail.com")
    assert ledger.changes.events["event"].tolist() == ["escalated"]
    calm = nights.run(3, [ON_RULE])
    assert calm.update.news == {} and ids(calm.update.still_open) == ["rule-1"]


def test_a_severity_that_falls_is_kept_current_but_is_not_news() -> None:
    nights = Nights()
    nights.run(1, [ON_RULE])
    ledger = nights.run(2, [OFF_RULE])
    assert ledger.update.news == {} and ledger.update.escalated.empty
    assert ledger.update.still_open.iloc[0]["severity"] == "info"
    assert ledger.changes.events["reason"].tolist() == ["severity high -> info"]


def test_an_inbox_rule_re_pointed_is_retargeted_news_with_its_new_target() -> None:
    nights = Nights()
    nights.run(1, [ON_RULE])
    moved = {**ON_RULE, "counterparts": "Jo.Home@Outlook.com", "summary": "to jo.home"}
    ledger = nights.run(2, [moved])
    assert ledger.update.news == {"rule-1": "retargeted"}
    assert ledger.update.escalated.iloc[0]["counterparts"] == "Jo.Home@Outlook.com"
    same = nights.run(3, [{**moved, "counterparts": "jo.home@outlook.com"}])  # case only
    assert same.update.news == {}


def test_a_rule_not_checked_tonight_resolves_none_of_its_findings() -> None:
    nights = Nights()
    nights.run(1, [RULE])
    off = nights.run(2, [], rules_off=("r",))
    assert off.update.resolved.empty and ids(off.update.still_open) == ["rule-1"]
    assert nights.run(3, [RULE]).update.news == {}
    assert ids(nights.run(4, [], rules_off=("other",)).update.resolved) == ["rule-1"]


def test_news_of_an_earlier_run_the_same_day_stays_news_while_open() -> None:
    nights = Nights()
    first = nights.run(1, [MESSAGE, RULE])
    rerun = nights.run(1, [MESSAGE], earlier=first.changes.events)  # the rule went since
    assert rerun.update.new.empty
    assert rerun.update.news == {"msg-1": "found"}  # rule-1 resolved: not news, not listed


# -- properties over any sequence of nights ---------------------------------------------------

SNAPSHOTS = 3  # findings 0..2 are inbox rules (snapshots), 3..5 messages (events)
NIGHT = st.tuples(
    st.sets(st.integers(0, 5)),  # the findings present tonight
    st.booleans(),  # the mailbox's rules were read in full
    st.sets(st.sampled_from(["ra", "rb"])),  # rules turned off tonight
    st.tuples(*[st.sampled_from(SEVERITIES)] * 6),  # each finding's severity tonight
    st.sets(st.integers(0, 5)),  # findings a person acknowledges after the night
)


def lifecycle_finding(i: int, severity: str) -> dict[str, Any]:
    if i < SNAPSHOTS:
        return finding(f"f{i}", "inbox_rule", f"{MAILBOX}/rule{i}", rule_id="ra" if i % 2
                       else "rb", severity=severity)
    return finding(f"f{i}", "message", f"<m{i}@school.example>", rule_id="ra" if i % 2 else "rb",
                   severity=severity)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(NIGHT, min_size=1, max_size=5))
def test_any_sequence_of_nights_opens_each_finding_once_and_never_resolves_one_still_there(
        sequence: list[tuple[set[int], bool, set[str], tuple[str, ...], set[int]]]) -> None:
    nights = Nights()
    opened: list[str] = []
    for n, (present, read, off, severities, acks) in enumerate(sequence, start=1):
        state = "ok" if read else "failed"
        before = nights.known.set_index("finding_id")
        found = [lifecycle_finding(i, severities[i]) for i in sorted(present)]
        ledger = nights.run(n, found, coverage((MAILBOX, "messageRules", state)),
                            rules_off=off)
        events = ledger.changes.events
        opened += events.loc[events["event"] == "opened", "finding_id"].tolist()
        after = nights.known.set_index("finding_id")
        for i in present:  # still there: never resolved
            assert after.loc[f"f{i}", "status"] != "resolved"
        for fid in ids(ledger.update.resolved):
            i = int(fid[1:])
            assert i not in present and i < SNAPSHOTS and read
            assert before.loc[fid, "rule_id"] not in off
        for fid in events.loc[events["event"] == "escalated", "finding_id"]:
            assert SEVERITY_RANK[after.loc[fid, "severity"]] > SEVERITY_RANK[
                before.loc[fid, "severity"]]
        open_ids = set(after.index[after["status"] == "open"])
        assert set(ledger.update.news) <= open_ids
        assert set(ids(ledger.update.open_now)) == open_ids
        for i in acks & set(range(6)):
            if f"f{i}" in after.index:
                row = after.loc[f"f{i}"].to_dict()
                nights.known = apply(nights.known, acknowledge({"finding_id": f"f{i}", **row},
                                                               "IT", "dealt with", night(n)))
    assert sorted(opened) == sorted(set(opened))  # each finding opens once, ever


def test_mailbox_forwarding_resolves_on_the_export_alone_when_the_audit_log_is_not_read() -> None:
    forward = finding("fwd-1", "mailbox_forwarding", f"{MAILBOX}/jo@gmail.com")
    export_read = coverage(("", "forwardingExport", "ok"))
    nights = Nights()
    nights.run(1, [forward], export_read)
    gone = nights.run(2, [], export_read)  # the export lists the mailbox without forwarding
    assert ids(gone.update.resolved) == ["fwd-1"]
    nights.run(3, [forward], export_read)
    failed_audit = coverage(("", "forwardingExport", "ok"), ("", "auditLog", "failed"))
    assert nights.run(4, [], failed_audit).update.resolved.empty


# -- mailbox forwarding remembered across the audit log's 180 days ------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 600), st.sampled_from(["", "a@gmail.com", "b@aol.com"])),
                max_size=6),
       st.lists(st.integers(1, 179), min_size=1, max_size=6))
def test_remembered_forwarding_is_the_latest_setting_whatever_ages_out(
        settings_made: list[tuple[int, str]], gaps: list[int]) -> None:
    """Nights at most 179 days apart, each reading only the last 180 days of audit records:
    what state and tonight's records say together is the latest setting ever made."""
    def observed(day: int, address: str, n: int) -> dict[str, Any]:
        return {"mailbox": MAILBOX if n % 2 else MAILBOX.upper(), "address": address,
                "source": "audit", "observed_at": T0 + timedelta(days=day), "record_id": f"r{n}"}

    made = sorted(settings_made)
    known = make_table("mailbox_forwarding", [])
    today = 0
    for gap in gaps:
        today += gap
        window = [observed(day, address, n) for n, (day, address) in enumerate(made)
                  if today - 180 <= day <= today]
        latest = latest_forwarding(remembered(known, make_table("mailbox_forwarding", window)),
                                   keep_cleared=True)
        known = latest.drop(columns="target")
        truth = [address for day, address in made if day <= today]
        assert latest["target"].tolist() == ([truth[-1]] if truth else [])

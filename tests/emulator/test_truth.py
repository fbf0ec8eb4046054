"""expected_tables: what a correct collector yields from a tenant at a clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from m365guard import tables
from m365guard.emulator import synth
from m365guard.emulator.truth import expected_tables, forwarding_address

FUTURE = 6


@pytest.fixture(scope="module")
def school() -> synth.SyntheticSchool:
    return synth.generate("small", 23, history_days=20, future_days=FUTURE)


@pytest.fixture(scope="module")
def start(school: synth.SyntheticSchool) -> datetime:
    return datetime.fromisoformat(school.tenant["clock"]["start"])


def visible_labels(truth: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [la for la in truth if (la["visible_from"] or "") <= stamp
            and (la["visible_until"] or "~") > stamp]


def test_every_table_conforms_to_its_schema(school: synth.SyntheticSchool,
                                            start: datetime) -> None:
    collected = expected_tables(school.tenant, now=start)
    for name in tables.COLLECTED:
        frame = collected[name]
        assert list(frame.columns) == list(tables.SCHEMAS[name]), name
        assert {c: t for c, t in frame.dtypes.items()} == {
            c: pd.api.types.pandas_dtype(t) for c, t in tables.SCHEMAS[name].items()}, name
    assert collected["coverage"].empty
    assert len(collected["users"]) == len(school.tenant["users"])


def received_at(school: synth.SyntheticSchool) -> dict[str, datetime]:
    """When each inbox copy arrived (the collector does not keep it: no rule needs it)."""
    return {m["id"]: datetime.fromisoformat(m["receivedDateTime"])
            for box in school.tenant["mailboxes"].values() for m in box["inbox"]}


def test_messages_only_from_mailboxes_and_only_up_to_now(school: synth.SyntheticSchool,
                                                         start: datetime) -> None:
    now_tables = expected_tables(school.tenant, now=start)
    later = expected_tables(school.tenant, now=start + timedelta(days=FUTURE))
    messages = now_tables["messages"]
    with_mailbox = {u["id"] for u in school.tenant["users"] if u["x-hasMailbox"]}
    assert set(messages["mailbox_id"]) <= with_mailbox
    sent = messages[messages["folder"] == "sentitems"]
    inbox = messages[messages["folder"] == "inbox"]
    received = received_at(school)
    assert (sent["sent_at"] <= start).all()
    assert all(received[m] <= start for m in inbox["message_id"])
    assert len(later["messages"]) > len(messages)
    assert set(now_tables["recipients"]["message_id"]) <= set(messages["message_id"])
    expected = sum(1 for box in school.tenant["mailboxes"].values() for f, field in
                   (("sentitems", "sentDateTime"), ("inbox", "receivedDateTime"))
                   for m in box[f] if datetime.fromisoformat(m[field]) <= start
                   and not ("x-deletedAt" in m
                            and datetime.fromisoformat(m["x-deletedAt"]) <= start))
    assert len(messages) == expected


def test_since_keeps_only_the_window_and_deleted_mail_disappears(
        school: synth.SyntheticSchool, start: datetime) -> None:
    since = start + timedelta(days=2)
    now = start + timedelta(days=FUTURE)
    window = expected_tables(school.tenant, now=now, since=since)["messages"]
    received = received_at(school)
    dated = [sent if folder == "sentitems" else received[message_id] for folder, sent, message_id
             in zip(window["folder"], window["sent_at"], window["message_id"], strict=True)]
    assert len(window) and all(since <= moment <= now for moment in dated)
    deleted = {m["id"] for box in school.tenant["mailboxes"].values()
               for f in ("inbox", "sentitems")
               for m in box[f] if "x-deletedAt" in m
               and datetime.fromisoformat(m["x-deletedAt"]) <= now}
    everything = expected_tables(school.tenant, now=now)["messages"]
    assert deleted and not deleted & set(everything["message_id"])


def test_forwarding_rules_and_chats_follow_their_windows(school: synth.SyntheticSchool,
                                                         start: datetime) -> None:
    fixed_rules = [la for la in school.truth if la["object_type"] == "inbox_rule"
                   and la["visible_until"]]
    until = datetime.fromisoformat(fixed_rules[0]["visible_until"])
    rule_id = fixed_rules[0]["object_id"].split("/", 1)[1]
    before = expected_tables(school.tenant, now=until - timedelta(seconds=1))["rule_forwards"]
    after = expected_tables(school.tenant, now=until)["rule_forwards"]
    assert rule_id in set(before["rule_id"]) and rule_id not in set(after["rule_id"])
    forwards = expected_tables(school.tenant, now=start)["rule_forwards"]
    assert (~forwards["is_enabled"]).any()
    assert set(forwards["action"]) <= {"forwardTo", "redirectTo", "forwardAsAttachmentTo"}
    fixed_chat = next(la for la in school.truth if la["object_type"] == "chat"
                      and la["visible_until"])
    chat_until = datetime.fromisoformat(fixed_chat["visible_until"])
    members_before = expected_tables(school.tenant, now=chat_until - timedelta(seconds=1))
    members_after = expected_tables(school.tenant, now=chat_until)
    roles_before = members_before["chat_members"].query("chat_id == @fixed_chat['object_id']")
    roles_after = members_after["chat_members"].query("chat_id == @fixed_chat['object_id']")
    assert "guest" in set(roles_before["roles"]) and "guest" not in set(roles_after["roles"])


def test_mailbox_forwarding_comes_from_set_mailbox_up_to_now(school: synth.SyntheticSchool,
                                                             start: datetime) -> None:
    end = start + timedelta(days=FUTURE)
    forwarding = expected_tables(school.tenant, now=end)["mailbox_forwarding"]
    assert set(forwarding["source"]) == {"audit"}
    assert (forwarding["observed_at"] <= end).all()
    assert not forwarding["address"].str.startswith("smtp:").any()
    assert (forwarding["address"] == "").any()  # a cleared forwarding
    assert forwarding_address("SMTP:a@b.com") == "a@b.com"
    earlier = expected_tables(school.tenant, now=start)["mailbox_forwarding"]
    assert len(earlier) < len(forwarding)


def test_group_members_expand_nested_groups(school: synth.SyntheticSchool,
                                            start: datetime) -> None:
    members = expected_tables(school.tenant, now=start)["group_members"]
    all_staff = set(members.loc[members["group_name"] == "All Staff", "user_id"])
    teaching = set(members.loc[members["group_name"] == "Teaching Staff", "user_id"])
    assert teaching and teaching <= all_staff
    assert not members.duplicated(["group_id", "user_id"]).any()


def test_every_visible_label_object_is_in_the_expected_tables(school: synth.SyntheticSchool,
                                                               start: datetime) -> None:
    for now in (start, start + timedelta(days=FUTURE)):
        collected = expected_tables(school.tenant, now=now)
        imids = set(collected["messages"]["internet_message_id"])
        forwards = collected["rule_forwards"]
        rules = set(forwards["mailbox"] + "/" + forwards["rule_id"])
        chats = set(collected["chats"]["chat_id"])
        forwarding = set(collected["mailbox_forwarding"]["mailbox"] + "/"
                         + collected["mailbox_forwarding"]["address"])
        for label in visible_labels(school.truth, now):
            if label.get("source") == "export":
                continue
            known = {"message": imids, "inbox_rule": rules, "chat": chats,
                     "mailbox_forwarding": forwarding}[label["object_type"]]
            assert label["object_id"] in known, (now, label)

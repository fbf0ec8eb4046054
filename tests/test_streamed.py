"""The streamed path (mail in shards on disk, rules shard by shard) finds exactly what the
in-memory path finds: from the same tables, and end to end through the emulator."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pandas as pd
import pytest

from m365guard import tables
from m365guard.config import Policy, load_policy
from m365guard.demo import connection_for
from m365guard.emulator import synth
from m365guard.emulator.server import start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.synth.district import KEEP_SCHOOLS, LazyMail, district, district_tenant
from m365guard.emulator.truth import expected_tables
from m365guard.graph.client import RetryPolicy, open_session
from m365guard.graph.collect import CollectRequest, collect
from m365guard.rules import run_rules
from m365guard.shards import MailShards

SIZES = ("small", "medium")


def _policy(school: synth.SyntheticSchool, folder: Path) -> Policy:
    school.write_inputs(folder)
    (folder / "policies.toml").write_text(school.policy_toml(), encoding="utf-8")
    return load_policy(folder / "policies.toml")


def _without_mail(collected: tables.Collected) -> tables.Collected:
    return tables.Collected(**{name: frame for name, frame in collected.tables.items()
                               if name not in ("messages", "recipients")})


def _sorted(findings: pd.DataFrame) -> pd.DataFrame:
    return findings.sort_values(["rule_id", "finding_id"], ignore_index=True)


@pytest.fixture(scope="module", params=SIZES)
def school(request: pytest.FixtureRequest) -> synth.SyntheticSchool:
    return synth.generate(request.param, 5, history_days=30)


def test_rules_over_shards_equal_rules_over_the_whole_night(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    policy = _policy(school, tmp_path)
    now = dt.datetime.fromisoformat(school.tenant["clock"]["start"])
    collected = expected_tables(school.tenant, now=now)
    whole = run_rules(collected, policy)
    assert {"message", "chat", "inbox_rule"} <= set(whole["object_type"])
    shards = MailShards.split(collected, tmp_path / "mail", 7)
    read = pd.concat([messages for messages, _ in shards], ignore_index=True)
    assert len(read) == len(collected["messages"]) == shards.messages
    streamed = run_rules(_without_mail(collected), policy, shards)
    pd.testing.assert_frame_equal(_sorted(streamed), _sorted(whole))


def test_streamed_collection_finds_what_the_in_memory_one_finds(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    policy = _policy(school, tmp_path)
    now = dt.datetime.fromisoformat(school.tenant["clock"]["start"])
    request = CollectRequest(since=now - dt.timedelta(days=30), until=now,
                             group_names=tuple(g["displayName"] for g in school.tenant["groups"]),
                             audit_poll_seconds=0.0)
    retry = RetryPolicy(attempts=8, base_seconds=0.02, max_seconds=0.5, request_timeout=30.0)
    with start_in_thread(Tenant.from_document(school.tenant),
                         workdir=tmp_path / "emulator") as emulator:
        conn = connection_for(emulator.settings)
        with open_session(conn, retry) as session:
            in_memory = collect(session, request)
            streamed = collect(session, CollectRequest(**{**vars(request),
                                                          "mail_dir": tmp_path / "mail",
                                                          "mail_shards": 5}))
    assert in_memory.mail is None and streamed.mail is not None
    assert streamed.collected["messages"].empty
    shards = MailShards.open(tmp_path / "mail")
    assert shards.count == streamed.mail.count == 5
    assert sorted(path.name for path in (tmp_path / "mail").iterdir()) == sorted(
        ["manifest.json"] + [f"{name}-{shard:04d}.arrow" for shard in range(shards.count)
                             for name in ("messages", "recipients")])
    for index, name in enumerate(("messages", "recipients")):
        read = pd.concat([shard[index] for shard in shards], ignore_index=True)
        columns = list(tables.SCHEMAS[name])
        pd.testing.assert_frame_equal(
            read.sort_values(columns, ignore_index=True),
            in_memory.collected[name].sort_values(columns, ignore_index=True), obj=name)
    whole = run_rules(in_memory.collected, policy)
    assert not whole.empty
    found = run_rules(streamed.collected, policy, shards)
    pd.testing.assert_frame_equal(_sorted(found), _sorted(whole))


def test_the_district_is_generated_school_by_school_the_same_every_time() -> None:
    school = district(4, schools=5)
    assert len(school.tenant["users"]) == 5 * 1000
    assert orjson.dumps(district(4, schools=5).tenant) == orjson.dumps(school.tenant)
    tenant = district_tenant(school)
    mail = tenant.mailboxes
    assert isinstance(mail, LazyMail)
    first = school.tenant["users"][0]["id"]

    def ids(user_id: str) -> list[str]:
        box = tenant.mailbox(user_id)
        assert box is not None
        return [m.id for folder in box.folders.values() for m in folder.messages]

    seen = ids(first)
    assert seen and mail.generated == 1
    for number in range(1, 5):  # one mailbox of each other school: the first is let go
        ids(school.tenant["users"][number * 1000 + 7]["id"])
    assert len(mail.kept) == KEEP_SCHOOLS and 0 not in mail.kept
    assert ids(first) == seen and mail.generated == 6


def test_a_district_school_is_served_and_streamed_with_its_slips_found(tmp_path: Path) -> None:
    school = district(2, schools=1)
    folder = tmp_path / "policy"
    folder.mkdir()
    policy = _policy(school, folder)
    now = dt.datetime.fromisoformat(school.tenant["clock"]["start"])
    tenant = district_tenant(school)
    with start_in_thread(tenant, workdir=tmp_path / "emulator") as emulator:
        conn = connection_for(emulator.settings)
        with open_session(conn) as session:
            result = collect(session, CollectRequest(
                since=now - dt.timedelta(days=30), until=now, include_chats=False,
                include_audit=False, mail_dir=tmp_path / "mail"))
    assert result.mail is not None and not result.errors
    held = sum(len(f.messages) for box in tenant.mailboxes.kept[0].values()
               for f in box.folders.values())
    assert result.message_count == held > 15_000
    found = run_rules(result.collected, policy, result.mail)
    assert {"multi-recipient-without-bcc", "school-business-personal-email"} <= set(
        found["rule_id"])

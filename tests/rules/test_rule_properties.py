"""Property-based: run_rules on random subsets and small mutations of a synthetic school.

A night's collection is a subset of what the school holds (only mail since the last run), so a
message finding must not depend on mail the night did not read: what a subset reports, the
whole school reports too, with the same finding id. Every draw must also complete without an
exception and return one finding per object in the findings schema.

The base is four days of the small synthetic school (seed 3): every planted case and routine
near miss, a seventh of a month's mail, so an example costs well under a second on CI's
two cores. max_examples is kept low for the same reason; hypothesis still shrinks a failure.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m365guard import tables
from m365guard.config import Policy, load_policy
from m365guard.emulator.synth import generate
from m365guard.emulator.truth import expected_tables
from m365guard.rules import run_rules

# Tables that record events and settings (the rest describe who is who and stay whole).
EVENT_TABLES = ("messages", "recipients", "rule_forwards", "chats", "chat_members",
                "mailbox_forwarding")
KINDS = {"mail": ("messages", "recipients"), "inbox rules": ("rule_forwards",),
         "mailbox forwarding": ("mailbox_forwarding",), "chats": ("chats", "chat_members")}
VIOLATION = ("low", "medium", "high")
PROPERTY = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class School:
    """The whole school's tables, its policy, its labels and what run_rules finds on it (a
    plain class: hypothesis prints its repr, not its fields, in a failure report)."""

    def __init__(self, collected: tables.Collected, policy: Policy,
                 labels: list[dict[str, str]]) -> None:
        self.collected, self.policy, self.labels = collected, policy, labels
        self.findings = run_rules(collected, policy)

    def __repr__(self) -> str:
        return "School(small, seed 3, four days)"

    def replaced(self, **given: pd.DataFrame) -> tables.Collected:
        return tables.Collected(**{**self.collected.tables, **given})


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> School:
    synthetic = generate("small", 3, history_days=4)
    folder = tmp_path_factory.mktemp("property-school")
    synthetic.write_inputs(folder)
    (folder / "policies.toml").write_text(synthetic.policy_toml(), encoding="utf-8")
    policy = load_policy(Path(folder) / "policies.toml")
    now = datetime.fromisoformat(synthetic.tenant["clock"]["start"])
    collected = expected_tables(synthetic.tenant, now=now)
    return School(collected, policy, synthetic.truth)


def check_shape(findings: pd.DataFrame) -> None:
    assert list(findings.columns) == list(tables.SCHEMAS["findings"])
    assert all(findings[col].dtype == dtype for col, dtype in tables.SCHEMAS["findings"].items())
    assert not findings["finding_id"].duplicated().any()


def assert_found_on_whole(part: pd.DataFrame, whole: pd.DataFrame) -> None:
    """Every message finding of a subset is a finding of the whole, same id, no milder."""
    rank = {name: index for index, name in enumerate(tables.SEVERITIES)}
    whole_severity = dict(zip(whole["finding_id"], whole["severity"], strict=True))
    for row in part[part["object_type"] == "message"].itertuples():
        assert row.finding_id in whole_severity, row.summary
        assert rank[whole_severity[row.finding_id]] >= rank[row.severity], row.summary


def sample(frame: pd.DataFrame, seed: int, fraction: float) -> pd.DataFrame:
    keep = np.random.default_rng(seed).random(len(frame)) < fraction
    return frame[keep].reset_index(drop=True)


@given(seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.0, 1.0),
       whole_messages=st.booleans())
@PROPERTY
def test_random_subsets(school: School, seed: int, fraction: float,
                        whole_messages: bool) -> None:
    """Random rows of every event table (or random whole messages, recipients and all)."""
    given = {name: sample(school.collected[name], seed + index, fraction)
             for index, name in enumerate(EVENT_TABLES)}
    if whole_messages:
        kept = set(given["messages"]["internet_message_id"])
        messages = school.collected["messages"]
        given["messages"] = messages[messages["internet_message_id"].isin(kept)]
        recipients = school.collected["recipients"]
        given["recipients"] = recipients[recipients["message_id"].isin(
            given["messages"]["message_id"])]
    found = run_rules(school.replaced(**given), school.policy)
    check_shape(found)
    assert_found_on_whole(found, school.findings)


@given(kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32 - 1),
       one_row=st.booleans())
@PROPERTY
def test_one_kind_of_row_only(school: School, kind: str, seed: int, one_row: bool) -> None:
    """Only mail, only inbox rules, only forwarding or only chats; or just one row of it."""
    given = {name: tables.empty(name) for name in EVENT_TABLES}
    for name in KINDS[kind]:
        given[name] = school.collected[name]
    if one_row:
        first = KINDS[kind][0]
        rows = school.collected[first]
        given[first] = rows.iloc[[seed % len(rows)]] if len(rows) else rows
    found = run_rules(school.replaced(**given), school.policy)
    check_shape(found)
    assert_found_on_whole(found, school.findings)
    whole = school.findings[school.findings["object_type"].isin(
        {"mail": ["message"], "inbox rules": ["inbox_rule"], "chats": ["chat"],
         "mailbox forwarding": ["mailbox_forwarding"]}[kind])]
    if not one_row:
        assert set(found["finding_id"]) == set(whole["finding_id"])


@given(seed=st.integers(0, 2**32 - 1), copies=st.integers(1, 3))
@PROPERTY
def test_duplicated_rows_change_nothing(school: School, seed: int, copies: int) -> None:
    """Rows repeated (a page read twice, a retried batch): the same findings, once each."""
    given = {}
    for index, name in enumerate(tables.COLLECTED):
        frame = school.collected[name]
        extra = sample(frame, seed + index, 0.3)
        given[name] = pd.concat([frame, *[extra] * copies], ignore_index=True)
    found = run_rules(tables.Collected(**given), school.policy)
    check_shape(found)
    assert set(found["finding_id"]) == set(school.findings["finding_id"])


def test_empty_tables(school: School) -> None:
    """No events at all, then no tables at all."""
    quiet = school.replaced(**{name: tables.empty(name) for name in EVENT_TABLES})
    assert run_rules(quiet, school.policy).empty
    assert run_rules(tables.Collected(), school.policy).empty


@given(seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.0, 1.0))
@PROPERTY
def test_every_forward_internal(school: School, seed: int, fraction: float) -> None:
    """Every inbox rule and mailbox forwarding pointed at a colleague: no forwarding finding."""
    colleague = str(school.collected["users"]["upn"].iloc[0])
    rules = sample(school.collected["rule_forwards"], seed, fraction).assign(address=colleague)
    history = sample(school.collected["mailbox_forwarding"], seed + 1, fraction)
    history = history.assign(address=np.where(history["address"] != "", colleague, ""))
    found = run_rules(school.replaced(rule_forwards=rules, mailbox_forwarding=history),
                      school.policy)
    check_shape(found)
    assert not found["object_type"].isin(["inbox_rule", "mailbox_forwarding"]).any()


@given(seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.0, 1.0))
@PROPERTY
def test_forwarding_set_then_cleared(school: School, seed: int, fraction: float) -> None:
    """Forwarding cleared after it was set, in some mailboxes: those mailboxes are clean."""
    history = school.collected["mailbox_forwarding"]
    cleared = sample(history, seed, fraction)
    later = cleared.assign(address="", observed_at=history["observed_at"].max()
                           + pd.Timedelta(hours=1), record_id="cleared-" + cleared["record_id"])
    found = run_rules(school.replaced(mailbox_forwarding=pd.concat([history, later])),
                      school.policy)
    check_shape(found)
    forwarding = found[found["object_type"] == "mailbox_forwarding"]
    cleared_mailboxes = set(cleared["mailbox"].str.lower())
    assert not forwarding["actor"].str.lower().isin(cleared_mailboxes).any()


def test_only_near_misses(school: School) -> None:
    """Everything but the planted violations: no finding above info."""
    planted = {label["object_id"] for label in school.labels if label["expect"] == "finding"}
    messages = school.collected["messages"]
    messages = messages[~messages["internet_message_id"].isin(planted)]
    recipients = school.collected["recipients"]
    rules = school.collected["rule_forwards"]
    rules = rules[~(rules["mailbox"] + "/" + rules["rule_id"]).isin(planted)]
    history = school.collected["mailbox_forwarding"]
    address = history["address"].str.replace(r"^(?i:smtp:)", "", regex=True)
    history = history[~(history["mailbox"] + "/" + address).isin(planted)]
    chats = school.collected["chats"]
    members = school.collected["chat_members"]
    found = run_rules(school.replaced(
        messages=messages, recipients=recipients[recipients["message_id"].isin(
            messages["message_id"])], rule_forwards=rules, mailbox_forwarding=history,
        chats=chats[~chats["chat_id"].isin(planted)],
        chat_members=members[~members["chat_id"].isin(planted)]), school.policy)
    check_shape(found)
    assert not found["severity"].isin(VIOLATION).any(), found["summary"].tolist()

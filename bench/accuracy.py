"""Recall, precision and false alarms per 1,000 routine messages of the four rules, against
the synthetic schools' ground truth.

For each size and seed: generate the school, write it (tenant, truth, rosters, Exchange export)
to a temporary folder, build the policy from the tenant's x-policyHints, take the tables a
correct collection yields at the end of the period, run the rules, and score them. A low+
finding matches a "finding" label with the same rule_id and object_id (and must carry its
severity and actor); "none" and "info" labels must not get a low+ finding, and an "info" label
must get its info note; any other low+ finding is a false alarm. Routine messages are the
distinct messages the collection holds that were not planted as violations: the false-alarm
rate is false alarms per 1,000 of them. The labels come from what the generator planted
(emulator/synth), never from the rules' output.

    .venv/bin/python bench/accuracy.py [--sizes small medium quiet] [--seeds 1 2 3]
Goal: recall 100%, precision 100%, 0 false alarms per 1,000 routine messages.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from m365guard import tables
from m365guard.config import load_policy
from m365guard.emulator.synth import generate
from m365guard.emulator.truth import expected_tables
from m365guard.exports import read_forwarding_export
from m365guard.rules import run_rules

VIOLATION = ("low", "medium", "high")


@dataclass
class Score:
    """Matches and misses of one or more runs, with the offending objects kept for reports."""

    true_positive: int = 0
    routine_messages: int = 0
    missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    wrong_severity: list[str] = field(default_factory=list)
    wrong_actor: list[str] = field(default_factory=list)
    missing_info: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        found = self.true_positive + len(self.missed)
        return self.true_positive / found if found else 1.0

    @property
    def precision(self) -> float:
        flagged = self.true_positive + len(self.false_alarms)
        return self.true_positive / flagged if flagged else 1.0

    @property
    def false_alarms_per_1000(self) -> float:
        return 1000 * len(self.false_alarms) / max(self.routine_messages, 1)

    def add(self, other: Score) -> None:
        self.true_positive += other.true_positive
        self.routine_messages += other.routine_messages
        self.missed += other.missed
        self.false_alarms += other.false_alarms
        self.wrong_severity += other.wrong_severity
        self.wrong_actor += other.wrong_actor
        self.missing_info += other.missing_info

    def line(self) -> str:
        return (f"recall {self.recall:6.1%}  precision {self.precision:6.1%}  "
                f"{self.false_alarms_per_1000:.2f} false alarms per 1,000 routine messages "
                f"({self.true_positive} found, {len(self.missed)} missed, "
                f"{len(self.false_alarms)} false alarms in {self.routine_messages:,} routine "
                f"messages, {len(self.wrong_severity)} wrong severity, {len(self.wrong_actor)} "
                f"wrong actor, {len(self.missing_info)} info notes missing)")


def active(label: dict[str, Any], now: datetime) -> bool:
    """The label's violation exists at `now`."""
    start, end = label.get("visible_from"), label.get("visible_until")
    return ((start is None or datetime.fromisoformat(start) <= now)
            and (end is None or now < datetime.fromisoformat(end)))


def score(findings: pd.DataFrame, labels: list[dict[str, Any]], now: datetime,
          messages: pd.DataFrame) -> Score:
    """Compare findings with the labels active at `now`; `messages` is what was collected."""
    flagged = findings[findings["severity"].isin(VIOLATION)]
    got = {(rule, oid): (sev, actor) for rule, oid, sev, actor in zip(
        flagged["rule_id"], flagged["object_id"], flagged["severity"],
        flagged["actor"].str.lower(), strict=True)}
    notes = findings[findings["severity"] == "info"]
    noted = set(zip(notes["rule_id"], notes["object_id"], strict=True))
    result = Score()
    labelled = {(label["rule_id"], label["object_id"]) for label in labels}
    planted: set[str] = set()
    for label in labels:
        key = (label["rule_id"], label["object_id"])
        if label["expect"] == "finding":
            planted.add(label["object_id"])
        if not active(label, now):
            continue
        name = f"{label['rule_id']} {label['object_id']} ({label['description']})"
        if label["expect"] == "finding":
            if key not in got:
                result.missed.append(name)
                continue
            result.true_positive += 1
            severity, actor = got[key]
            if severity != label["severity"]:
                result.wrong_severity.append(f"{name}: got {severity}, expected "
                                             f"{label['severity']}")
            if actor != label["actor"].lower():
                result.wrong_actor.append(f"{name}: got {actor}, expected {label['actor']}")
            continue
        if key in got:
            result.false_alarms.append(f"{name}: labelled {label['expect']}, got {got[key][0]}")
        elif label["expect"] == "info" and key not in noted:
            result.missing_info.append(name)
    result.false_alarms += [f"{rule} {oid}: no label, got {sev}" for (rule, oid), (sev, _) in
                            got.items() if (rule, oid) not in labelled]
    imids = messages["internet_message_id"].where(messages["internet_message_id"] != "",
                                                  messages["message_id"])
    result.routine_messages = int((~imids.drop_duplicates().isin(planted)).sum())
    return result


def evaluate(size: str, seed: int, history_days: int = 30) -> Score:
    """Generate one school, run the rules at the end of its period and score them."""
    school = generate(size, seed, history_days=history_days)
    with tempfile.TemporaryDirectory() as folder:
        school.write(Path(folder))
        policy_file = Path(folder) / "policies.toml"
        policy_file.write_text(school.policy_toml(), encoding="utf-8")
        policy = load_policy(policy_file)
        now = datetime.fromisoformat(school.tenant["clock"]["start"])
        collected = expected_tables(school.tenant, now=now)
        assert policy.collect.exchange_forwarding_export is not None
        exported = pd.DataFrame(read_forwarding_export(policy.collect.exchange_forwarding_export),
                                columns=list(tables.SCHEMAS["mailbox_forwarding"]))
        forwarding = pd.concat([collected["mailbox_forwarding"],
                                tables.conform("mailbox_forwarding", exported)]
                               if len(exported) else [collected["mailbox_forwarding"]],
                               ignore_index=True)
        collected = tables.Collected(**{**collected.tables, "mailbox_forwarding": forwarding})
        findings = run_rules(collected, policy)
    return score(findings, school.truth, now, collected["messages"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "quiet"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    total = Score()
    for size in args.sizes:
        by_size = Score()
        for seed in args.seeds:
            result = evaluate(size, seed)
            by_size.add(result)
            print(f"{size:6} seed {seed}: {result.line()}")
            for kind in ("missed", "false_alarms", "wrong_severity", "wrong_actor",
                         "missing_info"):
                for line in getattr(result, kind):
                    print(f"  {kind.replace('_', ' ')}: {line}")
        print(f"{size:6} all seeds: {by_size.line()}")
        total.add(by_size)
    print(f"overall: {total.line()}")
    print("goal: recall 100%, precision 100%, 0 false alarms per 1,000 routine messages")


if __name__ == "__main__":
    main()

"""Recall and precision of the four rules against the synthetic schools' ground truth.

For each seed: generate the school, write it (tenant, truth, rosters, Exchange export) to a
temporary folder, build the policy from the tenant's x-policyHints, take the tables a correct
collection yields at the end of the period, run the rules, and score them. A low+ finding
matches a "finding" label with the same rule_id and object_id; "none" and "info" labels must
not get a low+ finding; any other low+ finding counts against precision.

    .venv/bin/python bench/accuracy.py [--size small] [--seeds 1 2 3 4 5]
Goal: recall 100%, precision >= 99%.
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
    missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    wrong_severity: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        found = self.true_positive + len(self.missed)
        return self.true_positive / found if found else 1.0

    @property
    def precision(self) -> float:
        flagged = self.true_positive + len(self.false_alarms)
        return self.true_positive / flagged if flagged else 1.0

    def add(self, other: Score) -> None:
        self.true_positive += other.true_positive
        self.missed += other.missed
        self.false_alarms += other.false_alarms
        self.wrong_severity += other.wrong_severity


def active(label: dict[str, Any], now: datetime) -> bool:
    """The label's violation exists at `now`."""
    start, end = label.get("visible_from"), label.get("visible_until")
    return ((start is None or datetime.fromisoformat(start) <= now)
            and (end is None or now < datetime.fromisoformat(end)))


def score(findings: pd.DataFrame, labels: list[dict[str, Any]], now: datetime) -> Score:
    """Compare low+ findings with the labels active at `now`."""
    flagged = findings[findings["severity"].isin(VIOLATION)]
    got = dict(zip(zip(flagged["rule_id"], flagged["object_id"], strict=True),
                   flagged["severity"], strict=True))
    result = Score()
    expected: set[tuple[str, str]] = set()
    for label in labels:
        key = (label["rule_id"], label["object_id"])
        if not active(label, now):
            continue
        name = f"{label['rule_id']} {label['object_id']} ({label['description']})"
        if label["expect"] == "finding":
            expected.add(key)
            if key not in got:
                result.missed.append(name)
                continue
            result.true_positive += 1
            if got[key] != label["severity"]:
                result.wrong_severity.append(f"{name}: got {got[key]}, "
                                             f"expected {label['severity']}")
        elif key in got:
            result.false_alarms.append(f"{name}: labelled {label['expect']}, got {got[key]}")
    result.false_alarms += [f"{rule} {oid}: no label, got {sev}" for (rule, oid), sev in
                            got.items() if (rule, oid) not in expected
                            and not any((lab["rule_id"], lab["object_id"]) == (rule, oid)
                                        for lab in labels)]
    return result


def evaluate(size: str, seed: int) -> Score:
    """Generate one school, run the rules at the end of its period and score them."""
    school = generate(size, seed)
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
    return score(findings, school.truth, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    total = Score()
    for seed in args.seeds:
        result = evaluate(args.size, seed)
        total.add(result)
        print(f"{args.size} seed {seed}: recall {result.recall:.1%} precision "
              f"{result.precision:.1%} ({result.true_positive} found, {len(result.missed)} "
              f"missed, {len(result.false_alarms)} false alarms, "
              f"{len(result.wrong_severity)} wrong severity)")
        for line in result.missed:
            print("  missed:", line)
        for line in result.false_alarms:
            print("  false alarm:", line)
        for line in result.wrong_severity:
            print("  severity:", line)
    print(f"overall: recall {total.recall:.1%} (goal 100%), precision {total.precision:.1%} "
          f"(goal >= 99%)")


if __name__ == "__main__":
    main()

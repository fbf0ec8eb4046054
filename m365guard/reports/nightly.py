"""The nightly outputs: findings-YYYY-MM-DD.csv for the technician and run-YYYY-MM-DD.json.

The CSV lists what needs attention after tonight's run: the day's news first (found, back
after being resolved, escalated, retargeted, or back after its exception ended; `why_new` says
which), then everything still open, highest severity first; findings an exception covers are
listed last with `accepted_until`, never as new. A second run on the same day keeps the news of
the first (the technician may not have read it; ledger.py). The JSON is the run's own record:
window, outcome, what was and was not covered and why, so a clean night can be told apart from
a night that could not look.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from m365guard.ledger import FindingsUpdate
from m365guard.records import FINDING_FRAME_SCHEMA, RunRecord, empty_frame, iso
from m365guard.reports.csvfile import csv_bytes
from m365guard.tables import READ_IN_FULL, SCHEMAS, SEVERITIES, SEVERITY_RANK, conform

NIGHTLY_COLUMNS: tuple[str, ...] = (
    *SCHEMAS["findings"],
    "first_seen",
    "last_seen",
    "times_seen",
    "status",
    "is_new",
    "why_new",
    "accepted_until",
)


@dataclass(frozen=True)
class NightlyPaths:
    """The files one night wrote."""

    findings_csv: Path
    run_json: Path


def nightly_findings(update: FindingsUpdate) -> pd.DataFrame:
    """The findings CSV table: the day's news (is_new) first, then open, then accepted, each by
    severity."""
    table = update.open_now
    if table.empty:
        table = empty_frame(FINDING_FRAME_SCHEMA)
    ids = table["finding_id"].astype(str)
    accepted_until = ids.map(update.accepted).fillna("")
    why_new = ids.map(update.news).fillna("").where(accepted_until == "", "")
    table = table.assign(is_new=(why_new != "").astype(bool), why_new=why_new,
                         accepted_until=accepted_until,
                         _accepted=accepted_until != "",
                         _rank=table["severity"].map(SEVERITY_RANK).fillna(-1))
    table = table.sort_values(
        ["is_new", "_accepted", "_rank", "occurred_at", "finding_id"],
        ascending=[False, True, False, True, True],
        kind="stable",
        na_position="last",
    )
    return table.loc[:, list(NIGHTLY_COLUMNS)].reset_index(drop=True)


def run_summary(
    run: RunRecord, update: FindingsUpdate, coverage: pd.DataFrame
) -> dict[str, Any]:
    """The run JSON as a dict: window, outcome, coverage with gaps and reasons, counts."""
    coverage = conform("coverage", coverage)
    covered = coverage["status"].isin(READ_IN_FULL)
    gaps = coverage[~covered].sort_values(["mailbox", "folder"], kind="stable")
    open_now = update.open_now
    by_rule: dict[str, dict[str, int]] = {}
    for rule_id, severity in zip(open_now["rule_id"], open_now["severity"], strict=True):
        counts = by_rule.setdefault(str(rule_id), {})
        counts[str(severity)] = counts.get(str(severity), 0) + 1
    new_findings = update.fresh
    return {
        "run_id": run.run_id,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at) if run.finished_at else None,
        "window": {
            "start": iso(run.window_start) if run.window_start else None,
            "end": iso(run.window_end) if run.window_end else None,
        },
        "outcome": run.outcome,
        "coverage": {
            "mailboxes": int(coverage.loc[coverage["mailbox"] != "", "mailbox"].nunique()),
            "mailboxes_with_gaps": int(gaps["mailbox"].nunique()),
            "folders_read": int(covered.sum()),
            "folders_not_read": len(gaps),
            "items_read": int(coverage["items"].fillna(0).sum()),
            "uncovered": [
                {
                    "mailbox": str(row["mailbox"]),
                    "folder": str(row["folder"]),
                    "status": str(row["status"]),
                    "reason": str(row["reason"]),
                }
                for row in gaps.to_dict("records")
            ],
        },
        "findings": {
            "new": len(update.new),
            "reopened": len(update.reopened),
            "still_open": len(update.still_open),
            "resolved": len(update.resolved),
            "escalated": len(update.escalated),
            "news_today": len(update.alerting()),
            "accepted": len(update.accepted),
            "new_by_severity": _by_severity(new_findings),
            "open_by_severity": _by_severity(open_now),
            "open_by_rule": dict(sorted(by_rule.items())),
        },
        "counts": run.counts,
        "granted_permissions": list(run.granted_permissions),
        "rules_off": list(run.rules_off),
        "error": run.error,
    }


def _by_severity(findings: pd.DataFrame) -> dict[str, int]:
    counts = findings["severity"].value_counts()
    return {severity: int(counts.get(severity, 0)) for severity in reversed(SEVERITIES)}


def nightly_paths(out_dir: Path, run: RunRecord) -> NightlyPaths:
    """Where a run's reports go: findings-DATE.csv and run-DATE.json, DATE its UTC start date."""
    day = run.night.isoformat()
    return NightlyPaths(findings_csv=out_dir / f"findings-{day}.csv",
                        run_json=out_dir / f"run-{day}.json")


def nightly_files(
    out_dir: Path, run: RunRecord, update: FindingsUpdate, coverage: pd.DataFrame
) -> dict[Path, bytes]:
    """The run's report files and their bytes, for the caller to put in place."""
    paths = nightly_paths(out_dir, run)
    return {
        paths.findings_csv: csv_bytes(nightly_findings(update)),
        paths.run_json: orjson.dumps(run_summary(run, update, coverage),
                                     option=orjson.OPT_INDENT_2) + b"\n",
    }

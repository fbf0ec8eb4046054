"""The audit pack for the annual policy review and the governors: evidence, not opinion.

Why: a review must see what was checked, when, how completely, what was found and what was done.
So the pack lists every policy clause with how it is covered (automatic / partial / manual),
every finding in the period with its status history, every night of the period (a night with
no run is itself reported: monitoring that did not run is a finding about monitoring), coverage
per mailbox, the current forwarding inventory and the permissions the app held. manifest.csv
carries the SHA-256 of every file so the pack can be shown to be unaltered. The pack is written
as a folder and a zip; both appear only when complete.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Literal

import pandas as pd

from m365guard.clauses import CLAUSES
from m365guard.errors import ExitCode, GuardError
from m365guard.files import ensure_private_dir, write_bytes_atomic, write_text_atomic
from m365guard.records import FINDING_FRAME_SCHEMA, RunRecord, best_outcome, runs_frame
from m365guard.reports.csvfile import write_csv
from m365guard.reports.weekly import status_at
from m365guard.tables import READ_IN_FULL

CoverageLevel = Literal["automatic", "partial", "manual"]


@dataclass(frozen=True)
class ClauseCoverage:
    """How one clause is checked: the level, the rules that check it, and a note for readers."""

    level: CoverageLevel
    rule_ids: tuple[str, ...] = ()
    note: str = ""


def clause_coverage(rules: Sequence[ModuleType]) -> dict[str, ClauseCoverage]:
    """Clause id -> how m365guard covers it, from CLAUSES and the rules that name each clause."""
    return {
        clause_id: ClauseCoverage(
            level=clause.coverage,
            rule_ids=tuple(rule.RULE_ID for rule in rules if clause_id == rule.CLAUSE),
            note=clause.how_checked,
        )
        for clause_id, clause in CLAUSES.items()
    }


@dataclass(frozen=True)
class AuditInputs:
    """What the pack is built from, as state holds it for the period."""

    runs: list[RunRecord]  # runs started in the period, oldest first
    coverage: pd.DataFrame  # their coverage rows (coverage schema plus run_id)
    findings: pd.DataFrame  # findings active in the period (FINDING_FRAME_SCHEMA)
    history: pd.DataFrame  # those findings' events (EVENT_SCHEMA)
    inventory: pd.DataFrame  # the latest forwarding inventory
    enforcement: pd.DataFrame  # the enforcement journal's actions in the period
    breach_log: pd.DataFrame  # breach-log entries found in the period, and older undecided
    exceptions: pd.DataFrame  # every exception in force at some time in the period


@dataclass(frozen=True)
class AuditPack:
    """Where the pack was written."""

    folder: Path
    zip_path: Path
    files: tuple[str, ...]


def period_bounds(period_from: date, period_to: date) -> tuple[datetime, datetime]:
    """The period as [start, end) in UTC; GuardError when the days are given backwards."""
    if period_to < period_from:
        raise GuardError(
            f"--to {period_to} is before --from {period_from}; give the period in order",
            ExitCode.USAGE,
        )
    start = datetime.combine(period_from, datetime.min.time(), tzinfo=UTC)
    return start, datetime.combine(period_to + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def nights_table(runs: list[RunRecord], period_from: date, period_to: date) -> pd.DataFrame:
    """Every night of the period: the best outcome of the runs that started that day, or missed."""
    by_day: dict[date, list[RunRecord]] = {}
    for run in runs:
        by_day.setdefault(run.night, []).append(run)
    rows = []
    day = period_from
    while day <= period_to:
        day_runs = by_day.get(day, [])
        best = best_outcome([r.outcome for r in day_runs])
        rows.append({"date": day, "outcome": best, "runs": len(day_runs),
                     "run_ids": ";".join(str(r.run_id) for r in day_runs)})
        day += timedelta(days=1)
    return pd.DataFrame(rows, columns=["date", "outcome", "runs", "run_ids"])


TENANT_WIDE = "(tenant-wide sources)"  # coverage rows with no mailbox: audit log, Exchange export


def mailbox_coverage_table(coverage: pd.DataFrame) -> pd.DataFrame:
    """Per mailbox: runs that read it, runs that read all of it, runs with a gap, the last gap."""
    columns = ["mailbox", "runs_seen", "runs_fully_read", "runs_with_gaps", "last_gap_run_id",
               "last_gap_folder", "last_gap_reason"]
    rows = []
    coverage = coverage.assign(mailbox=coverage["mailbox"].replace("", TENANT_WIDE))
    for mailbox, group in coverage.groupby("mailbox", sort=True):
        gap_rows = group[~group["status"].isin(READ_IN_FULL)]
        gap_runs = set(gap_rows["run_id"])
        runs = set(group["run_id"])
        last_gap = gap_rows.sort_values("run_id", kind="stable").tail(1).to_dict("records")
        rows.append({
            "mailbox": mailbox, "runs_seen": len(runs), "runs_fully_read": len(runs - gap_runs),
            "runs_with_gaps": len(gap_runs),
            "last_gap_run_id": last_gap[0]["run_id"] if last_gap else None,
            "last_gap_folder": last_gap[0]["folder"] if last_gap else "",
            "last_gap_reason": (f"{last_gap[0]['status']}: {last_gap[0]['reason']}"
                                if last_gap else ""),
        })
    return pd.DataFrame(rows, columns=columns).astype({"last_gap_run_id": "Int64"})


def runs_table(runs: list[RunRecord], coverage: pd.DataFrame) -> pd.DataFrame:
    """The run history with how many mailboxes each run read fully."""
    table = runs_frame(runs)
    coverage = coverage[coverage["mailbox"] != ""]
    gaps = coverage[~coverage["status"].isin(READ_IN_FULL)]
    table["mailboxes"] = [int(coverage.loc[coverage["run_id"] == run_id, "mailbox"].nunique())
                          for run_id in table["run_id"]]
    table["mailboxes_with_gaps"] = [
        int(gaps.loc[gaps["run_id"] == run_id, "mailbox"].nunique()) for run_id in table["run_id"]
    ]
    return table


def permissions_table(runs: list[RunRecord]) -> pd.DataFrame:
    """Each application permission seen in the period and how many runs held it."""
    held: dict[str, list[int]] = {}
    for run in runs:
        for permission in run.granted_permissions:
            held.setdefault(permission, []).append(run.run_id)
    latest = set(runs[-1].granted_permissions) if runs else set()
    rows = [{"permission": name, "runs_holding": len(ids), "first_run_id": min(ids),
             "last_run_id": max(ids), "held_in_latest_run": name in latest}
            for name, ids in sorted(held.items())]
    return pd.DataFrame(rows, columns=["permission", "runs_holding", "first_run_id",
                                       "last_run_id", "held_in_latest_run"])


def clauses_table(
    clauses: Mapping[str, str],
    rule_coverage: Mapping[str, ClauseCoverage],
    findings: pd.DataFrame,
    history: pd.DataFrame,
    start: datetime,
    end: datetime,
) -> pd.DataFrame:
    """Every clause with its coverage level, rules, and the period's figures."""
    in_period = history[(history["at"] >= start) & (history["at"] < end)]
    status = status_at(history, end)
    rows = []
    for clause_id, text in clauses.items():
        cover = rule_coverage.get(
            clause_id, ClauseCoverage("manual", note="not checked by m365guard")
        )
        ids = set(findings.loc[findings["policy_clause"] == clause_id, "finding_id"])

        def events(*names: str, ids: set[str] = ids) -> int:
            mask = in_period["event"].isin(names) & in_period["finding_id"].isin(ids)
            return int(in_period.loc[mask, "finding_id"].nunique())

        rows.append({
            "clause_id": clause_id, "clause": text, "coverage": cover.level,
            "rule_ids": ";".join(cover.rule_ids), "how": cover.note,
            "findings_in_period": events("opened", "reopened", "seen", "resolved",
                                         "acknowledged", "escalated", "retargeted"),
            "opened_in_period": events("opened"),
            "open_at_period_end": int(status[status.index.isin(ids)].eq("open").sum()),
            "resolved_in_period": events("resolved"),
            "acknowledged_in_period": events("acknowledged"),
        })
    return pd.DataFrame(rows, columns=[
        "clause_id", "clause", "coverage", "rule_ids", "how", "findings_in_period",
        "opened_in_period", "open_at_period_end", "resolved_in_period", "acknowledged_in_period"])


def _readme(
    school_name: str, period_from: date, period_to: date, now: datetime,
    clauses: pd.DataFrame, nights: pd.DataFrame, findings: pd.DataFrame,
) -> str:
    counts = nights["outcome"].value_counts()
    lines = [
        f"# m365guard audit pack: {school_name}",
        "",
        f"Period: {period_from:%d %B %Y} to {period_to:%d %B %Y}. Built {now:%d %B %Y %H:%M} UTC.",
        "",
        "## Monitoring (AUP-MONITORING)",
        "",
        f"- Nights in the period: {len(nights)}",
        f"- Checked completely: {int(counts.get('complete', 0))}",
        f"- Checked partly (some mailboxes or folders could not be read):"
        f" {int(counts.get('partial', 0))}",
        f"- Run failed: {int(counts.get('failed', 0))}",
        f"- No run at all (missed): {int(counts.get('missed', 0))}",
        "",
        "Nights that were missed, failed or partial were not fully checked: see nights.csv and",
        "mailbox-coverage.csv for which, and why.",
        "",
        "## Clauses",
        "",
        "| clause | coverage | findings in period | open at end |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {row['clause_id']} | {row['coverage']} | {row['findings_in_period']}"
        f" | {row['open_at_period_end']} |"
        for row in clauses.to_dict("records")
    ]
    lines += [
        "",
        f"Findings active in the period: {len(findings)}.",
        "",
        "## Files",
        "",
        "| file | what it holds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {what} |" for name, what in FILE_DESCRIPTIONS.items()]
    lines.append("")
    return "\n".join(lines)


FILE_DESCRIPTIONS = {
    "README.md": "this index",
    "clauses.csv": "every policy clause, how it is covered (automatic/partial/manual), figures",
    "findings.csv": "every finding active in the period, with its status at the period end",
    "finding-history.csv": "the status history of those findings (opened/seen/resolved/...)",
    "runs.csv": "every run in the period: window, outcome, mailboxes read, errors",
    "nights.csv": "every night of the period: complete, partial, failed or missed",
    "mailbox-coverage.csv": "per mailbox: runs that read it fully, runs with gaps and why",
    "inventory.csv": "the current inbox-rule forwarding and mailbox forwarding inventory",
    "permissions.csv": "the Microsoft Graph application permissions the app held",
    "enforcement.csv": "every enforcement step: planned, approved, applied, verified, undone",
    "breach-log.csv": "every exposure of parents' or personal addresses: found, 72-hour deadline,"
                      " the DPO's decision with who and when",
    "exceptions.csv": "accepted exceptions in force in the period: what, who, why, until",
    "manifest.csv": "SHA-256 of every other file, to show the pack is unaltered",
}


def build_audit_pack(
    inputs: AuditInputs,
    period_from: date,
    period_to: date,
    out_dir: Path,
    clauses: Mapping[str, str],
    rule_coverage: Mapping[str, ClauseCoverage],
    now: datetime,
    *,
    school_name: str,
) -> AuditPack:
    """Write audit-pack-FROM_TO/ and audit-pack-FROM_TO.zip in out_dir (replacing older ones)."""
    start, end = period_bounds(period_from, period_to)
    unknown = sorted(set(rule_coverage) - set(clauses))
    if unknown:
        raise GuardError(f"coverage map names unknown clauses {unknown}", ExitCode.CONFIG_ERROR)
    runs, coverage, findings, history = (inputs.runs, inputs.coverage, inputs.findings,
                                         inputs.history)
    status = status_at(history, end)
    findings_out = findings.assign(
        status_at_period_end=findings["finding_id"].map(status).fillna("")
    ).loc[:, [*FINDING_FRAME_SCHEMA, "status_at_period_end"]]
    clause_rows = clauses_table(clauses, rule_coverage, findings, history, start, end)
    nights = nights_table(runs, period_from, period_to)
    tables = {
        "clauses.csv": clause_rows,
        "findings.csv": findings_out,
        "finding-history.csv": history,
        "runs.csv": runs_table(runs, coverage),
        "nights.csv": nights,
        "mailbox-coverage.csv": mailbox_coverage_table(coverage),
        "inventory.csv": inputs.inventory,
        "permissions.csv": permissions_table(runs),
        "enforcement.csv": inputs.enforcement,
        "breach-log.csv": inputs.breach_log,
        "exceptions.csv": inputs.exceptions,
    }
    name = f"audit-pack-{period_from.isoformat()}_{period_to.isoformat()}"
    ensure_private_dir(out_dir)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}."))
    try:
        write_text_atomic(staging / "README.md",
                          _readme(school_name, period_from, period_to, now, clause_rows, nights,
                                  findings))
        for filename, table in tables.items():
            write_csv(table, staging / filename)
        files = sorted(FILE_DESCRIPTIONS)
        write_csv(_manifest(staging, [f for f in files if f != "manifest.csv"]),
                  staging / "manifest.csv")
        zip_path = write_bytes_atomic(out_dir / f"{name}.zip", _zip(staging, name, files, now))
        folder = out_dir / name
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return AuditPack(folder=folder, zip_path=zip_path, files=tuple(files))


def _manifest(folder: Path, files: list[str]) -> pd.DataFrame:
    rows = []
    for filename in files:
        data = (folder / filename).read_bytes()
        rows.append({"file": filename, "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()})
    return pd.DataFrame(rows, columns=["file", "bytes", "sha256"])


def _zip(folder: Path, name: str, files: list[str], now: datetime) -> bytes:
    stamp = now.astimezone(UTC)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for filename in files:
            info = zipfile.ZipInfo(f"{name}/{filename}", date_time=stamp.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            archive.writestr(info, (folder / filename).read_bytes())
    return buffer.getvalue()


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the finished staging folder at `folder`, replacing an older pack of the same period."""
    os.chmod(staging, 0o700)
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(folder, retired)
        os.replace(staging, folder)
        shutil.rmtree(retired)
    else:
        os.replace(staging, folder)

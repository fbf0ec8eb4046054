"""What the audit command reads from state: the values the audit pack is written from.

The reports (reports/) never open the state file; the commands here and the demo read it and
hand them values (weekly_input.py does the same for the weekly outputs).
"""

from __future__ import annotations

from datetime import date

from m365guard.enforce.report import enforcement_table
from m365guard.notify import breaches, exceptions
from m365guard.reports.audit import AuditInputs, period_bounds
from m365guard.state import StateDB


def audit_inputs(db: StateDB, period_from: date, period_to: date) -> AuditInputs:
    """The runs, coverage, findings, history and inventory of the period."""
    start, end = period_bounds(period_from, period_to)
    runs = db.runs_between(start, end)
    findings = db.findings_between(start, end)
    return AuditInputs(
        runs=runs,
        coverage=db.coverage(run.run_id for run in runs),
        findings=findings,
        history=db.finding_history(findings["finding_id"]),
        inventory=db.latest_inventory(),
        enforcement=enforcement_table(db.path, start, end),
        breach_log=breaches.for_audit(db.path, db.findings(), start, end),
        exceptions=exceptions.for_audit(db.path, start, end),
    )

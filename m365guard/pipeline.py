"""The nightly job: Graph -> tables -> rules -> ledger -> state -> reports, in that order.

`run_nightly` holds the state lock for the whole run, so two scheduled runs never overlap. The
one transaction is here in plain sight: inside it the ledger is computed from the findings state
holds, the reports are written from those values to temp files, and the run's rows are written;
only after COMMIT are the reports renamed into place. A run killed before COMMIT leaves the
earlier runs' state exactly as it was (and no report of its own): the next run repeats the
unfinished work (its delta links and read marks never advanced) and reports the same findings
as new. Before Graph is contacted the state and the local inputs are checked (preflight.py);
after COMMIT the state is pruned and a backup kept (backups.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from m365guard import stopping
from m365guard.config import Policy
from m365guard.enforce import verify as enforcement
from m365guard.enforce.exchange_export import with_posture
from m365guard.errors import ExitCode, GuardError
from m365guard.exports import ForwardingExport
from m365guard.files import StagedFiles
from m365guard.forwarding import latest_forwarding, remembered
from m365guard.graph.client import RetryPolicy
from m365guard.graph.collect import CollectRequest, CollectResult, collect, open_session
from m365guard.graph.settings import ConnectionSettings
from m365guard.ledger import FindingsUpdate, build_inventory, compute_ledger
from m365guard.notify import exceptions
from m365guard.notify.log import connect
from m365guard.preflight import TENANT_FACT, check_state, local_inputs
from m365guard.records import RunOutcome, RunRecord, failure, to_second
from m365guard.reports.nightly import NightlyPaths, nightly_files, nightly_paths
from m365guard.rules import RULES, run_rules
from m365guard.state import StateDB
from m365guard.tables import NO_MAILBOX, READ_IN_FULL
from m365guard.windows import AUDIT_LOG, MarkKey, next_read_marks, window_start

log = logging.getLogger(__name__)

ProgressSink = Callable[[int, int], None]
# A user without an Exchange mailbox has nothing to read: no gap in the night.
COMPLETE_STATUSES = READ_IN_FULL | {NO_MAILBOX}
# Mailbox forwarding is a state, not an event: each night reads the audit log's whole standard
# retention (180 days) so the latest Set-Mailbox per mailbox is known; older settings come from
# the Exchange export ([collect] exchange_forwarding_export) and from state, which keeps the
# last known setting per mailbox after its record has aged out (forwarding.remembered).
AUDIT_LOOKBACK = timedelta(days=180)
# how far back a user found without an Exchange mailbox is remembered (they are asked again
# weekly: collect.NO_MAILBOX_RECHECK)
WITHOUT_MAILBOX_MEMORY = timedelta(days=30)


@dataclass(frozen=True)
class NightlyOutcome:
    """What one night produced, and the exit code it earns."""

    run: RunRecord
    update: FindingsUpdate
    paths: NightlyPaths
    exit_code: ExitCode


def _request(policy: Policy, since: datetime, now: datetime, db: StateDB,
             export: ForwardingExport | None, marks: Mapping[MarkKey, datetime]
             ) -> CollectRequest:
    people = policy.people
    return CollectRequest(
        since=since,
        until=now,
        audit_since=now - AUDIT_LOOKBACK,
        # the night's mail in shards beside the state (shards.py): bounded memory at any size
        mail_dir=policy.state.path.with_name(policy.state.path.stem + "-mail"),
        delta_links=db.delta_links(),
        without_mailbox=db.without_mailbox(now - WITHOUT_MAILBOX_MEMORY),
        folders=tuple(policy.collect.folders),
        group_names=tuple(dict.fromkeys(
            [*people.pupil_groups, *people.staff_groups, *people.governor_groups])),
        include_chats=policy.collect.include_chats,
        include_audit=policy.collect.include_audit_log,
        forwarding_export=export,
        mailbox_concurrency=policy.collect.max_concurrency,
        teams_requests_per_second=policy.collect.teams_requests_per_second,
        mailbox_scope_group=policy.collect.mailbox_scope_group,
        audit_poll_seconds=policy.collect.audit_poll_seconds,
        read_marks=marks,
    )


def _outcome(result: CollectResult) -> RunOutcome:
    coverage = result.collected["coverage"]
    return "complete" if coverage["status"].isin(COMPLETE_STATUSES).all() else "partial"


def _counts(result: CollectResult, findings: pd.DataFrame) -> dict[str, int]:
    collected = result.collected
    return {
        "users": len(collected["users"]),
        "messages": result.message_count,
        "recipients": result.recipient_count,
        "forwarding_rules": len(collected["rule_forwards"]),
        "chats": len(collected["chats"]),
        "mailbox_forwarding": len(collected["mailbox_forwarding"]),
        "findings": len(findings),
        "http_requests": result.requests,
        "errors": len(result.errors),
        "skipped_items": result.skipped,
    }


def _stoppable(progress: ProgressSink | None) -> ProgressSink:
    """The progress sink, with a stop checkpoint after every stream read (stopping.py)."""

    def report(done: int, total: int) -> None:
        stopping.checkpoint()
        if progress is not None:
            progress(done, total)

    return report


def exit_code_for(run: RunRecord, update: FindingsUpdate) -> ExitCode:
    """Partial beats findings: an incomplete night must never look clean or merely busy. The
    day's news that no exception covers (new, reopened, escalated, back) earns exit 3."""
    if run.outcome != "complete":
        return ExitCode.PARTIAL_RUN
    fresh = update.alerting()["severity"]
    return ExitCode.NEW_HIGH_FINDINGS if (fresh == "high").any() else ExitCode.CLEAN


def previous_report_start(db: StateDB, now: datetime) -> datetime:
    """When the latest run that wrote a report for an earlier day (UTC, as the report names)
    started: news since then is the day's news. A day back on the first day."""
    day = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC)
    earlier = [run for run in db.runs_between(day - timedelta(days=400), day)
               if run.outcome in ("complete", "partial")]
    return earlier[-1].started_at if earlier else day - timedelta(days=1)


def _exceptions(policy: Policy) -> pd.DataFrame:
    conn = connect(policy.state.path)
    try:
        return exceptions.exceptions(conn)
    finally:
        conn.close()


def run_nightly(
    policy: Policy,
    conn: ConnectionSettings,
    out_dir: Path,
    *,
    now: datetime | None = None,
    progress: ProgressSink | None = None,
) -> NightlyOutcome:
    """Collect since the last run, check, record, report. Raises GuardError for user errors."""
    now = now or datetime.now(UTC)
    started = time.monotonic()  # finished_at = now + elapsed, for real and simulated nights

    def elapsed() -> datetime:
        return to_second(now + timedelta(seconds=time.monotonic() - started))

    state = policy.state
    with StateDB.open(state.path, wait_seconds=state.lock_wait_seconds) as db, db.lock():
        # the state first: sound, writable, this tenant's, a clock that agrees with it
        last = check_state(db, policy, conn.tenant_id, now)
        since = window_start(last, policy.collect.first_run_days, now)
        marks = db.read_marks()
        log.info("nightly: window %s .. %s", since.isoformat(), now.isoformat())
        run_id = 0
        committed = False
        retry = RetryPolicy(request_timeout=policy.collect.request_timeout_seconds,
                            deadline=started + policy.collect.run_deadline_minutes * 60)
        try:
            # local inputs next: a bad roster or export ends the run before Graph is contacted
            local = local_inputs(policy, now)
            with open_session(conn, retry) as session:
                run_id = db.start_run(since, now, now, granted_permissions=session.granted_roles)
                log.info("nightly: run %d collecting", run_id)
                result = collect(session, _request(policy, since, now, db, local.export, marks),
                                 _stoppable(progress))
            stopping.checkpoint()
            for error in result.errors:
                log.warning("not read: %s", error)
            log.info("nightly: collected %d messages in %d requests; checking rules",
                     result.message_count, result.requests)
            # mailbox forwarding is a state: tonight's observations over the last known setting
            forwarding = remembered(db.forwarding_state(), result.collected["mailbox_forwarding"])
            result.collected.tables["mailbox_forwarding"] = forwarding
            # enforced rules: verified ones resolve their finding, re-enabled ones are drift
            verification = enforcement.nightly_check(policy.state.path, result.collected)
            findings = verification.findings(with_posture(
                result.collected, run_rules(result.collected, policy, result.mail),
                *local.posture))
            coverage = result.collected["coverage"]
            rules_off = tuple(rule.RULE_ID for rule in RULES
                              if not policy.rules.for_rule(rule.RULE_ID).enabled)
            stopping.checkpoint()
            log.info("nightly: %d findings; recording the run in state", len(findings))
            run = dataclasses.replace(db.run(run_id), finished_at=elapsed(),
                                      outcome=_outcome(result), counts=_counts(result, findings),
                                      rules_off=rules_off)
            accepted = _exceptions(policy)
            reports = StagedFiles()
            try:
                # BEGIN IMMEDIATE: a `findings ack` waits until COMMIT, so it is never overwritten
                with db.transaction():
                    db.confirm_lock()  # a lock file removed mid-run no longer keeps others out
                    report_since = previous_report_start(db, now)
                    ledger = compute_ledger(
                        db.findings(), findings, coverage, run_id, now, rules_off=rules_off,
                        earlier=db.events_between(report_since + timedelta(seconds=1), now))
                    ledger = dataclasses.replace(ledger, update=exceptions.for_night(
                        ledger.update, accepted, report_since, now))
                    log.info("nightly: writing reports to %s", out_dir)
                    reports.write(nightly_files(out_dir, run, ledger.update, coverage))
                    log.info("nightly: reports written; committing state")
                    db.record_run(run, ledger.changes, coverage, result.delta_links,
                                  build_inventory(result.collected["rule_forwards"], forwarding),
                                  next_read_marks(marks, since, coverage, result.read_marks,
                                                  (*policy.collect.folders, AUDIT_LOG)))
                    db.write_forwarding_state(latest_forwarding(forwarding, keep_cleared=True)
                                              .drop(columns="target"), run_id)
                    db.set_fact(TENANT_FACT, db.fact(TENANT_FACT) or conn.tenant_id)
                committed = True
                log.info("nightly: state committed")
                reports.publish()
            finally:
                reports.discard()
        except BaseException as exc:  # every failed run keeps its reason
            if not committed and (run_id or not isinstance(exc, KeyboardInterrupt)):
                with contextlib.suppress(GuardError, sqlite3.Error):  # raise the first error
                    db.fail_run(run_id or db.start_run(since, now, now), failure(exc),
                                elapsed())
            raise
        enforcement.record(state.path, verification, run_id, now)
        db.prune(state.retention_days, now)  # after a clock check_state found sane
        try:
            db.keep_backup(run_id, now, state.backups)
        except (OSError, sqlite3.Error) as exc:
            log.warning("nightly: no state backup tonight (%s); the night is committed", exc)
    update = ledger.update
    log.info("nightly: %s, %d new, %d open, %d resolved", run.outcome, len(update.new),
             len(update.still_open), len(update.resolved))
    return NightlyOutcome(run=run, update=update, paths=nightly_paths(out_dir, run),
                          exit_code=exit_code_for(run, update))

"""After the nightly run has committed: alert the responsible roles, note it in the run JSON.

Why after the commit and never raising: the run's findings are safe in state before anyone is
told, and nothing a mail server does can fail the run or change its exit code. What was (not)
delivered is added to run-YYYY-MM-DD.json under "notifications" (rewritten atomically).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd

from m365guard.config import Policy
from m365guard.files import write_bytes_atomic
from m365guard.graph.settings import ConnectionSettings
from m365guard.notify import breaches, exceptions
from m365guard.notify import log as notify_log
from m365guard.notify.deliver import MailSender, alert_after_night
from m365guard.pipeline import NightlyOutcome
from m365guard.records import iso
from m365guard.reports.weeks import local_day, school_zone
from m365guard.rules import rule_titles

log = logging.getLogger(__name__)


def notify_after_run(policy: Policy, conn: ConnectionSettings, outcome: NightlyOutcome, *,
                     now: datetime | None = None, send: MailSender | None = None,
                     ) -> list[notify_log.Notification]:
    """Send the night's alerts; every outcome is logged and written to the run JSON."""
    now = now or datetime.now(UTC)
    # the day's news (new, reopened, escalated, also from an earlier run of the day whose
    # alert may have failed; at most one mail per role and night still holds: deliver.py)
    open_now = outcome.update.open_now
    fresh = open_now[open_now["finding_id"].isin(list(outcome.update.news))]
    try:
        fresh = _casework(policy, outcome, fresh, now)
    except Exception:  # the breach log and exceptions must not stop the alerts either
        log.exception("notify: breach log / exceptions could not be read")
    try:
        entries = alert_after_night(policy, conn, fresh, outcome.run.run_id,
                                    outcome.run.started_at, now, titles=rule_titles(), send=send)
    except Exception as exc:  # a failure to notify must never lose the run
        log.exception("notify: alerts could not be sent")
        night = local_day(outcome.run.started_at, school_zone(policy.school.time_zone))
        entry = notify_log.Notification(
            "alert", night.isoformat(), "all", "mail", outcome.run.run_id, now, "failed", 0,
            tuple(fresh["finding_id"]), f"{type(exc).__name__}: {exc}")
        entries = [entry]
        try:
            db = notify_log.connect(policy.state.path)
            try:
                notify_log.record(db, entry)
            finally:
                db.close()
        except Exception:
            log.exception("notify: the failure could not be recorded in state")
    if entries:
        add_to_run_json(outcome.paths.run_json, entries)
    return entries


def _casework(policy: Policy, outcome: NightlyOutcome, fresh: pd.DataFrame,
              now: datetime) -> pd.DataFrame:
    """Open breach-log entries; drop accepted findings from the alerts and add back those
    whose exception ended since the previous night."""
    run = outcome.run
    previous = run.window_start or run.started_at - timedelta(days=1)
    still = outcome.update.still_open
    conn = notify_log.connect(policy.state.path)
    try:
        opened = breaches.open_entries(conn, pd.concat([fresh, still], ignore_index=True))
        table = exceptions.exceptions(conn)
    finally:
        conn.close()
    if opened:
        log.info("notify: %d new breach-log entries for the DPO", len(opened))
    back = exceptions.expired_between(still, table, previous, now)
    fresh = pd.concat([fresh, still[still["finding_id"].isin(back)]],
                      ignore_index=True).drop_duplicates("finding_id")
    accepted = exceptions.covered(fresh, table, now)
    return fresh[~fresh["finding_id"].isin(accepted)]


def add_to_run_json(target: Path, entries: list[notify_log.Notification]) -> None:
    """Add (or extend) the run JSON's "notifications" list."""
    document = orjson.loads(target.read_bytes())
    document.setdefault("notifications", []).extend(
        {"kind": e.kind, "role": e.role, "channel": e.channel, "status": e.status,
         "recipients": e.recipients, "findings": list(e.finding_ids), "at": iso(e.at),
         "error": e.error} for e in entries)
    write_bytes_atomic(target, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")

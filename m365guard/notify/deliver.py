"""Getting alerts and the weekly page to people: mail through Graph, optionally Teams.

Why it never raises for a failed delivery: the night's findings are already committed when
alerts go out, and a mail server's bad day must not turn into a failed run. Every attempt is
logged, written to the notification log (so the next weekly page shows what did not arrive)
and returned for the run JSON. Alerts go at most once per role per night (a rerun of the
night finds them in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pandas as pd

from m365guard.config import Policy
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.sendmail import Attachment, MailNotSent, OutgoingMail, send_mail
from m365guard.graph.settings import ConnectionSettings
from m365guard.notify import log as notify_log
from m365guard.notify.messages import WeeklyDelivery, alert_html, alert_subject, card
from m365guard.notify.roles import ROLE_TITLES, ROLES, Role, next_step
from m365guard.reports.weeks import local_day

log = logging.getLogger(__name__)
MailSender = Callable[[OutgoingMail], None]


def mail_sender(conn: ConnectionSettings) -> tuple[MailSender, Callable[[], None]]:
    """A function sending through one Graph session (opened on first use) and its closer."""
    from m365guard.graph.client import GraphSession, open_session

    opened: list[GraphSession] = []

    def send(mail: OutgoingMail) -> None:
        if not opened:
            try:
                opened.append(open_session(conn))
            except GuardError as exc:
                raise MailNotSent(exc.message) from exc
        send_mail(opened[0], mail)

    def close() -> None:
        for session in opened:
            session.close()

    return send, close


def post_card(policy: Policy, conn: ConnectionSettings, payload: dict[str, object]) -> None:
    """POST a card to the Teams webhook in [notify] teams_webhook_file; MailNotSent if refused."""
    path = policy.notify.teams_webhook_file
    assert path is not None
    try:
        url = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise MailNotSent(f"cannot read notify.teams_webhook_file {path} ({exc.strerror})") from exc
    verify: str | bool = str(conn.ca_bundle) if conn.ca_bundle else True
    try:
        response = httpx.post(url, json=payload, timeout=30, verify=verify)
    except httpx.HTTPError as exc:
        raise MailNotSent(f"Teams webhook unreachable ({type(exc).__name__})") from exc
    if response.status_code >= 300:
        raise MailNotSent(f"Teams webhook answered HTTP {response.status_code}")


def _attempt(kind: notify_log.Kind, channel: notify_log.Channel, role: str,
             action: Callable[[], None]) -> str:
    """Run one delivery; '' when it went, else why not (logged)."""
    try:
        action()
    except MailNotSent as exc:
        log.warning("notify: %s by %s to %s not delivered: %s", kind, channel, role, exc)
        return str(exc)
    log.info("notify: %s by %s to %s sent", kind, channel, role)
    return ""


def _entry(kind: notify_log.Kind, period: str, role: str, channel: notify_log.Channel,
           run_id: int | None, now: datetime, recipients: int, finding_ids: tuple[str, ...],
           error: str) -> notify_log.Notification:
    return notify_log.Notification(kind, period, role, channel, run_id, now,
                                   "failed" if error else "sent", recipients, finding_ids,
                                   error)


def alert_after_night(policy: Policy, conn: ConnectionSettings, fresh: pd.DataFrame,
                      run_id: int, run_started: datetime, now: datetime, *,
                      titles: dict[str, str], send: MailSender | None = None,
                      ) -> list[notify_log.Notification]:
    """Mail each responsible role the night's new high findings (`fresh`), once per night."""
    notify = policy.notify
    high = fresh[fresh["severity"] == "high"]
    if high.empty or not notify.alerts or notify.sender is None:
        return []
    zone = ZoneInfo(policy.school.time_zone)
    night = local_day(run_started, zone).isoformat()
    closer: Callable[[], None] = lambda: None  # noqa: E731
    if send is None:
        send, closer = mail_sender(conn)
    sender = notify.sender
    entries: list[notify_log.Notification] = []
    db = notify_log.connect(policy.state.path)
    try:
        roles = high["rule_id"].map(lambda rule: next_step(str(rule)).role)
        by_role: dict[Role, pd.DataFrame] = {
            role: high[roles == role] for role in ROLES if (roles == role).any()}
        for role, findings in by_role.items():
            if notify_log.already_sent(db, "alert", night, role, "mail"):
                log.info("notify: the %s alert for %s went out already", role, night)
                continue
            recipients = tuple(notify.recipients(role))
            mail = OutgoingMail(sender, recipients,
                                alert_subject(role, findings, run_started, zone),
                                alert_html(role, findings, policy.school.name, zone, titles))

            def deliver(mail: OutgoingMail = mail, role: Role = role) -> None:
                if not mail.to:
                    raise MailNotSent(f"no address for the {role} in [notify] {role}")
                assert send is not None
                send(mail)

            error = _attempt("alert", "mail", role, deliver)
            entry = _entry("alert", night, role, "mail", run_id, now, len(recipients),
                           tuple(findings["finding_id"]), error)
            notify_log.record(db, entry)
            entries.append(entry)
        if notify.teams_webhook_file is not None and by_role and not notify_log.already_sent(
                db, "alert", night, "teams", "teams"):
            facts = [(ROLE_TITLES[role], str(len(found))) for role, found in by_role.items()]
            payload = card(f"{policy.school.name}: {len(high)} new high-severity concerns",
                           facts, "Each person has been sent the details by mail.")
            error = _attempt("alert", "teams", "teams", lambda: post_card(policy, conn, payload))
            entry = _entry("alert", night, "teams", "teams", run_id, now, 1,
                           tuple(high["finding_id"]), error)
            notify_log.record(db, entry)
            entries.append(entry)
    finally:
        db.close()
        closer()
    return entries


def send_weekly(policy: Policy, conn: ConnectionSettings, page: WeeklyDelivery, now: datetime,
                *, send: MailSender | None = None) -> list[notify_log.Notification]:
    """Mail the weekly page (HTML body, CSVs attached) to the [notify] weekly_to roles."""
    notify = policy.notify
    if notify.sender is None:
        raise GuardError("weekly --send needs [notify] sender (the school mailbox to send from)",
                         ExitCode.CONFIG_ERROR)
    recipients = tuple(dict.fromkeys(
        address for role in notify.weekly_to for address in notify.recipients(role)))
    if not recipients:
        raise GuardError("weekly --send: no addresses for [notify] weekly_to roles "
                         f"({', '.join(notify.weekly_to)})", ExitCode.CONFIG_ERROR)
    closer: Callable[[], None] = lambda: None  # noqa: E731
    if send is None:
        send, closer = mail_sender(conn)
    mail = OutgoingMail(notify.sender, recipients, page.subject, page.html, tuple(
        Attachment(path.name, "text/csv", path.read_bytes()) for path in page.attachments))
    entries = []
    db = notify_log.connect(policy.state.path)
    try:
        assert send is not None
        mailer = send
        error = _attempt("weekly", "mail", "weekly", lambda: mailer(mail))
        entry = _entry("weekly", page.week_label, "weekly", "mail", None, now, len(recipients),
                       (), error)
        notify_log.record(db, entry)
        entries.append(entry)
        if notify.teams_webhook_file is not None:
            payload = card(page.subject, list(page.card_facts),
                           "The full page has been sent by mail.")
            error = _attempt("weekly", "teams", "teams", lambda: post_card(policy, conn, payload))
            entry = _entry("weekly", page.week_label, "teams", "teams", None, now, 1, (), error)
            notify_log.record(db, entry)
            entries.append(entry)
    finally:
        db.close()
        closer()
    return entries

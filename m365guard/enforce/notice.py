"""The notice to a member of staff before enforcement changes their mailbox ([enforce]
staff_notice).

Why: a school must treat staff fairly, so a change made to someone's mailbox is told to them
first, from the [notify] sender, in the school's own words (staff_notice_text in
policies.toml). The notice goes before the change; when it cannot be sent, that person's
actions wait (apply reports them failed, exit 17) and a rerun tries again. It goes once per
plan and person: the journal keeps a `staff_notified` event (the audit pack lists it).
"""

from __future__ import annotations

import html
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime

from m365guard.config import Policy
from m365guard.enforce import journal
from m365guard.enforce.plan import Action, Plan
from m365guard.graph.sendmail import MailNotSent, OutgoingMail

log = logging.getLogger(__name__)
NOTICE_EVENT = "staff_notified"


def _changed(plan: Plan) -> dict[str, list[Action]]:
    """The actions that change a mailbox through Graph, by mailbox."""
    by_mailbox: dict[str, list[Action]] = {}
    for action in plan.actions:
        if action.kind == "disable_inbox_rule":
            by_mailbox.setdefault(action.mailbox, []).append(action)
    return by_mailbox


def notice_mail(policy: Policy, mailbox: str, actions: list[Action]) -> OutgoingMail:
    """The notice for one person, from the policy's template."""
    section = policy.enforce
    assert policy.notify.sender is not None
    rules = ", ".join(repr(str((a.before or {}).get("displayName", a.rule_graph_id)))
                      for a in actions)
    text = section.staff_notice_text.format(
        rules=rules, school=policy.school.name, contact=policy.notify.sender)
    body = "".join(f"<p>{html.escape(part)}</p>" for part in text.split("\n\n") if part.strip())
    return OutgoingMail(policy.notify.sender, (mailbox,), section.staff_notice_subject, body)


def send_notices(conn: sqlite3.Connection, policy: Policy, plan: Plan,
                 send: Callable[[OutgoingMail], None], *, by: str,
                 now: datetime) -> dict[str, str]:
    """Mail every person whose mailbox the plan changes, once; returns mailbox -> why not."""
    held: dict[str, str] = {}
    for mailbox, actions in _changed(plan).items():
        first = actions[0]
        if journal.has_event(conn, first.action_id, NOTICE_EVENT):
            continue
        try:
            send(notice_mail(policy, mailbox, actions))
        except MailNotSent as exc:
            log.warning("enforce: notice to %s not sent: %s", mailbox, exc)
            held[mailbox] = str(exc)
            continue
        journal.plan_event(conn, first, NOTICE_EVENT, by=by, now=now,
                           detail=f"notice mailed to {mailbox} before the change")
    return held

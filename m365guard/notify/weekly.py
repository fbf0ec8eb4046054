"""`weekly --send`: the page, as written, mailed to the weekly_to roles (and a Teams card)."""

from __future__ import annotations

from datetime import datetime

from m365guard.config import Policy
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.settings import ConnectionSettings
from m365guard.notify.deliver import MailSender, send_weekly
from m365guard.notify.messages import weekly_delivery
from m365guard.reports.weekly import WeeklyInput
from m365guard.reports.weekly_files import WeeklyPaths


def send_weekly_page(policy: Policy, conn: ConnectionSettings, data: WeeklyInput,
                     paths: WeeklyPaths, now: datetime, *, send: MailSender | None = None) -> str:
    """Send; one line saying to how many people. The page stays written if sending fails."""
    entries = send_weekly(policy, conn, weekly_delivery(data, paths), now, send=send)
    failed = [entry for entry in entries if entry.status == "failed"]
    if failed:
        code = (ExitCode.PERMISSION_MISSING if any("403" in e.error for e in failed)
                else ExitCode.HOST_UNREACHABLE)
        raise GuardError(f"the weekly page was written but not sent ({failed[0].channel}):"
                         f" {failed[0].error}", code)
    return f"sent to {entries[0].recipients} recipient(s) from {policy.notify.sender}"

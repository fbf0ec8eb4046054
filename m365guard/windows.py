"""Where each night reads from: the night's window, each stream's own "read up to" mark, and
a clock that agrees with the state.

Why per stream: a mailbox that could not be read one night (403, retries exhausted) must be
read the next night from where it was last read in full, not from the night's window start,
or the failed night's mail is never checked while the next run says complete. A delta resync
(410) starts from that mark too (graph/collect.py, CollectRequest.read_marks). A mark moves
only when its stream was read in full, to the end of that night's window. Windows never move
back, and a clock far ahead of the last run is refused before it can prune the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import pandas as pd

from m365guard.errors import ExitCode, GuardError
from m365guard.records import RunRecord
from m365guard.tables import FAILED

# (mailbox upn lowercased, or "" for tenant-wide streams; kind: a folder name,
# "messageRules", "chats", "auditLog")
MarkKey = tuple[str, str]
AUDIT_LOG = "auditLog"


def window_start(last: RunRecord | None, first_run_days: int, now: datetime) -> datetime:
    """Since the end of the last run that stored results; `first_run_days` back at first."""
    if last is not None and last.window_end is not None:
        return last.window_end
    return now - timedelta(days=first_run_days)


def check_clock(last_end: datetime | None, now: datetime, max_gap_days: int) -> None:
    """Refuse a clock earlier than the last run's window end (windows never move back) or
    more than `max_gap_days` past it (every later window would start in the future, and
    retention would prune the history): one line, before Graph is contacted."""
    if last_end is None:
        return
    shown, last = f"{now:%Y-%m-%d %H:%M} UTC", f"{last_end:%Y-%m-%d %H:%M} UTC"
    if now < last_end:
        raise GuardError(
            f"the clock reads {shown}, earlier than the end of the last run's window ({last}):"
            " windows never move back; fix the system clock (NTP), or if that run's clock was"
            " wrong, restore the state backup made before it (docs/reliability.md, restoring"
            " the state)", ExitCode.STATE_REFUSED)
    gap = now - last_end
    if gap > timedelta(days=max_gap_days):
        raise GuardError(
            f"the clock reads {shown}, {gap.days} days after the last run's window end ({last}),"
            f" more than [state] max_gap_days ({max_gap_days}): fix the system clock; if the"
            " server really was off that long, raise max_gap_days for one run",
            ExitCode.STATE_REFUSED)


def next_read_marks(before: Mapping[MarkKey, datetime], since: datetime,
                    coverage: pd.DataFrame, read_in_full: Mapping[MarkKey, datetime],
                    windowed: Iterable[str]) -> dict[MarkKey, datetime]:
    """The marks to write after a night. A stream read in full moves to the night's end; a
    windowed stream (mail folders, the audit log) that failed keeps its mark, or is given the
    night's start if it had none, so that a mailbox failing its first night is read from there
    later, not from a later night's window."""
    marks = dict(read_in_full)
    failed = coverage[(coverage["status"] == FAILED) & coverage["folder"].isin(set(windowed))]
    for mailbox, kind in zip(failed["mailbox"].str.lower(), failed["folder"], strict=True):
        key = (str(mailbox), str(kind))
        if key not in marks and key not in before:
            marks[key] = since
    return marks

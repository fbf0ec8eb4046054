"""Where each night reads from: the night's window and each stream's own "read up to" mark.

Why per stream: a mailbox that could not be read one night (403, retries exhausted) must be
read the next night from where it was last read in full, not from the night's window start,
or the failed night's mail is never checked while the next run says complete. A delta resync
(410) starts from that mark too (graph/collect.py, CollectRequest.read_marks). A mark moves
only when its stream was read in full, to the end of that night's window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import pandas as pd

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

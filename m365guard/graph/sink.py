"""Where one collection's readers put what they read: rows per table, coverage, errors, skips.

Every reader (directory, mailbox streams, audit log) writes here, so coverage and the error
lines have one shape whatever produced them.
"""

from __future__ import annotations

import logging
from typing import Any

from m365guard import tables
from m365guard.graph.client import error_code
from m365guard.graph.permissions import REQUIRED_PERMISSIONS

log = logging.getLogger(__name__)


def failure_reason(kind: str, status: int, body: Any, granted: frozenset[str] = frozenset()
                   ) -> str:
    """One line saying why a read failed (403: the permission that serves it or, when that
    is granted, the Exchange scope that leaves the mailbox out)."""
    code, message = error_code(body)
    permission = REQUIRED_PERMISSIONS[kind]
    if status == 403 and permission in granted and code == "ErrorAccessDenied":
        return (f"access denied (ErrorAccessDenied) although {permission} is granted: an"
                " Exchange scope (RBAC for Applications or an application access policy) leaves"
                " this mailbox out; add it to the scope, or set [collect] mailbox_scope_group"
                " to the scope's group (run `m365guard doctor`)")
    if status == 403:
        return f"access denied ({code or 403}): grant {permission}"
    if status == 404:
        return f"not found ({code or 404})"
    return f"HTTP {status} {code} {message}".strip()


class RowSink:
    """Accumulated rows of every collected table, the errors and the malformed-item count."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in tables.COLLECTED}
        self.errors: list[str] = []
        self.skipped = 0  # malformed items left out (logged one by one)

    def cover(self, mailbox: str, kind: str, status: str, reason: str, items: int) -> None:
        """One coverage row; a failure is also one error line."""
        self.rows["coverage"].append((mailbox, kind, status, reason, items))
        if status == "failed":
            self.errors.append(f"{mailbox or 'tenant'} {kind}: {reason}")

    def last_reason(self, kind: str) -> str:
        """The reason of the latest coverage row of this kind ("" when there is none)."""
        return next((row[3] for row in reversed(self.rows["coverage"]) if row[1] == kind), "")

    def skip(self, kind: str, mailbox: str, reason: object) -> None:
        """Count and log one item left out."""
        self.skipped += 1
        log.warning("skipped a malformed %s item in %s: %s", kind, mailbox, reason)

"""Logging for scheduled runs: plain lines to stderr and an owner-only log file, secrets masked.

A run registers every secret it holds (client secret, certificate password, access tokens) with
`mask_secret`; the filter replaces them in every record, so a careless format string cannot leak
one into the log a technician may attach to a support ticket.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

_SECRETS: set[str] = set()
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """text with every control character shown as an escape (\\x1b, \\n): a subject cannot
    rewrite the terminal, a rule name with a newline cannot forge a second log line."""
    return _CONTROL.sub(lambda found: ascii(found.group())[1:-1], text)


def mask_secret(value: str | None) -> None:
    """Never let `value` appear in a log line."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


class _MaskSecrets(logging.Filter):
    """Secrets replaced by ***, control characters neutralised, in every record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in _SECRETS:
            message = message.replace(secret, "***")
        record.msg, record.args = printable(message), None
        return True


def setup_logging(log_file: Path | None = None, *, verbose: bool = False) -> None:
    """Log to stderr (warnings, or info with verbose) and, if given, to an owner-only file."""
    root = logging.getLogger("m365guard")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    handlers: list[logging.Handler] = [stderr]
    if log_file is not None:
        from m365guard.reports.csvfile import ensure_private_dir

        ensure_private_dir(log_file.parent)  # usually the output folder: owner-only
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(_MaskSecrets())
        root.addHandler(handler)
    root.propagate = False

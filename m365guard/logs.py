"""Logging for scheduled runs: plain lines to stderr and an owner-only log file, secrets masked.

A run registers every secret it holds (client secret, certificate password, access tokens) with
`mask_secret`; the filter replaces them in every record, so a careless format string cannot leak
one into the log a technician may attach to a support ticket.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import TextIO

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


def masked(text: str) -> str:
    """text with every registered secret replaced by *** and control characters neutralised."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return printable(text)


class _MaskSecrets(logging.Filter):
    """Secrets replaced by ***, control characters neutralised, in every record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = masked(record.getMessage()), None
        return True


def open_log(log_file: Path) -> TextIO:
    """The log opened for appending, owner-only; never through a symbolic link, never a file
    another name (a hard link) or another account owns: the log must not append to another
    file. Any problem is one line naming the log and the fix (exit 6)."""
    from m365guard.errors import ExitCode, GuardError
    from m365guard.writable import os_error_line, usable_folder

    usable_folder(log_file.parent, "the log's folder")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(log_file, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise GuardError(os_error_line(exc, "the log"), ExitCode.CONFIG_ERROR) from None
    info = os.fstat(fd)
    owner = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1 or info.st_uid != owner:
        os.close(fd)
        raise GuardError(f"the log {log_file} is not a file of this account's own (a hard "
                         "link, a device or another account's file); remove it or set "
                         "[output] log_file to a new file", ExitCode.CONFIG_ERROR)
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")


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
        handlers.append(logging.StreamHandler(open_log(log_file)))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(_MaskSecrets())
        root.addHandler(handler)
    root.propagate = False
    logging.raiseExceptions = False  # a full disk under the log: no traceback per record

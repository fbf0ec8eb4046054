"""Local exports read before Graph is contacted: the Exchange mailbox-forwarding CSV.

Graph has no API for mailbox-level forwarding; an optional `Get-EXOMailbox ... | Export-Csv`
supplements the audit log. A bad file ends the run before any request is sent.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m365guard.errors import ExitCode, GuardError


@dataclass(frozen=True)
class ForwardingExport:
    """The rows of one export (tables.SCHEMAS["mailbox_forwarding"] order)."""

    path: Path
    rows: list[tuple[Any, ...]]


def strip_smtp(value: Any) -> str:
    """An Exchange address without its `smtp:` prefix."""
    text = str(value or "").strip()
    return text[5:] if text.lower().startswith("smtp:") else text


def read_forwarding_export(path: Path) -> list[tuple[Any, ...]]:
    """Rows from `Get-EXOMailbox ... | Export-Csv` (Windows PowerShell's #TYPE line allowed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        observed = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardError(f"forwarding export {path}: cannot read it ({exc});"
                         " export it again with Export-Csv -Encoding UTF8",
                         ExitCode.INPUT_FILE_ERROR) from exc
    lines = [line for line in text.splitlines() if not line.startswith("#TYPE")]
    reader = csv.DictReader(lines)
    columns = set(reader.fieldnames or [])
    identity = next((c for c in ("UserPrincipalName", "PrimarySmtpAddress") if c in columns), None)
    if identity is None or not columns & {"ForwardingSmtpAddress", "ForwardingAddress"}:
        raise GuardError(
            f"forwarding export {path}: needs columns UserPrincipalName, ForwardingSmtpAddress,"
            " ForwardingAddress, DeliverToMailboxAndForward (see docs/graph-access.md)",
            ExitCode.INPUT_FILE_ERROR)
    rows: list[tuple[Any, ...]] = []
    for number, row in enumerate(reader, start=1):
        deliver = str(row.get("DeliverToMailboxAndForward") or "").lower() == "true"
        addresses = [address for address in (strip_smtp(row.get(name)) for name in
                                             ("ForwardingSmtpAddress", "ForwardingAddress"))
                     if address]
        # a mailbox listed without forwarding is evidence it forwards nowhere ("" = cleared)
        for address in addresses or [""]:
            rows.append((row[identity] or "", address, deliver and bool(address), "export",
                         observed, f"{path.name}:{number}"))
    return rows


def load_forwarding_export(path: Path | None) -> ForwardingExport | None:
    """The export named in the policy, read now (None when there is none)."""
    return None if path is None else ForwardingExport(path, read_forwarding_export(path))

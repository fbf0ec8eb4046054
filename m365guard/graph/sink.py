"""Where one collection's readers put what they read: rows per table, coverage, errors, skips.

Every reader (directory, mailbox streams, audit log) writes here, so coverage and the error
lines have one shape whatever produced them. Mail can go to disk as it is decoded (MailSpool),
cut into the night's shards (m365guard/shards.py), so a large tenant's mail is never all in
memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from m365guard import shards, tables
from m365guard.graph.permissions import REQUIRED_PERMISSIONS
from m365guard.graph.replies import error_code

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


class MailSpool:
    """Decoded mail batches written to disk as they arrive, cut by message into the night's
    shards (shards.shard_of), so the collector holds at most `budget_bytes` of mail.

    A batch's rows are sorted by shard once and sliced; each shard's slices wait in memory
    until the budget is reached, then every shard's waiting rows go out as one record batch
    per table (few, large writes). `batches(shard)` reads one shard back in the order its
    rows arrived, in the decoded shape (`stream` column first, recipients' `message` the row
    of their message), ready for pages.mail_tables.
    """

    def __init__(self, directory: Path, count: int, budget_bytes: int = 48 << 20) -> None:
        self.directory, self.count, self.budget = directory, count, budget_bytes
        self.waiting: list[list[tuple[pa.Table, pa.Table]]] = [[] for _ in range(count)]
        self.waiting_bytes = 0
        self.writers: dict[tuple[str, int], ipc.RecordBatchStreamWriter] = {}

    def append(self, batch: tuple[pa.Table, pa.Table]) -> None:
        """One decoded batch (messages, recipients), as BatchScheduler keeps it."""
        messages, recipients = batch
        if not len(messages):
            return
        shard = shards.shard_of(messages["internet_message_id"], messages["message_id"],
                                self.count)
        order = np.argsort(shard, kind="stable")
        sizes = np.bincount(shard, minlength=self.count)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        # each message's row within its shard's slice, for its recipients' `message`
        within = np.empty(len(order), dtype=np.int64)
        within[order] = np.arange(len(order)) - starts[shard[order]]
        message = recipients["message"].to_numpy()
        recipient_shard = shard[message]
        recipient_order = np.argsort(recipient_shard, kind="stable")
        recipient_sizes = np.bincount(recipient_shard, minlength=self.count)
        recipient_starts = np.concatenate([[0], np.cumsum(recipient_sizes)[:-1]])
        sorted_messages = messages.take(pa.array(order))
        sorted_recipients = recipients.take(pa.array(recipient_order)).set_column(
            1, "message", pa.array(within[message[recipient_order]]))
        for number in np.flatnonzero(sizes | recipient_sizes):
            self.waiting[number].append((
                sorted_messages.slice(starts[number], sizes[number]),
                sorted_recipients.slice(recipient_starts[number], recipient_sizes[number])))
        self.waiting_bytes += sorted_messages.nbytes + sorted_recipients.nbytes
        if self.waiting_bytes > self.budget:
            self.flush()

    def flush(self) -> None:
        """Every shard's waiting rows to its files, one record batch per table."""
        for number, pieces in enumerate(self.waiting):
            if not pieces:
                continue
            offsets = np.cumsum([0] + [len(m) for m, _ in pieces[:-1]])
            messages = pa.concat_tables(m for m, _ in pieces).combine_chunks()
            recipients = pa.concat_tables(
                r.set_column(1, "message", pc.add(r["message"], int(offset)))
                for (_, r), offset in zip(pieces, offsets, strict=True)).combine_chunks()
            for name, table in (("messages", messages), ("recipients", recipients)):
                self._writer(name, number, table.schema).write_table(table)
            self.waiting[number] = []
        self.waiting_bytes = 0

    def close(self) -> None:
        """The last rows out and every file closed (call before reading back)."""
        self.flush()
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def batches(self, number: int) -> list[tuple[pa.Table, pa.Table]]:
        """One shard's rows back, as the record batches that were written."""
        read = []
        for name in ("messages", "recipients"):
            path = self._path(name, number)
            if not path.exists():
                return []
            with ipc.open_stream(path) as reader:
                read.append([pa.Table.from_batches([b]) for b in reader])
        return list(zip(read[0], read[1], strict=True))

    def remove(self, number: int) -> None:
        for name in ("messages", "recipients"):
            self._path(name, number).unlink(missing_ok=True)

    def _path(self, name: str, number: int) -> Path:
        return self.directory / f"spool-{name}-{number:04d}.arrows"

    def _writer(self, name: str, number: int, schema: pa.Schema) -> ipc.RecordBatchStreamWriter:
        writer = self.writers.get((name, number))
        if writer is None:
            writer = self.writers[(name, number)] = ipc.new_stream(
                str(shards.private_file(self._path(name, number))), schema)
        return writer

"""A night's mail on disk: the messages and recipients tables cut into shards by message.

Collection (graph/sink.MailSpool) writes them as it reads, and the rules run over one shard
at a time (rules.run_rules with `mail`), so a tenant of any size needs memory for one shard,
not for the night. A message's shard is a hash of its object id (internetMessageId, Graph's
id when there is none), so every copy of one message (the sender's Sent Items, each
recipient's Inbox) lands in the same shard: a rule that keeps one finding per message decides
it inside one shard, and the findings are exactly those of the whole table at once.

Files (Arrow IPC, lz4), each written to a temporary name and renamed into place, the manifest
last: a reader that finds `manifest.json` finds every shard it names complete.

    mail/messages-0007.arrow, mail/recipients-0007.arrow, mail/manifest.json
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from m365guard import tables
from m365guard.files import ensure_private_dir

MAIL_TABLES = ("messages", "recipients")
MANIFEST = "manifest.json"
# messages per shard the collector aims at (a shard's rules then need ~100-200 MB)
TARGET_MESSAGES_PER_SHARD = 100_000
_WRITE = ipc.IpcWriteOptions(compression="lz4")


def shard_count(mailboxes: int, messages_per_mailbox: int = 150) -> int:
    """How many shards a tenant of this many mailboxes is cut into (the large school's
    ~150 messages per mailbox a month as the guess; one shard for a small school)."""
    return max(1, -(-mailboxes * messages_per_mailbox // TARGET_MESSAGES_PER_SHARD))


def shard_of(internet_ids: pa.Array | pa.ChunkedArray, graph_ids: pa.Array | pa.ChunkedArray,
             count: int) -> np.ndarray:
    """The shard of each message: a stable hash of its object id (tables.message_object_ids)
    modulo `count`; the same id always gives the same shard."""
    if count == 1 or len(internet_ids) == 0:
        return np.zeros(len(internet_ids), dtype=np.int64)
    internet = np.asarray(internet_ids.to_numpy(zero_copy_only=False), dtype=object)
    graph = np.asarray(graph_ids.to_numpy(zero_copy_only=False), dtype=object)
    keys = np.where(internet == "", graph, internet)
    hashes = pd.util.hash_array(keys, categorize=False)
    return (hashes % np.uint64(count)).astype(np.int64)


def _path(directory: Path, name: str, shard: int) -> Path:
    return directory / f"{name}-{shard:04d}.arrow"


def private_file(path: Path) -> Path:
    """`path` made empty and owner-only before Arrow writes it: the shards hold who wrote to
    whom (addresses, subjects), as private as the state file."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(path, 0o600)
    return path


def _replace(temporary: Path, final: Path) -> None:
    """Make a written file durable, then put it in place (rename is atomic)."""
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)


def write_table(path: Path, table: pa.Table) -> None:
    """One Arrow IPC file, written to a temporary name and renamed into place."""
    temporary = path.with_name(path.name + ".tmp")
    with ipc.new_file(str(private_file(temporary)), table.schema, options=_WRITE) as writer:
        writer.write_table(table)
    _replace(temporary, path)


def read_table(path: Path, name: str) -> pd.DataFrame:
    """A collected table from its shard file, with the contract's dtypes (no copy where the
    Arrow column already has the type)."""
    with ipc.open_file(path) as reader:
        table = reader.read_all()
    data: dict[str, Any] = {}
    for column, dtype in tables.SCHEMAS[name].items():
        values = table[column]
        data[column] = (pd.arrays.ArrowStringArray(values.combine_chunks()) if dtype == tables.STR
                        else pd.arrays.ArrowExtensionArray(values))
    return tables.conform(name, pd.DataFrame(data, copy=False))


def arrow_table(name: str, frame: pd.DataFrame) -> pa.Table:
    """A collected pandas table as Arrow (Arrow-backed columns are not copied)."""
    return pa.Table.from_pandas(tables.conform(name, frame), preserve_index=False)


@dataclass(frozen=True)
class MailShards:
    """The shards of one night's mail: where they are and how many rows each table has."""

    directory: Path
    count: int
    messages: int
    recipients: int

    @classmethod
    def prepare(cls, directory: Path) -> Path:
        """An empty shard directory (last night's shards removed)."""
        if directory.exists():
            shutil.rmtree(directory)
        return ensure_private_dir(directory)

    def write_manifest(self) -> None:
        temporary = private_file(self.directory / (MANIFEST + ".tmp"))
        temporary.write_text(json.dumps({"count": self.count, "messages": self.messages,
                                         "recipients": self.recipients}), encoding="utf-8")
        _replace(temporary, self.directory / MANIFEST)

    @classmethod
    def open(cls, directory: Path) -> MailShards:
        """The shards a finished collection left in `directory`."""
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return cls(directory, int(manifest["count"]), int(manifest["messages"]),
                   int(manifest["recipients"]))

    def write_shard(self, shard: int, messages: pd.DataFrame, recipients: pd.DataFrame) -> None:
        write_table(_path(self.directory, "messages", shard), arrow_table("messages", messages))
        write_table(_path(self.directory, "recipients", shard),
                    arrow_table("recipients", recipients))

    def read(self, shard: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One shard's messages and recipients."""
        return (read_table(_path(self.directory, "messages", shard), "messages"),
                read_table(_path(self.directory, "recipients", shard), "recipients"))

    def __iter__(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        return (self.read(shard) for shard in range(self.count))

    @classmethod
    def split(cls, collected: tables.Collected, directory: Path, count: int) -> MailShards:
        """An in-memory collection's mail cut into shards (row order kept within each):
        what the collector writes, for tests and benchmarks that start from tables."""
        messages, recipients = collected["messages"], collected["recipients"]
        cls.prepare(directory)
        shards = cls(directory, count, len(messages), len(recipients))
        of_message = shard_of(pa.array(messages["internet_message_id"]),
                              pa.array(messages["message_id"]), count)
        by_id = pd.Series(of_message, index=pd.Index(messages["message_id"]))
        by_id = by_id[~by_id.index.duplicated()]
        of_recipient = recipients["message_id"].map(by_id).fillna(0).to_numpy(np.int64)
        for shard in range(count):
            shards.write_shard(shard, messages[of_message == shard],
                               recipients[of_recipient == shard])
        shards.write_manifest()
        return shards

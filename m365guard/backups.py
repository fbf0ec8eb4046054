"""Backups of the state file: a consistent copy after each committed night, a few generations.

Why: the state holds what people decided (acknowledged findings, breach decisions, the
enforcement journal). A damaged state file is refused, never replaced by a fresh one (that
would bring every acknowledged finding back as new), so there must be a copy to restore.
SQLite's online backup (`Connection.backup`) copies a consistent snapshot even while another
connection reads; the copy is written to a temp file and renamed, owner-only, into a
`backups` folder beside the state file. Restoring: docs/reliability.md, "Restoring the state".
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from datetime import datetime
from pathlib import Path

FOLDER = "backups"


def backup_folder(state_path: Path) -> Path:
    """The folder beside the state file that holds its backups."""
    return state_path.parent / FOLDER


def backups_of(state_path: Path) -> list[Path]:
    """This state file's backups, newest first (their names sort by the night's time)."""
    folder = backup_folder(state_path)
    if not folder.is_dir():
        return []
    pattern = re.compile(re.escape(state_path.name) + r"\.\d{8}T\d{6}Z\.run\d+\.bak")
    found = [path for path in folder.iterdir() if pattern.fullmatch(path.name)]
    return sorted(found, key=lambda path: path.name, reverse=True)


def keep_backup(conn: sqlite3.Connection, state_path: Path, run_id: int, now: datetime,
                generations: int) -> Path | None:
    """Copy the state (through `conn`, outside a transaction) to a new backup named for the
    night and run, then keep only the newest `generations`. None when backups are off."""
    if generations < 1:
        return None
    folder = backup_folder(state_path)
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    name = f"{state_path.name}.{now:%Y%m%dT%H%M%SZ}.run{run_id}.bak"
    target = folder / name
    temp = folder / f".{name}.{os.getpid()}.tmp"
    os.close(os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        copy = sqlite3.connect(temp)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    for old in backups_of(state_path)[generations:]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    return target

"""What the state's safety costs a night: quick_check, the write-lock probe and the backup, on a
state file the size of a large school's after a full retention period.

The state is built through the store's own writes: `--mailboxes` mailboxes with three coverage
rows and three read marks a night for `--nights` nights, `--findings` findings a night; then the
coverage rows (the bulk of the file) are copied `--copies` times more, as further nights would
add them. Then it times what each night now does besides its work: open (header and table
checks), quick_check, the write-lock probe, and the online backup, beside the file's size.

    .venv/bin/python bench/state_checks.py [--mailboxes 2000] [--nights 20] [--copies 19]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from m365guard.ledger import compute_ledger, empty_inventory
from m365guard.records import RunRecord
from m365guard.state import StateDB
from m365guard.tables import make_table

T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


def build(path: Path, mailboxes: int, nights: int, per_night: int) -> None:
    boxes = [f"user{n}@school.example" for n in range(mailboxes)]
    coverage = make_table("coverage", [
        {"mailbox": box, "folder": folder, "status": "ok", "reason": "", "items": 3}
        for box in boxes for folder in ("sentitems", "inbox", "messageRules")])
    with StateDB.open(path) as db:
        for night in range(nights):
            now = T0 + timedelta(days=night)
            run_id = db.start_run(now - timedelta(days=1), now, now)
            found = make_table("findings", [{
                "finding_id": f"bcc-{night}-{n}", "rule_id": "multi-recipient-without-bcc",
                "severity": "medium", "policy_clause": "AUP-BCC",
                "occurred_at": now.isoformat(), "actor": boxes[n % mailboxes],
                "actor_role": "staff", "counterparts": "a@gmail.com;b@gmail.com",
                "object_type": "message", "object_id": f"<m{night}.{n}@school.example>",
                "summary": "two parents visible to each other"} for n in range(per_night)])
            marks = {(box.lower(), kind): now for box in boxes
                     for kind in ("sentitems", "inbox", "messageRules")}
            with db.transaction():
                ledger = compute_ledger(db.findings(), found, coverage, run_id, now)
                run = RunRecord(run_id, now, now, "complete", now - timedelta(days=1), now,
                                (), {}, "")
                db.record_run(run, ledger.changes, coverage, {}, empty_inventory(), marks)


def timed(label: str, action: object) -> float:
    started = time.perf_counter()
    assert callable(action)
    action()
    seconds = time.perf_counter() - started
    print(f"  {label:<34} {seconds:8.3f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=2000)
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--copies", type=int, default=19)
    parser.add_argument("--findings", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state" / "m365guard.db"
        started = time.perf_counter()
        build(path, args.mailboxes, args.nights, args.findings)
        conn = sqlite3.connect(path)
        for copy in range(1, args.copies + 1):  # as later runs' rows (run ids past the built)
            conn.execute("INSERT INTO coverage SELECT run_id + ?, mailbox, folder, status,"
                         " reason, items FROM coverage WHERE run_id <= ?",
                         (copy * args.nights, args.nights))
        conn.commit()
        conn.close()
        nights = args.nights * (args.copies + 1)
        built = time.perf_counter() - started
        print(f"state: {args.mailboxes} mailboxes x {nights} nights of coverage, "
              f"{path.stat().st_size / 1e6:.0f} MB (built in {built:.0f} s)")
        db = StateDB.open(path)
        try:
            timed("open (header, tables, migrations)", lambda: StateDB.open(path).close())
            timed("quick_check", db.check_integrity)
            timed("write-lock probe", db.check_writable)
            timed("online backup", lambda: db.keep_backup(1, T0, 3))
        finally:
            db.close()


if __name__ == "__main__":
    main()

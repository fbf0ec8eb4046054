"""Two nightly runs started together: one runs, the other exits at once with code 5."""

from __future__ import annotations

import sqlite3
import time

from site_support import Site, stable_findings

from m365guard.errors import ExitCode


def test_second_run_exits_at_once_and_the_state_is_intact(site: Site) -> None:
    first, second = site.popen_nightly(), site.popen_nightly()
    runs = {"first": first, "second": second}
    # whichever loses the lock ends while the winner is still collecting
    while all(p.poll() is None for p in runs.values()):
        time.sleep(0.01)
    loser_name = next(name for name, p in runs.items() if p.poll() is not None)
    winner = runs["second" if loser_name == "first" else "first"]
    loser = runs[loser_name]
    assert winner.poll() is None, "both runs finished: the lock did not make one wait"
    _, loser_err = loser.communicate(timeout=30)
    _, winner_err = winner.communicate(timeout=120)

    assert loser.returncode == ExitCode.ALREADY_RUNNING, loser_err
    assert loser_err.startswith("error: another m365guard run holds"), loser_err
    assert loser_err.count("\n") == 1 and "Traceback" not in loser_err
    assert winner.returncode == ExitCode.NEW_HIGH_FINDINGS, winner_err[-1500:]

    with sqlite3.connect(site.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [r[0] for r in conn.execute("SELECT outcome FROM runs")] == ["complete"]
        opened = conn.execute("SELECT COUNT(*), COUNT(DISTINCT finding_id) FROM finding_events"
                              " WHERE event = 'opened'").fetchone()
    found = stable_findings(next(site.out.glob("findings-*.csv")))
    assert opened[0] == opened[1] == len(found) > 0
    # and the next run works normally on that state: the same day, so the day's news is still
    # news (issue 15: a same-day rerun keeps is_new) and nothing is new since
    again = site.nightly()
    assert again.returncode == ExitCode.NEW_HIGH_FINDINGS, again.stderr[-1500:]
    assert again.stdout.startswith("complete: 0 new,"), again.stdout
    assert stable_findings(next(site.out.glob("findings-*.csv"))) == found

"""The state file's schema: numbered migrations, applied in order, never edited once landed.

A feature that keeps rows in the state file (the enforcement journal, the notification log,
exceptions and breaches, the findings lifecycle) adds its tables as the next entry at the end;
state_file.py applies the ones a file lacks, inside one transaction. The SQL lives here apart
from state.py's row reads and writes so each reads on its own.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('running', 'complete', 'partial', 'failed')),
        window_start TEXT,
        window_end TEXT,
        granted_permissions TEXT NOT NULL DEFAULT '[]',
        counts TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE coverage (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        items INTEGER
    );
    CREATE INDEX coverage_run ON coverage (run_id);
    CREATE TABLE delta_links (
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        link TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (mailbox, folder)
    );
    CREATE TABLE findings (
        finding_id TEXT PRIMARY KEY,
        rule_id TEXT NOT NULL,
        severity TEXT NOT NULL,
        policy_clause TEXT NOT NULL,
        occurred_at TEXT,
        actor TEXT NOT NULL,
        actor_role TEXT NOT NULL,
        counterparts TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        summary TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        times_seen INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'resolved', 'acknowledged')),
        status_at TEXT NOT NULL,
        status_by TEXT NOT NULL,
        status_reason TEXT NOT NULL,
        last_run_id INTEGER
    );
    CREATE INDEX findings_status ON findings (status, object_type);
    CREATE TABLE finding_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finding_id TEXT NOT NULL,
        run_id INTEGER,
        at TEXT NOT NULL,
        event TEXT NOT NULL
            CHECK (event IN ('opened', 'seen', 'resolved', 'reopened', 'acknowledged')),
        by TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX finding_events_finding ON finding_events (finding_id, at);
    CREATE INDEX finding_events_at ON finding_events (at);
    CREATE TABLE inventory (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('inbox_rule', 'mailbox_forwarding')),
        mailbox TEXT NOT NULL,
        object_id TEXT NOT NULL,
        target TEXT NOT NULL,
        is_enabled INTEGER NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX inventory_run ON inventory (run_id);
    """,
    # 2: the enforcement journal (m365guard/enforce/journal.py): plans, actions, their events
    """
    CREATE TABLE enforcement_plans (
        plan_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        author TEXT NOT NULL,
        digest TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE enforcement_actions (
        action_id TEXT PRIMARY KEY,
        plan_id TEXT NOT NULL REFERENCES enforcement_plans (plan_id),
        finding_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        object_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('started', 'done', 'skipped', 'failed', 'manual',
                                               'undo_started', 'undone')),
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        planned_by TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE enforcement_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        action_id TEXT NOT NULL,
        plan_id TEXT NOT NULL,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        by TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX enforcement_events_at ON enforcement_events (at);
    """,
    # 3: alerts and weekly pages sent, or not (m365guard/notify/log.py)
    """
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('alert', 'weekly')),
        period TEXT NOT NULL,
        role TEXT NOT NULL,
        channel TEXT NOT NULL CHECK (channel IN ('mail', 'teams')),
        run_id INTEGER,
        at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sent', 'failed')),
        recipients INTEGER NOT NULL,
        finding_ids TEXT NOT NULL,
        error TEXT NOT NULL
    );
    CREATE INDEX notifications_period ON notifications (kind, period, role, channel);
    CREATE INDEX notifications_at ON notifications (at);
    """,
    # 4: accepted exceptions and the breach log (m365guard/notify/exceptions.py, breaches.py)
    """
    CREATE TABLE finding_exceptions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL CHECK (scope IN ('finding', 'mailbox', 'address', 'rule')),
        value TEXT NOT NULL,
        by TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_day TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE breaches (
        finding_id TEXT PRIMARY KEY,
        actor TEXT NOT NULL,
        summary TEXT NOT NULL,
        addresses_shown INTEGER NOT NULL,
        parents_or_personal INTEGER NOT NULL,
        sent_at TEXT,
        found_at TEXT NOT NULL,
        decide_by TEXT NOT NULL,
        decision TEXT NOT NULL DEFAULT ''
            CHECK (decision IN ('', 'reported', 'not-reportable')),
        decided_by TEXT NOT NULL DEFAULT '',
        decided_at TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    """,
    # 5: where each stream was last read in full (windows.py), and facts about the file itself
    # (the tenant it belongs to: preflight.py)
    """
    CREATE TABLE read_marks (
        mailbox TEXT NOT NULL,
        kind TEXT NOT NULL,
        read_until TEXT NOT NULL,
        run_id INTEGER,
        PRIMARY KEY (mailbox, kind)
    );
    CREATE TABLE state_facts (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 6: the findings lifecycle (ledger.py, forwarding.py): mailbox forwarding is a state kept
    # per mailbox (an audit record ageing out is no evidence the forward went), the rules a run
    # did not check, and the events of a finding whose severity rose or whose target changed
    """
    CREATE TABLE mailbox_forwarding_state (
        mailbox TEXT PRIMARY KEY COLLATE NOCASE,
        address TEXT NOT NULL,
        deliver_and_forward INTEGER NOT NULL,
        source TEXT NOT NULL,
        observed_at TEXT,
        record_id TEXT NOT NULL,
        run_id INTEGER
    );
    ALTER TABLE runs ADD COLUMN rules_off TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE finding_events_6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finding_id TEXT NOT NULL,
        run_id INTEGER,
        at TEXT NOT NULL,
        event TEXT NOT NULL
            CHECK (event IN ('opened', 'seen', 'resolved', 'reopened', 'acknowledged',
                             'escalated', 'retargeted')),
        by TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    INSERT INTO finding_events_6 (id, finding_id, run_id, at, event, by, reason)
        SELECT id, finding_id, run_id, at, event, by, reason FROM finding_events;
    DROP TABLE finding_events;
    ALTER TABLE finding_events_6 RENAME TO finding_events;
    CREATE INDEX finding_events_finding ON finding_events (finding_id, at);
    CREATE INDEX finding_events_at ON finding_events (at);
    """,
)

"""A school's installation in a folder, for the enforcement tests: policy, CLI runs, Graph reads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from enforce_support import session_for

from m365guard.emulator.server import RunningEmulator
from m365guard.graph.rule_write import RuleClient
from m365guard.state import StateDB

CLI = Path(sys.executable).parent / "m365guard"
PATCH_ROUTE = "PATCH /users/{user_id}/mailFolders/{folder}/messageRules/{rule_id}"
POLICY = """
[school]
name = "Manby Lodge Infant School"
domains = ["manbylodge.sch.uk", "manbylodge.onmicrosoft.com"]

[collect]
folders = ["inbox"]
include_chats = false
include_audit_log = false
request_timeout_seconds = 10.0
{collect}
[state]
path = "state/m365guard.db"

[output]
dir = "out"

[enforce]
enabled = {enabled}
plans_dir = "plans"
"""
# The CLI, but a log record matching $CRASH_TEST_KILL_AT ends the process with SIGKILL.
KILL_AT_LOG = """
import logging, os, re, signal, sys
from m365guard.cli.main import run
pattern = re.compile(os.environ["CRASH_TEST_KILL_AT"])
handle = logging.Logger.handle
def handle_then_kill(self, record):
    handle(self, record)
    if pattern.search(record.getMessage()):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
logging.Logger.handle = handle_then_kill
sys.argv[0] = "m365guard"
run()
"""


@dataclass
class Site:
    root: Path
    emulator: RunningEmulator

    @classmethod
    def make(cls, root: Path, emulator: RunningEmulator, *, enabled: bool = True,
             enforce: str = "", collect: str = "") -> Site:
        """The policy, with extra lines under [enforce] and [collect]."""
        root.mkdir(parents=True, exist_ok=True)
        text = POLICY.format(enabled=str(enabled).lower(), collect=collect) + enforce
        (root / "policies.toml").write_text(text, encoding="utf-8")
        return cls(root, emulator)

    @property
    def env(self) -> dict[str, str]:
        settings = self.emulator.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("M365GUARD_")}
        env.update({
            "M365GUARD_TENANT_ID": settings.tenant_id, "M365GUARD_CLIENT_ID": settings.client_id,
            "M365GUARD_AUTHORITY_HOST": settings.authority_host,
            "M365GUARD_GRAPH_ENDPOINT": settings.graph_endpoint,
            "M365GUARD_CA_BUNDLE": settings.ca_bundle,
            "M365GUARD_CLIENT_SECRET": settings.client_secret,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        })
        return env

    def cli(self, *args: str, kill_at: str = "", extra: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """`m365guard ARGS --config ...` in a process of its own."""
        command = [sys.executable, "-c", KILL_AT_LOG] if kill_at else [str(CLI)]
        env = {**self.env, **(extra or {})}
        if kill_at:
            env["CRASH_TEST_KILL_AT"] = kill_at
        return subprocess.run([*command, *args, "--config", str(self.root / "policies.toml")],
                              env=env, capture_output=True, text=True, timeout=120, check=False)

    def nightly(self) -> subprocess.CompletedProcess[str]:
        done = self.cli("nightly")
        assert done.returncode in (0, 3), done.stderr
        return done

    def plan(self, *args: str, by: str = "Alice Admin") -> Path:
        done = self.cli("enforce", "plan", "--by", by, *args)
        assert done.returncode == 0, done.stderr
        return max((self.root / "plans").glob("plan-*.json"))

    def findings(self) -> pd.DataFrame:
        with StateDB.open(self.root / "state" / "m365guard.db") as db:
            return db.findings()

    def rule(self, user: str, rule_id: str) -> dict[str, Any] | None:
        """The rule as Graph shows it now (through the real SDK)."""
        with session_for(self.emulator) as session:
            return RuleClient(session).read(user, rule_id).rule

    def patches(self) -> int:
        return self.emulator.stats.per_route[PATCH_ROUTE]

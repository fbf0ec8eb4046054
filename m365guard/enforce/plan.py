"""The plan: what would fix each open finding, with the object's exact state when planned.

A plan is a JSON file a second person reads before approving it (and a readable summary next
to it). Its digest is recorded in state when it is made, so `apply` refuses a plan edited
after it was recorded. Action kinds, and the statuses an action passes through, are defined
here once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from m365guard.errors import ExitCode, GuardError

ActionKind = Literal["disable_inbox_rule", "exchange_powershell", "not_fixable"]
ACTION_KINDS: tuple[ActionKind, ...] = ("disable_inbox_rule", "exchange_powershell",
                                        "not_fixable")
# What the journal says of an action; "manual" means handed to a person (PowerShell).
ActionStatus = Literal["started", "done", "skipped", "failed", "manual", "undo_started",
                       "undone"]
FINAL_STATUSES = frozenset({"done", "skipped", "manual", "undone"})
FORMAT_VERSION = 1
CLIENT_RULES_WARNING = (
    "Do not change inbox rules from Exchange Online PowerShell (Set-InboxRule, "
    "Disable-InboxRule, Remove-InboxRule): Microsoft documents that doing so removes the "
    "mailbox's client-side Outlook rules."
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """Text with control characters removed, safe to print or log."""
    return _CONTROL.sub("", str(text))


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string literal (quotes doubled, control characters gone)."""
    text = printable(value)
    for quote in "\u2018\u2019\u201a\u201b":  # PowerShell treats these as quotes too
        text = text.replace(quote, "'")
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Action:
    """One thing to do about one finding."""

    action_id: str
    finding_id: str
    rule_id: str  # the m365guard rule that raised the finding
    kind: ActionKind
    mailbox: str
    object_id: str
    summary: str  # what the finding says
    reason: str  # what the action does, or why it cannot be done through Graph
    before: dict[str, Any] | None = None  # the object as read when planned
    change: dict[str, Any] = field(default_factory=dict)  # the properties set through Graph
    commands: list[str] = field(default_factory=list)  # Exchange Online PowerShell
    warning: str = ""

    @property
    def rule_graph_id(self) -> str:
        """The Graph id of an inbox rule (object ids are `<upn>/<rule id>`)."""
        return self.object_id.partition("/")[2]

    @property
    def expected_after(self) -> dict[str, Any] | None:
        """The object as it must read once the change is made."""
        return None if self.before is None else {**self.before, **self.change}


@dataclass
class Plan:
    """Actions for open findings, by one author at one time."""

    plan_id: str
    created_at: str
    author: str
    tenant_id: str
    actions: list[Action]
    notes: list[str] = field(default_factory=list)  # findings left out, and why

    def as_json(self) -> bytes:
        body = {"format": FORMAT_VERSION, **asdict(self)}
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @property
    def digest(self) -> str:
        """sha256 of the plan as written: what the journal keeps to spot an edited file."""
        return hashlib.sha256(self.as_json()).hexdigest()

    def action(self, action_id: str) -> Action:
        return next(action for action in self.actions if action.action_id == action_id)


def new_plan_id(author: str, now: datetime) -> str:
    """A short id that sorts by time: 20261202-0650-3f2a."""
    salt = hashlib.sha256(f"{author}\0{now.isoformat()}".encode()).hexdigest()[:4]
    return f"{now:%Y%m%d-%H%M%S}-{salt}"


def read_plan(path: Path) -> Plan:
    """A plan file as `enforce plan` wrote it; one clear line if it is not one."""
    try:
        body = orjson.loads(path.read_bytes())
        if body.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {body.get('format')!r}")
        actions = [Action(**{k: v for k, v in item.items()}) for item in body["actions"]]
        plan = Plan(body["plan_id"], body["created_at"], body["author"], body["tenant_id"],
                    actions, list(body.get("notes", [])))
    except FileNotFoundError:
        raise GuardError(f"{path}: no such plan file; `m365guard enforce plan` writes one",
                         ExitCode.INPUT_FILE_ERROR) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GuardError(f"{path}: not an m365guard plan ({printable(exc)[:80]}); make a new"
                         " one with `m365guard enforce plan`", ExitCode.INPUT_FILE_ERROR) from None
    if any(action.kind not in ACTION_KINDS for action in plan.actions):
        raise GuardError(f"{path}: unknown action kind; make a new plan",
                         ExitCode.INPUT_FILE_ERROR)
    return plan


def summary_text(plan: Plan) -> str:
    """The plan as a person reads it before approving it."""
    lines = [f"m365guard enforcement plan {plan.plan_id}",
             f"made by {printable(plan.author)} at {plan.created_at} for tenant {plan.tenant_id}",
             f"{len(plan.actions)} action(s); approve with: m365guard enforce apply PLAN"
             " --approved-by NAME --yes (someone other than the author)", ""]
    for action in plan.actions:
        lines.append(f"[{action.action_id}] {action.kind}: {printable(action.object_id)}")
        lines.append(f"    finding {action.finding_id} ({action.rule_id}):"
                     f" {printable(action.summary)}")
        lines.append(f"    {printable(action.reason)}")
        if action.before is not None:
            state = "enabled" if action.before.get("isEnabled") else "disabled"
            lines.append(f"    now: rule {printable(action.before.get('displayName', ''))!r},"
                         f" {state}; set through Graph: {orjson.dumps(action.change).decode()}")
        for command in action.commands:
            lines.append(f"    PS> {command}")
        if action.warning:
            lines.append(f"    WARNING: {action.warning}")
        lines.append("")
    lines.extend(f"note: {printable(note)}" for note in plan.notes)
    return "\n".join(lines).rstrip() + "\n"

"""A tiny hand-built school for rule tests: a few people, messages built one by one.

Staff: Jane Smith, Tom Teacher (education role teacher). Pupil: Amy Pupil (education role
student). Shared mailbox: office@. Personal addresses match them by display name.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from m365guard import tables
from m365guard.config import Policy, load_policy
from m365guard.rules import RuleInput

DOMAIN = "manbylodge.sch.uk"
HOME_TENANT = "11111111-1111-1111-1111-111111111111"
JANE = f"jsmith@{DOMAIN}"
TOM = f"tteacher@{DOMAIN}"
AMY = f"amy.pupil@{DOMAIN}"
OFFICE = f"office@{DOMAIN}"
PEOPLE = {  # upn -> (user id, display name, primaryRole)
    JANE: ("u-jane", "Jane Smith", "teacher"),
    TOM: ("u-tom", "Tom Teacher", "teacher"),
    AMY: ("u-amy", "Amy Pupil", "student"),
    OFFICE: ("u-office", "School Office", "none"),
}
BASE_POLICY = f"""
[school]
name = "Manby Lodge Infant School"
domains = ["{DOMAIN}"]

[addresses]
partner_domains = ["lincolnshire.gov.uk", "nhs.net"]

[allow]
mailboxes = ["{OFFICE}"]
distribution_lists = ["parents-list@{DOMAIN}", "pta@groups.io"]
"""

_ids = itertools.count(1)


def make_policy(tmp_path: Path, extra: str = "") -> Policy:
    """The base policy plus extra TOML, loaded through load_policy like the real thing."""
    path = tmp_path / "policies.toml"
    path.write_text(BASE_POLICY + extra, encoding="utf-8")
    return load_policy(path)


def uid(upn: str) -> str:
    """The user id of a tenant person."""
    return PEOPLE[upn][0]


class Mail:
    """Collects messages and their recipients as table rows."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.recipients: list[dict[str, Any]] = []

    def add(self, mailbox: str, folder: str, sender: tuple[str, str], *,
            to: Sequence[tuple[str, str]] = (), cc: Sequence[tuple[str, str]] = (),
            bcc: Sequence[tuple[str, str]] = (), subject: str = "Hello",
            attachments: bool = False, imid: str | None = None) -> str:
        """Add one message copy to `mailbox`; returns its internetMessageId."""
        number = next(_ids)
        imid = imid or f"<m{number}@test>"
        message_id = f"msg-{number}"
        self.messages.append({
            "mailbox_id": uid(mailbox), "mailbox": mailbox, "folder": folder,
            "message_id": message_id, "internet_message_id": imid,
            "subject": subject, "sent_at": "2024-01-15T10:00:00Z", "from_address": sender[0],
            "from_name": sender[1], "has_attachments": attachments,
        })
        for kind, people in (("to", to), ("cc", cc), ("bcc", bcc)):
            self.recipients += [{"message_id": message_id, "kind": kind, "address": address,
                                 "name": name} for address, name in people]
        return imid


def collected(mail: Mail | None = None, **tables_: pd.DataFrame | list[dict[str, Any]]
              ) -> tables.Collected:
    """The four people (users + education roles), the mail, and any other tables given."""
    users = [{"user_id": user_id, "upn": upn, "mail": upn, "display_name": name,
              "account_enabled": True} for upn, (user_id, name, _) in PEOPLE.items()]
    roles = [{"user_id": user_id, "primary_role": role} for user_id, _, role in PEOPLE.values()]
    given: dict[str, pd.DataFrame] = {
        "users": tables.make_table("users", users),
        "edu_roles": tables.make_table("edu_roles", roles),
    }
    if mail:
        given["messages"] = tables.make_table("messages", mail.messages)
        given["recipients"] = tables.make_table("recipients", mail.recipients)
    for name, value in tables_.items():
        given[name] = value if isinstance(value, pd.DataFrame) else tables.make_table(name, value)
    return tables.Collected(**given)


def rule_input(data: tables.Collected, policy: Policy) -> RuleInput:
    """What run_rules hands each rule."""
    return RuleInput.build(data, policy)


def by_object(findings: pd.DataFrame) -> dict[str, str]:
    """object_id -> severity."""
    return dict(zip(findings["object_id"], findings["severity"], strict=True))

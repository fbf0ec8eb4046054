"""Read one inbox rule fresh and switch it on or off: the only Graph write m365guard makes.

`PATCH /users/{id}/mailFolders/inbox/messageRules/{id}` with `{"isEnabled": false}`
(messagerule-update.md) needs MailboxSettings.ReadWrite, which belongs to the optional second
app registration ([enforce] in policies.toml), never to the nightly read-only app. Only
`isEnabled` is ever sent: Graph replaces complex properties (`actions`, `conditions`) whole,
so sending anything else could rewrite the rule. A rule is read through the inbox's rule list
(mailfolder-list-messagerules.md, MailboxSettings.Read), since that is the call the nightly
run makes and answers the same shape. Throttling (429) and server errors are retried by
`GraphSession.send`; every answer comes back as a `RuleAnswer`, never an exception, so the
caller can journal exactly what Graph said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from msgraph.generated.models.message_rule import MessageRule

from m365guard.graph.client import GraphSession
from m365guard.graph.replies import error_code

WRITE_PERMISSION = "MailboxSettings.ReadWrite"


@dataclass(frozen=True)
class RuleAnswer:
    """What Graph said about one rule: HTTP status, error code and message, and the rule as
    Graph returned it (its own properties only, no `@odata.` annotations; None when absent)."""

    status: int
    rule: dict[str, Any] | None
    code: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.rule is not None

    @property
    def error(self) -> str:
        """One line for the journal and the console."""
        return f"HTTP {self.status} {self.code} {self.message}".strip()


def rule_properties(resource: Any) -> dict[str, Any] | None:
    """A messageRule as Graph sent it, without OData annotations (None if not an object)."""
    if not isinstance(resource, dict):
        return None
    return {key: value for key, value in resource.items() if not key.startswith("@odata.")}


def _decode(content: bytes) -> Any:
    try:
        return orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return None


async def read_rule(session: GraphSession, user: str, rule_id: str) -> RuleAnswer:
    """The rule as Graph shows it now; 404 ErrorItemNotFound when the inbox has no such rule."""
    rules = session.client.users.by_user_id(user).mail_folders.by_mail_folder_id("inbox") \
        .message_rules
    response = await session.send(rules.to_get_request_information())
    body = _decode(response.content)
    if response.status_code != 200:
        return RuleAnswer(response.status_code, None, *error_code(body))
    values = body.get("value") if isinstance(body, dict) else None
    for item in values if isinstance(values, list) else []:
        rule = rule_properties(item)
        if rule is not None and rule.get("id") == rule_id:
            return RuleAnswer(200, rule)
    return RuleAnswer(404, None, "ErrorItemNotFound", f"no inbox rule {rule_id} in {user}")


async def set_rule_enabled(session: GraphSession, user: str, rule_id: str,
                           enabled: bool) -> RuleAnswer:
    """PATCH only `isEnabled`; the updated rule Graph returns, or its error."""
    item = session.client.users.by_user_id(user).mail_folders.by_mail_folder_id("inbox") \
        .message_rules.by_message_rule_id(rule_id)
    info = item.to_patch_request_information(MessageRule(is_enabled=enabled))
    response = await session.send(info)
    body = _decode(response.content)
    if response.status_code != 200:
        return RuleAnswer(response.status_code, None, *error_code(body))
    rule = rule_properties(body)
    if rule is None:
        return RuleAnswer(502, None, "InvalidResponse", "the PATCH answer is not a messageRule")
    return RuleAnswer(200, rule)


class RuleClient:
    """The two rule calls as plain functions over one session, for enforcement's loops."""

    def __init__(self, session: GraphSession) -> None:
        self.session = session

    def read(self, user: str, rule_id: str) -> RuleAnswer:
        return self.session.run(read_rule(self.session, user, rule_id))

    def set_enabled(self, user: str, rule_id: str, enabled: bool) -> RuleAnswer:
        return self.session.run(set_rule_enabled(self.session, user, rule_id, enabled))

    @property
    def can_write(self) -> bool:
        """Whether the token holds the write permission."""
        return WRITE_PERMISSION in self.session.granted_roles

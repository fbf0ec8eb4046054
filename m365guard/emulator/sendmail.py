"""sendMail and a Teams-style webhook receiver, for the alert and weekly-page tests.

`POST /users/{id | userPrincipalName}/sendMail` as `api-reference/v1.0/api/user-sendmail.md`
documents it: a JSON body with `message` (required) and `saveToSentItems` (optional), answered
`202 Accepted` with no body. Its application permission is Mail.Send, which in Entra ID lets
an app send as ANY mailbox; Exchange Online's RBAC for Applications can instead grant
"Application Mail.Send" scoped to chosen mailboxes, and those grants are not in the token.
So the route leaves authorisation to this handler: the token's Mail.Send role passes for every
sender, else the sender must be in the app's RBAC scope (`Outbox.grant`), else 403
ErrorAccessDenied, as Exchange refuses. A sender that is not a mailbox is 404 (ErrorInvalidUser),
a message without recipients 400 (ErrorInvalidRecipients). Sent mail is kept in the tenant's
`Outbox` for tests to read. A message with attachments over 3 MB in one request is refused
(413), after `api-reference/v1.0/api/user-post-messages.md`: larger files need an upload session.

The webhook receiver (`POST /webhooks/{name}`) stands in for a Teams Workflows "when a Teams
webhook request is received" URL: it keeps the JSON it is given and answers 202.
"""

from __future__ import annotations

import base64
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from m365guard.emulator.messages import mailbox_of
from m365guard.emulator.odata import GraphError, GraphResponse
from m365guard.emulator.resources import Json
from m365guard.emulator.service import Call
from m365guard.emulator.state import Tenant

SEND_ROLES = ("Mail.Send",)
MAX_INLINE_ATTACHMENTS = 3 * 1024 * 1024


@dataclass
class SentMail:
    """One accepted sendMail: the sender, the app that sent it and the message as posted."""

    sender: str
    app_id: str
    message: Json
    save_to_sent_items: bool

    def recipients(self, kind: str = "toRecipients") -> list[str]:
        """The addresses of one recipient list."""
        return [r["emailAddress"]["address"] for r in self.message.get(kind, [])]

    def attachment(self, name: str) -> bytes:
        """The decoded bytes of a file attachment by name."""
        for item in self.message.get("attachments", []):
            if item.get("name") == name:
                return base64.b64decode(item["contentBytes"])
        raise KeyError(name)


@dataclass
class Outbox:
    """What the tenant sent, RBAC for Applications scopes, and webhook posts received."""

    sent: list[SentMail] = field(default_factory=list)
    scopes: dict[str, frozenset[str]] = field(default_factory=dict)  # app id -> mailbox UPNs
    webhooks: dict[str, list[Any]] = field(default_factory=dict)
    fail_webhooks: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def grant(self, app_id: str, *mailboxes: str) -> None:
        """New-ManagementRoleAssignment -Role "Application Mail.Send" scoped to `mailboxes`."""
        self.scopes[app_id] = frozenset(m.lower() for m in mailboxes)


_OUTBOXES: weakref.WeakKeyDictionary[Tenant, Outbox] = weakref.WeakKeyDictionary()


def outbox(tenant: Tenant) -> Outbox:
    """The tenant's outbox (made on first use)."""
    return _OUTBOXES.setdefault(tenant, Outbox())


def send_mail(call: Call, params: dict[str, str]) -> GraphResponse:
    """Accept one message for delivery, after Exchange's authorisation of the sender."""
    try:
        user, _ = mailbox_of(call.tenant, params["user_id"])
    except GraphError as exc:
        if exc.status != 404:
            raise
        raise GraphError(404, "ErrorInvalidUser",
                         f"The requested user '{params['user_id']}' is invalid.") from exc
    sender = str(user["userPrincipalName"]).lower()
    box = outbox(call.tenant)
    allowed = "Mail.Send" in call.claims.roles or sender in box.scopes.get(
        call.claims.app_id, frozenset())
    if not allowed:
        raise GraphError(403, "ErrorAccessDenied",
                         "Access is denied. Check credentials and try again.")
    message, save = _body(call.request.body)
    with box.lock:
        box.sent.append(SentMail(sender, call.claims.app_id, message, save))
    return GraphResponse(202, None)


def _body(raw: bytes) -> tuple[Json, bool]:
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
    # msgraph-sdk posts "Message" / "SaveToSentItems"; Graph reads action parameters whatever
    # their case, so the emulator does too
    params = {str(key).lower(): value for key, value in body.items()} if isinstance(
        body, dict) else {}
    message = params.get("message")
    if not isinstance(message, dict):
        raise GraphError(400, "ErrorInvalidParameter", "The 'message' parameter is required.")
    recipients = [r for kind in ("toRecipients", "ccRecipients", "bccRecipients")
                  for r in message.get(kind, [])]
    if not recipients or not all(
            isinstance(r, dict) and "@" in str(r.get("emailAddress", {}).get("address", ""))
            for r in recipients):
        raise GraphError(400, "ErrorInvalidRecipients",
                         "At least one recipient is not valid., Recipient is missing.")
    size = sum(len(str(a.get("contentBytes", ""))) * 3 // 4
               for a in message.get("attachments", []))
    if size > MAX_INLINE_ATTACHMENTS:
        raise GraphError(413, "ErrorRequestEntityTooLarge",
                         "The attachments are too large for one request.")
    save = params.get("savetosentitems", True)
    return message, save not in (False, "false")


def webhook_route(tenant: Tenant) -> Route:
    """POST /webhooks/{name}: keep the posted JSON under its name; 202 like a Workflows trigger.
    """

    async def receive(request: Request) -> Response:
        box = outbox(tenant)
        if box.fail_webhooks:
            return Response(status_code=503)
        try:
            document = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return Response(status_code=400)
        with box.lock:
            box.webhooks.setdefault(request.path_params["name"], []).append(document)
        return Response(status_code=202)

    return Route("/webhooks/{name}", receive, methods=["POST"])

"""PATCH an inbox rule, as `api-reference/v1.0/api/messagerule-update.md` documents it.

`PATCH /users/{id | userPrincipalName}/mailFolders/inbox/messageRules/{id}` needs the
application permission MailboxSettings.ReadWrite (the doc's only entry; MailboxSettings.Read is
refused with 403 like any missing role), changes the writable properties the body names (a
complex property such as `actions` is replaced whole, as the doc's example replaces a forward
with `markImportance`), and answers 200 with the updated messageRule. `id` and `hasError` are
read-only (messagerule.md). A rule with `isReadOnly: true` "cannot be modified or deleted by
the rules REST API" (messagerule.md); the doc does not say how Graph refuses, so the emulator
answers 403 ErrorAccessDenied. A rule that does not exist is Exchange's 404 ErrorItemNotFound;
429 comes from the gate's throttling and fault injection like every per-mailbox call.
"""

from __future__ import annotations

import orjson

from m365guard.emulator.messages import folder_of, mailbox_of
from m365guard.emulator.odata import GraphError, GraphResponse
from m365guard.emulator.resources import Json
from m365guard.emulator.service import Call

WRITE_ROLES = ("MailboxSettings.ReadWrite",)
WRITABLE = frozenset({"actions", "conditions", "displayName", "exceptions", "isEnabled",
                      "isReadOnly", "sequence"})
READ_ONLY = frozenset({"id", "hasError"})
TYPES: dict[str, tuple[type, ...]] = {
    "actions": (dict,), "conditions": (dict,), "exceptions": (dict,), "displayName": (str,),
    "isEnabled": (bool,), "isReadOnly": (bool,), "sequence": (int,),
}
NOT_FOUND = ("ErrorItemNotFound", "The specified object was not found in the store.")


def update_message_rule(call: Call, params: dict[str, str]) -> GraphResponse:
    """Apply the body's writable properties to one inbox rule and return the rule."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    if folder_of(mailbox, params["folder"]).name != "inbox":
        raise GraphError(400, "ErrorInvalidRequest", "Message rules exist only on the Inbox.")
    changes = _body(call.request.body)
    with call.service.lock:
        rule = next((rule for rule in call.tenant.message_rules(mailbox)
                     if rule.get("id") == params["rule_id"]), None)
        if rule is None:
            raise GraphError(404, *NOT_FOUND)
        if rule.get("isReadOnly"):
            raise GraphError(403, "ErrorAccessDenied",
                             "The rule is read-only and cannot be modified by the rules "
                             "REST API.")
        rule.update(changes)
        updated = dict(rule)
    body = {"@odata.context": f"{call.request.base_url}/v1.0/$metadata#users('{user['id']}')"
                              "/mailFolders('inbox')/messageRules/$entity", **updated}
    return GraphResponse(200, body)


def _body(raw: bytes) -> Json:
    """The request body's properties, each writable and of its documented type."""
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    changes = {key: value for key, value in body.items() if not key.startswith("@odata.")}
    for key, value in changes.items():
        if key in READ_ONLY:
            raise GraphError(400, "ErrorInvalidPropertyUpdate",
                             f"The property '{key}' is read-only and cannot be set.")
        if key not in WRITABLE:
            raise GraphError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{key}' on type "
                             "'microsoft.graph.messageRule'.")
        if not isinstance(value, TYPES[key]) or (key == "sequence" and isinstance(value, bool)):
            raise GraphError(400, "BadRequest",
                             f"Cannot convert the literal '{value}' to the expected type of "
                             f"the property '{key}'.")
    return changes

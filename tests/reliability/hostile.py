"""Hostile tenant data: each case is one odd thing Graph (or a tenant's users) may hand us.

`python tests/reliability/hostile.py` rewrites tests/data/hostile-tenant.json: the tiny tenant
with every case applied at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).parent.parent / "data"
TEACHER = "a1000000-0000-4000-8000-000000000002"
Doc = dict[str, Any]


def _message(n: int, **fields: Any) -> Doc:
    base: Doc = {
        "id": f"AAMkHOSTILE{n:04d}", "internetMessageId": f"<hostile{n}@manbylodge.sch.uk>",
        "conversationId": f"AAQkHOSTILE{n}", "subject": "Trip letter",
        "createdDateTime": "2024-11-19T10:00:00Z", "lastModifiedDateTime": "2024-11-19T10:00:00Z",
        "sentDateTime": "2024-11-19T10:00:00Z", "receivedDateTime": "2024-11-19T10:00:00Z",
        "hasAttachments": False, "isRead": True, "isDraft": False,
        "from": {"emailAddress": {"name": "Jane Smith", "address": "jsmith@manbylodge.sch.uk"}},
        "toRecipients": [
            {"emailAddress": {"name": "Parent One", "address": "parent.one@gmail.com"}},
            {"emailAddress": {"name": "Parent Two", "address": "parent.two@hotmail.co.uk"}}],
        "ccRecipients": [], "bccRecipients": [], "replyTo": [],
    }
    base.update(fields)
    return base


def _sent(n: int, **fields: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        doc["mailboxes"][TEACHER]["sentitems"].append(_message(n, **fields))
    return apply


def _to(*recipients: Any) -> list[Any]:
    return list(recipients)


def _addr(name: Any, address: Any) -> Doc:
    return {"emailAddress": {"name": name, "address": address}}


def _user(n: int, **fields: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        user = {"id": f"b2000000-0000-4000-8000-{n:012d}",
                "userPrincipalName": f"odd{n}@manbylodge.sch.uk",
                "mail": f"odd{n}@manbylodge.sch.uk", "displayName": "Odd User",
                "accountEnabled": True, "assignedLicenses": [], "x-hasMailbox": False}
        user.update(fields)
        doc["users"].append(user)
    return apply


def _rule(**fields: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        rule = {"id": "AQAAAHOSTILE=", "displayName": "odd", "sequence": 9, "isEnabled": True,
                "hasError": False, "isReadOnly": False, "conditions": {},
                "actions": {"forwardTo": [_addr("Me", "me.personal@gmail.com")]}}
        rule.update(fields)
        doc["mailboxes"][TEACHER]["messageRules"].append(rule)
    return apply


def _dup_message(doc: Doc) -> None:
    sent = doc["mailboxes"][TEACHER]["sentitems"]
    sent.append(copy.deepcopy(sent[0]))


LONG = "Re: " + "very long subject " * 560  # about 10,000 characters
CASES: dict[str, Callable[[Doc], None]] = {
    "message without from": _sent(1, **{"from": None}),
    "message with null subject": _sent(2, subject=None),
    "10,000-character subject": _sent(3, subject=LONG[:10_000]),
    "NUL bytes in subject and name": _sent(4, subject="Trip\x00letter\x00",
                                           toRecipients=_to(_addr("Par\x00ent", "p1@gmail.com"),
                                                            _addr("B", "p2@gmail.com"))),
    "right-to-left and non-ASCII names": _sent(
        5, subject="رحلة المدرسة \u202eevil.exe", toRecipients=_to(
            _addr("\u202eأحمد الحسن", "ahmed.hassan@gmail.com"),
            _addr("Zoë Ñúñez 李雷", "zoe.nunez@yahoo.co.uk"))),
    "quotes commas angle brackets in names": _sent(6, toRecipients=_to(
        _addr('"Smith, John" <john@evil.example>', "john.smith@gmail.com"),
        _addr("O'Brien, \"Mags\" <>", "mags@hotmail.com"))),
    "malformed addresses": _sent(7, toRecipients=_to(
        _addr("x", "not-an-address"), _addr("y", "a@@b"), _addr("z", "<p3@gmail.com>"),
        _addr("w", " P4@GMAIL.COM "), _addr("v", ""))),
    "recipient with null emailAddress": _sent(8, toRecipients=[{"emailAddress": None}, None]),
    "recipients not a list": _sent(9, toRecipients="parent.one@gmail.com", ccRecipients={}),
    "subject of the wrong type": _sent(10, subject=12345, hasAttachments="yes"),
    "null sent date": _sent(11, sentDateTime=None),
    "duplicate message ids": _dup_message,
    "user with null mail and name": _user(1, mail=None, displayName=None),
    "user with numeric display name": _user(2, displayName=42, accountEnabled=None),
    "user with licences not a list": _user(3, assignedLicenses=None),
    "duplicate user id": _user(1, userPrincipalName="dup@manbylodge.sch.uk"),
    "rule with null actions": _rule(actions=None),
    "rule forwarding to a malformed address": _rule(
        id="AQAAAHOSTILE2=", actions={"redirectTo": [_addr(None, "<<>>"), {"x": 1}]}),
}


def hostile_document(tiny: Doc, names: list[str] | None = None) -> Doc:
    doc = copy.deepcopy(tiny)
    for name in names if names is not None else list(CASES):
        CASES[name](doc)
    return doc


if __name__ == "__main__":
    tiny = orjson.loads((DATA / "tiny-tenant.json").read_bytes())
    (DATA / "hostile-tenant.json").write_bytes(
        orjson.dumps(hostile_document(tiny), option=orjson.OPT_INDENT_2) + b"\n")

"""PATCH messageRules as messagerule-update.md documents it, through the real msal and SDK."""

from __future__ import annotations

import httpx
from enforce_support import (
    DOC_RULE,
    DOC_UPDATE_REQUEST,
    DOC_UPDATE_RESPONSE,
    FORWARD_RULE,
    HEAD_ID,
    READ_ONLY_RULE,
    TEACHER,
    TEACHER_ID,
    conn_for,
    read_emulator,
    session_for,
    tenant_rule,
    workdir,
    write_emulator,
)

from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import RunningEmulator
from m365guard.graph.auth import TokenSource
from m365guard.graph.rule_write import RuleAnswer, read_rule, rule_properties, set_rule_enabled

__all__ = ["read_emulator", "workdir", "write_emulator"]


def _raw(emulator: RunningEmulator, method: str, path: str, **kwargs: object) -> httpx.Response:
    settings = emulator.settings
    token = TokenSource(conn_for(settings)).token()
    with httpx.Client(base_url=f"{settings.graph_endpoint}/v1.0", verify=settings.ca_bundle,
                      headers={"Authorization": f"Bearer {token}"}, trust_env=False) as client:
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]


def test_the_docs_example_request_gets_the_docs_example_response(
        write_emulator: RunningEmulator) -> None:
    response = _raw(write_emulator, "PATCH",
                    f"/users/{HEAD_ID}/mailFolders/inbox/messageRules/{DOC_RULE}",
                    json=DOC_UPDATE_REQUEST)
    assert response.status_code == 200
    want = {**rule_properties(DOC_UPDATE_RESPONSE), "id": DOC_RULE}  # type: ignore[dict-item]
    assert rule_properties(response.json()) == want
    assert response.json()["@odata.context"].endswith("/mailFolders('inbox')/messageRules/$entity")
    # actions are replaced whole: the forward is gone, as in the doc's example
    assert tenant_rule(write_emulator, HEAD_ID, DOC_RULE)["actions"] == {"markImportance": "high"}


def test_the_docs_example_response_reads_as_the_updated_rule() -> None:
    rule = rule_properties(DOC_UPDATE_RESPONSE)
    assert rule is not None
    answer = RuleAnswer(200, rule)
    assert answer.ok and answer.error == "HTTP 200"
    assert rule["isEnabled"] is True and rule["actions"] == {"markImportance": "high"}
    assert not any(key.startswith("@odata.") for key in rule)
    assert rule_properties(["not", "a", "rule"]) is None


def test_disable_then_enable_through_the_sdk(write_emulator: RunningEmulator) -> None:
    before = tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE).copy()
    with session_for(write_emulator) as session:
        off = session.run(set_rule_enabled(session, TEACHER, FORWARD_RULE, False))
        assert off.ok and off.rule is not None and off.rule["isEnabled"] is False
        assert {**off.rule, "isEnabled": True} == before  # nothing else changed
        read = session.run(read_rule(session, TEACHER, FORWARD_RULE))
        assert read.rule == off.rule
        on = session.run(set_rule_enabled(session, TEACHER, FORWARD_RULE, True))
        assert on.rule == before


def test_a_token_with_only_mailboxsettings_read_is_refused(read_emulator: RunningEmulator) -> None:
    with session_for(read_emulator) as session:
        assert "MailboxSettings.ReadWrite" not in session.granted_roles
        answer = session.run(set_rule_enabled(session, TEACHER, FORWARD_RULE, False))
        readable = session.run(read_rule(session, TEACHER, FORWARD_RULE))
    assert (answer.status, answer.code) == (403, "ErrorAccessDenied")
    assert answer.rule is None
    assert readable.ok and readable.rule is not None and readable.rule["isEnabled"] is True
    assert tenant_rule(read_emulator, TEACHER_ID, FORWARD_RULE)["isEnabled"] is True


def test_a_read_only_rule_is_refused(write_emulator: RunningEmulator) -> None:
    with session_for(write_emulator) as session:
        answer = session.run(set_rule_enabled(session, TEACHER, READ_ONLY_RULE, False))
    assert (answer.status, answer.code) == (403, "ErrorAccessDenied")
    assert tenant_rule(write_emulator, TEACHER_ID, READ_ONLY_RULE)["isEnabled"] is True


def test_an_unknown_rule_or_mailbox_is_404(write_emulator: RunningEmulator) -> None:
    with session_for(write_emulator) as session:
        gone = session.run(set_rule_enabled(session, TEACHER, "AQAAAJ5dZqX=", False))
        nobody = session.run(set_rule_enabled(session, "nobody@manbylodge.sch.uk",
                                              FORWARD_RULE, False))
        unread = session.run(read_rule(session, TEACHER, "AQAAAJ5dZqX="))
    assert (gone.status, gone.code) == (404, "ErrorItemNotFound")
    assert (nobody.status, nobody.code) == (404, "ErrorInvalidUser")
    assert (unread.status, unread.rule) == (404, None)


def test_throttled_writes_are_retried_then_reported(write_emulator: RunningEmulator) -> None:
    write_emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(429,),
                                          retry_after_s=(0.01,)))
    with session_for(write_emulator) as session:
        write_emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(429,),
                                              retry_after_s=(0.01,)))
        answer = session.run(set_rule_enabled(session, TEACHER, FORWARD_RULE, False))
        assert answer.status == 429 and answer.code == "TooManyRequests"
        assert session.counter.by_status[429] == 3  # every attempt of FAST_RETRY
        write_emulator.set_faults(FaultConfig(error_rate=0.5, error_statuses=(429,), seed=3,
                                              retry_after_s=(0.01,)))
        retried = session.run(set_rule_enabled(session, TEACHER, FORWARD_RULE, False))
    assert retried.ok
    assert tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE)["isEnabled"] is False


def test_read_only_properties_and_unknown_ones_are_400(write_emulator: RunningEmulator) -> None:
    path = f"/users/{TEACHER_ID}/mailFolders/inbox/messageRules/{FORWARD_RULE}"
    for body in ({"id": "x"}, {"hasError": True}, {"colour": "red"}, {"isEnabled": "no"}):
        response = _raw(write_emulator, "PATCH", path, json=body)
        assert response.status_code == 400, body
    assert _raw(write_emulator, "PATCH", path, content=b"not json").status_code == 400
    assert _raw(write_emulator, "PATCH", path.replace("inbox", "sentitems"),
                json={"isEnabled": False}).status_code == 400
    assert tenant_rule(write_emulator, TEACHER_ID, FORWARD_RULE)["isEnabled"] is True

"""Graph's answers for bad tokens, missing roles, missing mailboxes and unsupported queries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from emulator_clients import TEACHER, http, secret_token

from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant

MESSAGES = f"/users/{TEACHER}/mailFolders/sentitems/messages"


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    error: dict[str, object] = body["error"]
    assert set(error) == {"code", "message", "innerError"}
    assert {"date", "request-id", "client-request-id"} == set(error["innerError"])  # type: ignore[arg-type]
    return error


def test_missing_expired_and_forged_tokens_are_401(emulator: RunningEmulator) -> None:
    settings = emulator.settings
    expired = emulator.identity.issue_access_token(["User.Read.All"], lifetime_s=-600)
    foreign = emulator.identity.issue_access_token(["User.Read.All"],
                                                   tenant_id="00000000-0000-0000-0000-000000000001")
    good = secret_token(settings)
    forged = good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8)
    for token in (None, expired, foreign, forged):
        with http(settings, token) as client:
            response = client.get("/users")
        assert response.status_code == 401
        assert error_of(response)["code"] == "InvalidAuthenticationToken"


@pytest.mark.parametrize(("path", "code"), [
    ("/users", "Authorization_RequestDenied"),
    (MESSAGES, "ErrorAccessDenied"),
    (f"/users/{TEACHER}/mailFolders/inbox/messageRules", "ErrorAccessDenied"),
    (f"/users/{TEACHER}/chats", "Forbidden"),
])
def test_a_token_without_the_role_is_403(tenant: Tenant, workdir: Path, path: str,
                                         code: str) -> None:
    only_skus = ["LicenseAssignment.Read.All"]
    with start_in_thread(tenant, workdir=workdir, roles=only_skus) as emulator, \
            http(emulator.settings, secret_token(emulator.settings)) as client:
        assert client.get("/subscribedSkus").status_code == 200
        response = client.get(path, headers={"client-request-id": "abc-123"})
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == code
    assert error["innerError"]["client-request-id"] == "abc-123"  # type: ignore[index]


def test_graph_errors_for_users_mailboxes_queries_and_batches(emulator: RunningEmulator) -> None:
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        def code(path: str, status: int, **kwargs: object) -> object:
            response = client.request(kwargs.pop("method", "GET"), path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == status, response.text
            return error_of(response)["code"]

        assert code("/users/office@manbylodge.sch.uk/mailFolders/inbox/messages", 404) == (
            "MailboxNotEnabledForRESTAPI")
        assert code("/users/nobody@x.org/mailboxSettings", 404) == "ErrorInvalidUser"
        assert code("/users/nobody@x.org", 404) == "Request_ResourceNotFound"
        assert code(f"{MESSAGES}?$top=1001", 400) == "ErrorInvalidUrlQuery"
        assert code("/users?$top=1000", 400) == "Request_BadRequest"
        assert code(f"{MESSAGES}?$select=nonsense", 400) == "RequestBroker--ParseUri"
        assert code(f"{MESSAGES}?$filter=receivedDateTime ge 2024-11-01T00:00:00Z"
                    "&$orderby=sentDateTime desc", 400) == "InefficientFilter"
        assert code(f"{MESSAGES}/delta?$deltatoken=unknown", 410) == "syncStateNotFound"
        assert code("/users?$skiptoken=%%%", 400) == "BadRequest"
        assert code("/nonsense", 400) == "BadRequest"
        assert code("/$batch", 400, method="POST", json={"requests": [
            {"id": str(i), "method": "GET", "url": "/users"} for i in range(21)]}) == "BadRequest"
        assert code("/$batch", 400, method="POST", json={"requests": [
            {"id": "1", "method": "GET", "url": "/users", "dependsOn": ["2"]},
            {"id": "2", "method": "GET", "url": "/users", "dependsOn": ["1"]}]}) == "BadRequest"


def test_default_user_properties_and_directory_filter(emulator: RunningEmulator) -> None:
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        users = client.get("/users").json()["value"]
        assert "accountEnabled" not in users[0] and "userPrincipalName" in users[0]
        disabled = client.get("/users", params={"$filter": "accountEnabled eq false",
                                                "$select": "id,accountEnabled"}).json()["value"]
        assert [u["id"] for u in disabled] == ["a1000000-0000-4000-8000-000000000006"]
        staff = client.get("/groups", params={"$filter": "startswith(displayName,'all')"})
        assert [g["displayName"] for g in staff.json()["value"]] == ["All Staff"]


def test_message_pages_stay_consistent_while_the_clock_moves(emulator: RunningEmulator) -> None:
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        first = client.get(MESSAGES, params={"$top": "2", "$select": "subject"}).json()
        emulator.tenant.advance_to(datetime(2024, 11, 22, tzinfo=UTC))
        rest = client.get(first["@odata.nextLink"]).json()
        assert "@odata.nextLink" not in rest
    subjects = [m["subject"] for page in (first, rest) for m in page["value"]]
    assert subjects == ["Deleted later", "Newsletter", "Homework", "Trip letter"]

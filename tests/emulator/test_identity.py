"""The Entra-like endpoint through real msal: secrets, certificates, and Entra's errors."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from emulator_clients import GRAPH_SCOPE, msal_app, requests_session

from m365guard.emulator.server import RunningEmulator


def certificate_credential(emulator: RunningEmulator) -> dict[str, str]:
    pem = Path(emulator.settings.certificate_path).read_text()
    return {"private_key": pem, "public_certificate": pem}


def test_client_secret_gets_a_graph_token_with_tenant_app_and_roles(
        emulator: RunningEmulator) -> None:
    result = msal_app(emulator.settings).acquire_token_for_client(GRAPH_SCOPE)
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["tid"] == emulator.settings.tenant_id
    assert claims["appid"] == emulator.settings.client_id
    assert claims["aud"] == "https://graph.microsoft.com"
    assert "Mail.ReadBasic.All" in claims["roles"] and "Mail.Read" not in claims["roles"]
    assert jwt.get_unverified_header(result["access_token"])["alg"] == "RS256"


def test_certificate_assertion_gets_a_token(emulator: RunningEmulator) -> None:
    result = msal_app(emulator.settings, certificate_credential(emulator)) \
        .acquire_token_for_client(GRAPH_SCOPE)
    assert result.get("token_type") == "Bearer", result


def test_certificate_with_thumbprint_and_scope_on_graph_endpoint(
        emulator: RunningEmulator) -> None:
    settings = emulator.settings
    pem = Path(settings.certificate_path).read_text()
    credential = {"private_key": pem, "thumbprint": settings.certificate_thumbprint}
    result = msal_app(settings, credential).acquire_token_for_client(
        [f"{settings.graph_endpoint}/.default"])
    assert "access_token" in result, result


def test_wrong_secret_is_aadsts7000215(emulator: RunningEmulator) -> None:
    result = msal_app(emulator.settings, "not-the-secret").acquire_token_for_client(GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert {"timestamp", "trace_id", "correlation_id"} <= result.keys()


def test_unknown_client_is_aadsts700016(emulator: RunningEmulator) -> None:
    result = msal_app(emulator.settings, client_id=str(uuid.uuid4())) \
        .acquire_token_for_client(GRAPH_SCOPE)
    assert result["error"] == "unauthorized_client" and result["error_codes"] == [700016]


def test_unknown_tenant_is_aadsts90002(emulator: RunningEmulator) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration") as caught:
        msal_app(emulator.settings, tenant=str(uuid.uuid4())).acquire_token_for_client(
            GRAPH_SCOPE)
    assert "AADSTS90002" in str(caught.value.__context__)


def test_scope_without_default_is_rejected(emulator: RunningEmulator) -> None:
    result = msal_app(emulator.settings).acquire_token_for_client(
        ["https://graph.microsoft.com/User.Read.All"])
    assert result["error"] == "invalid_scope" and result["error_codes"] == [1002012]


def post_assertion(emulator: RunningEmulator, assertion: str) -> dict[str, object]:
    settings = emulator.settings
    endpoint = f"{settings.authority_host}/{settings.tenant_id}/oauth2/v2.0/token"
    response = requests_session(settings).post(endpoint, data={
        "grant_type": "client_credentials", "client_id": settings.client_id,
        "scope": GRAPH_SCOPE[0], "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert response.status_code in (200, 401)
    body: dict[str, object] = response.json()
    return body


def assertion_claims(emulator: RunningEmulator, **overrides: object) -> dict[str, object]:
    settings = emulator.settings
    now = int(time.time())
    claims: dict[str, object] = {
        "aud": f"{settings.authority_host}/{settings.tenant_id}/oauth2/v2.0/token",
        "iss": settings.client_id, "sub": settings.client_id, "jti": str(uuid.uuid4()),
        "iat": now, "nbf": now, "exp": now + 600}
    claims.update(overrides)
    return claims


def test_rs256_assertion_with_sha1_x5t_is_accepted(emulator: RunningEmulator) -> None:
    pem = Path(emulator.settings.certificate_path).read_bytes()
    x5t = emulator.identity.app.sha1_x5t
    token = jwt.encode(assertion_claims(emulator), pem, algorithm="RS256", headers={"x5t": x5t})
    assert "access_token" in post_assertion(emulator, token)


def test_expired_assertion_is_aadsts700024(emulator: RunningEmulator) -> None:
    pem = Path(emulator.settings.certificate_path).read_bytes()
    old = int(time.time()) - 3600
    token = jwt.encode(assertion_claims(emulator, iat=old - 600, nbf=old - 600, exp=old), pem,
                       algorithm="PS256", headers={"x5t#S256": emulator.identity.app.sha256_x5t})
    assert post_assertion(emulator, token)["error_codes"] == [700024]


def test_assertion_signed_by_another_key_is_aadsts700027(emulator: RunningEmulator) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(assertion_claims(emulator), stranger, algorithm="PS256",
                       headers={"x5t#S256": emulator.identity.app.sha256_x5t})
    body = post_assertion(emulator, token)
    assert body["error"] == "invalid_client" and body["error_codes"] == [700027]


def test_discovery_documents_answer_like_entra(emulator: RunningEmulator) -> None:
    settings = emulator.settings
    session = requests_session(settings)
    config = session.get(f"{settings.authority_host}/{settings.tenant_id}"
                         "/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == (
        f"{settings.authority_host}/{settings.tenant_id}/oauth2/v2.0/token")
    instance = session.get(f"{settings.authority_host}/common/discovery/instance", params={
        "api-version": "1.1",
        "authorization_endpoint": f"{settings.authority_host}/{settings.tenant_id}"
                                  "/oauth2/v2.0/authorize"}).json()
    assert instance["tenant_discovery_endpoint"].endswith(
        f"/{settings.tenant_id}/v2.0/.well-known/openid-configuration")
    unknown = session.get(f"{settings.authority_host}/nobody.example/v2.0/"
                          ".well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]

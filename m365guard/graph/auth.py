"""App-only tokens from Entra ID through msal, with every failure turned into one GuardError line.

A certificate (PEM with its key, or PFX with a password) is the recommended credential: it is
sent as a signed assertion carrying the public certificate (x5c), so the secret never travels.
A client secret is the fallback. Tokens are cached by msal for the run and are never logged.

TLS is always verified. An explicit CA bundle must win over REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE,
which `requests` otherwise lets override `Session.verify`, while proxies from the environment
(HTTPS_PROXY, NO_PROXY) keep working: `VerifiedSession` pins `verify` after the merge.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from m365guard.errors import ExitCode, GuardError
from m365guard.graph.settings import CLOUD_HOSTS, ConnectionSettings
from m365guard.logs import mask_secret

# Refresh a cached token this long before it expires, so no request carries a dying token.
_EXPIRY_MARGIN_SECONDS = 300
_AUTH_TIMEOUT_SECONDS = 30.0
_MICROSOFT_AUTHORITIES = {authority for authority, _ in CLOUD_HOSTS.values()}


class VerifiedSession(requests.Session):
    """A requests session whose CA bundle cannot be overridden by the environment."""

    def __init__(self, ca_bundle: Path | None) -> None:
        super().__init__()
        self._ca_bundle = ca_bundle

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self._ca_bundle is not None:
            settings["verify"] = str(self._ca_bundle)
        elif not settings.get("verify"):
            settings["verify"] = True  # verification can never be switched off
        return settings

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", _AUTH_TIMEOUT_SECONDS)
        return super().request(*args, **kwargs)


def load_certificate(path: Path, password: str | None) -> dict[str, str]:
    """Read a PEM (key + certificate) or PFX file into msal's client_credential form."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GuardError(
            f"certificate_path: cannot read {path} ({exc.strerror}); fix the path or permissions",
            ExitCode.CERTIFICATE_ERROR,
        ) from exc
    secret = password.encode() if password else None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, secret)
            certificate = x509.load_pem_x509_certificate(data)
        else:
            key_or_none, certificate_or_none, _ = pkcs12.load_key_and_certificates(data, secret)
            if key_or_none is None or certificate_or_none is None:
                raise ValueError("the PFX holds no private key and certificate")
            key, certificate = key_or_none, certificate_or_none
    except (ValueError, TypeError) as exc:
        hint = "wrong or missing password (M365GUARD_CERT_PASSWORD)" if (
            "password" in str(exc).lower() or "decrypt" in str(exc).lower()
        ) else "it must be a PEM with its private key, or a PFX"
        raise GuardError(
            f"certificate_path: cannot use {path}: {hint}", ExitCode.CERTIFICATE_ERROR
        ) from exc
    expires = certificate.not_valid_after_utc
    if expires <= dt.datetime.now(dt.UTC):
        raise GuardError(
            f"certificate {path} expired on {expires:%Y-%m-%d}; create a new one and upload it"
            " to the app registration",
            ExitCode.CERTIFICATE_ERROR,
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return {"private_key": key_pem, "public_certificate": public_pem}


def connection_error(exc: requests.RequestException, host: str) -> GuardError:
    """A transport failure: TLS verification or an unreachable host."""
    if isinstance(exc, requests.exceptions.SSLError):
        return GuardError(
            f"TLS verification failed for {host}: set ca_bundle / M365GUARD_CA_BUNDLE to the CA"
            " that signs it (a TLS-inspecting proxy needs its own CA)",
            ExitCode.TLS_ERROR,
        )
    return GuardError(
        f"cannot reach {host}: check authority_host, the network and HTTPS_PROXY",
        ExitCode.HOST_UNREACHABLE,
    )


def _token_error(result: Mapping[str, Any], conn: ConnectionSettings) -> GuardError:
    """Map Entra ID's error response (AADSTS codes) to one line and its exit code."""
    error = str(result.get("error", "unknown_error"))
    codes = {int(code) for code in result.get("error_codes", []) if str(code).isdigit()}
    first_line = str(result.get("error_description", "")).split("\n", 1)[0][:160]
    if error == "invalid_tenant" or codes & {90002, 90023, 900023}:
        return GuardError(
            f"tenant {conn.tenant_id} is not known to {conn.authority_host}: check tenant_id",
            ExitCode.UNKNOWN_TENANT,
        )
    if conn.uses_certificate and codes & {700027, 700024, 7000274, 700023}:
        return GuardError(
            f"the certificate was rejected ({first_line}): upload {conn.certificate_path}'s"
            " public certificate to the app registration",
            ExitCode.CERTIFICATE_ERROR,
        )
    if codes & {700016}:
        return GuardError(
            f"client_id {conn.client_id} is not registered in tenant {conn.tenant_id}:"
            " check client_id",
            ExitCode.CLIENT_REJECTED,
        )
    what = "certificate" if conn.uses_certificate else "client secret"
    return GuardError(
        f"the {what} was rejected for client_id {conn.client_id} ({error}: {first_line});"
        f" check the {what} and client_id",
        ExitCode.CLIENT_REJECTED,
    )


class TokenSource:
    """One msal confidential client for the run; hands out a cached Graph token."""

    def __init__(self, conn: ConnectionSettings) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._token = ""
        self._expires_at = 0.0
        self.granted_roles: frozenset[str] = frozenset()
        if conn.uses_certificate:
            assert conn.certificate_path is not None
            password = conn.certificate_password
            credential: Any = load_certificate(
                conn.certificate_path, password.get_secret_value() if password else None
            )
        else:
            assert conn.client_secret is not None
            credential = conn.client_secret.get_secret_value()
            mask_secret(credential)
        microsoft_host = conn.authority_host in _MICROSOFT_AUTHORITIES
        try:
            self._app = msal.ConfidentialClientApplication(
                conn.client_id,
                client_credential=credential,
                authority=conn.authority,
                validate_authority=microsoft_host,
                instance_discovery=microsoft_host,
                http_client=VerifiedSession(conn.ca_bundle),
                token_cache=msal.TokenCache(),
            )
        except requests.RequestException as exc:
            raise connection_error(exc, conn.authority_host) from exc
        except ValueError as exc:
            raise GuardError(
                f"tenant {conn.tenant_id} is not known to {conn.authority_host}: check tenant_id"
                " (and cloud / authority_host)",
                ExitCode.UNKNOWN_TENANT,
            ) from exc

    @property
    def scope(self) -> str:
        """Application permissions are requested as the resource's .default scope."""
        return f"{self._conn.graph_endpoint}/.default"

    def cached(self) -> str | None:
        """The cached token if it is still good, without any network call."""
        if self._token and time.time() < self._expires_at - _EXPIRY_MARGIN_SECONDS:
            return self._token
        return None

    def token(self) -> str:
        """A valid access token (from the cache while it has more than a few minutes left)."""
        with self._lock:
            if self._token and time.time() < self._expires_at - _EXPIRY_MARGIN_SECONDS:
                return self._token
            try:
                result = self._app.acquire_token_for_client(scopes=[self.scope])
            except requests.RequestException as exc:
                raise connection_error(exc, self._conn.authority_host) from exc
            except msal.exceptions.MsalServiceError as exc:
                raise GuardError(
                    f"{self._conn.authority_host} failed to issue a token ({exc}); try again later",
                    ExitCode.HOST_UNREACHABLE,
                ) from exc
            if "access_token" not in result:
                raise _token_error(result, self._conn)
            self._token = str(result["access_token"])
            mask_secret(self._token)
            self._expires_at = time.time() + float(result.get("expires_in", 3600))
            self.granted_roles = frozenset(token_roles(self._token))
            return self._token


def token_roles(token: str) -> list[str]:
    """The application permissions (`roles` claim) a token carries; read, not verified."""
    claims = jwt.decode(token, options={"verify_signature": False})
    roles = claims.get("roles", [])
    return [str(role) for role in roles] if isinstance(roles, list) else []

"""An Entra-like identity endpoint: discovery, the v2.0 token endpoint, and token checks.

Only the app-only client credentials grant exists here, with a client secret or a certificate
assertion (RFC 7523 JWT, verified against the registered certificate; msal signs PS256 with an
`x5t#S256` header, older clients RS256 with `x5t`). Errors use Entra's JSON shape and AADSTS
codes so that clients are tested against the messages a technician will really see.
Access tokens are RS256 JWTs signed by the emulator carrying tid, appid, roles, aud and exp.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME_S = 3599

# What roles=None grants: the least-privilege set m365guard documents (DESIGN.md), plus
# LicenseAssignment.Read.All, which Graph's v1.0 permission table lists as least privileged
# for GET /subscribedSkus (Organization.Read.All and Directory.Read.All are higher).
LEAST_PRIVILEGE_ROLES = (
    "User.Read.All",
    "GroupMember.Read.All",
    "EduRoster.Read.All",
    "Mail.ReadBasic.All",
    "MailboxSettings.Read",
    "Chat.ReadBasic.All",
    "AuditLogsQuery-Exchange.Read.All",
    "LicenseAssignment.Read.All",
)


@dataclass
class AppRegistration:
    """The one application registered in the emulated tenant."""

    client_id: str
    client_secret: str
    certificate_pem: bytes
    roles: tuple[str, ...]
    public_key: rsa.RSAPublicKey = field(init=False)
    sha1_x5t: str = field(init=False)
    sha256_x5t: str = field(init=False)

    def __post_init__(self) -> None:
        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the app certificate must hold an RSA key")
        self.public_key = key
        der = cert.public_bytes(serialization.Encoding.DER)
        self.sha1_x5t = _b64url(hashlib.sha1(der).digest())  # noqa: S324 (x5t is SHA-1)
        self.sha256_x5t = _b64url(hashlib.sha256(der).digest())


@dataclass(frozen=True)
class Claims:
    """What Graph reads from a valid access token."""

    app_id: str
    tenant_id: str
    roles: frozenset[str]


class TokenRejected(Exception):
    """An access token Graph would refuse with 401 InvalidAuthenticationToken."""


@dataclass(frozen=True)
class IdentityAnswer:
    """An HTTP answer from the identity endpoint: status and JSON body."""

    status: int
    body: dict[str, Any]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _entra_error(status: int, error: str, code: int, description: str) -> IdentityAnswer:
    """Entra's error body: error, error_description (AADSTS...), error_codes, ids, timestamp."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return IdentityAnswer(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} "
                             f"Correlation ID: {correlation_id} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    })


class Identity:
    """The tenant's identity provider: knows the app, signs and checks access tokens."""

    def __init__(self, tenant_id: str, domains: Collection[str], app: AppRegistration) -> None:
        self.tenant_id = tenant_id
        self.names = {tenant_id.lower(), *(d.lower() for d in domains)}
        self.app = app
        self.apps = {app.client_id: app}  # further registrations: `register`
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._verify_key = self._signing_key.public_key()
        spki = self._verify_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = _b64url(hashlib.sha256(spki).digest())[:27]

    def register(self, app: AppRegistration) -> None:
        """Another app registration in the tenant (enforcement's write app, say)."""
        self.apps[app.client_id] = app

    def knows(self, tenant: str) -> bool:
        return tenant.lower() in self.names

    def unknown_tenant(self, tenant: str) -> IdentityAnswer:
        return _entra_error(
            400, "invalid_tenant", 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )

    # -- discovery ---------------------------------------------------------------------------

    def openid_configuration(self, base_url: str, tenant: str) -> IdentityAnswer:
        if not self.knows(tenant):
            return self.unknown_tenant(tenant)
        root = f"{base_url}/{self.tenant_id}"
        return IdentityAnswer(200, {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base_url}/{self.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base_url}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": base_url.removeprefix("https://"),
        })

    def instance_discovery(self, base_url: str, authorization_endpoint: str) -> IdentityAnswer:
        """Answer msal's instance discovery as Entra does for a known authority."""
        host = base_url.removeprefix("https://")
        path = urlsplit(authorization_endpoint).path.strip("/")
        tenant = path.split("/", 1)[0] if path else "common"
        return IdentityAnswer(200, {
            "tenant_discovery_endpoint":
                f"{base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    def jwks(self) -> IdentityAnswer:
        numbers = self._verify_key.public_numbers()
        def as_b64(value: int) -> str:
            return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))
        return IdentityAnswer(200, {"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.key_id,
            "n": as_b64(numbers.n), "e": as_b64(numbers.e),
        }]})

    # -- the token endpoint ------------------------------------------------------------------

    def token(self, base_url: str, tenant: str, form: Mapping[str, str]) -> IdentityAnswer:
        """POST /{tenant}/oauth2/v2.0/token for the client credentials grant."""
        if not self.knows(tenant):
            return self.unknown_tenant(tenant)
        if form.get("grant_type") != "client_credentials":
            return _entra_error(400, "unsupported_grant_type", 70003,
                                "The app requested an unsupported grant type "
                                f"'{form.get('grant_type', '')}'.")
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            return _entra_error(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant.",
            )
        scope_error = self._check_scope(base_url, form.get("scope", ""))
        if scope_error is not None:
            return scope_error
        if "client_assertion" in form:
            assertion_error = self._check_assertion(base_url, tenant, form, app)
            if assertion_error is not None:
                return assertion_error
        elif "client_secret" in form:
            if not secrets.compare_digest(form["client_secret"], app.client_secret):
                return _entra_error(
                    401, "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    f"is the client secret value, not the client secret ID, for a secret added "
                    f"to app '{client_id}'.",
                )
        else:
            return _entra_error(
                401, "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        return IdentityAnswer(200, {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": self.issue_access_token(app.roles, app_id=app.client_id),
        })

    def _check_scope(self, base_url: str, scope: str) -> IdentityAnswer | None:
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return _entra_error(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = scopes[0].removesuffix("/.default")
        if resource not in (GRAPH_RESOURCE, GRAPH_APP_ID, base_url, f"{base_url}/"):
            return _entra_error(
                400, "invalid_resource", 500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{self.tenant_id}.",
            )
        return None

    def _check_assertion(self, base_url: str, tenant: str, form: Mapping[str, str],
                         app: AppRegistration) -> IdentityAnswer | None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return _entra_error(400, "invalid_request", 90014,
                                "The request body must contain the following parameter: "
                                "'client_assertion_type'.")
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return _entra_error(401, "invalid_client", 700027,
                                "Client assertion failed signature validation.")
        # msal pads its base64url thumbprints with "="; RFC 7515 does not: accept both.
        thumb_256 = str(header.get("x5t#S256") or "").rstrip("=")
        thumb_1 = str(header.get("x5t") or "").rstrip("=")
        if thumb_256 != app.sha256_x5t and thumb_1 != app.sha1_x5t:
            return _entra_error(
                401, "invalid_client", 700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found., "
                f"Thumbprint of key used by client: '{thumb_256 or thumb_1}']",
            )
        if header.get("alg") not in ("RS256", "PS256"):
            return _entra_error(401, "invalid_client", 700027,
                                "Client assertion failed signature validation.")
        audiences = [f"{base_url}/{name}/oauth2/v2.0/token" for name in (tenant, self.tenant_id)]
        try:
            claims = jwt.decode(
                assertion, app.public_key, algorithms=[header["alg"]],
                audience=audiences, options={"require": ["exp", "aud", "iss", "sub"]},
                leeway=300,
            )
        except jwt.ExpiredSignatureError:
            return _entra_error(401, "invalid_client", 700024,
                                "Client assertion is not within its valid time range.")
        except jwt.InvalidAudienceError:
            return _entra_error(
                401, "invalid_client", 700021,
                f"Client assertion audience claim does not match Realm issuer. "
                f"Expected: {audiences[1]}.",
            )
        except jwt.PyJWTError:
            return _entra_error(401, "invalid_client", 700027,
                                "Client assertion failed signature validation.")
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return _entra_error(401, "invalid_client", 700023,
                                "Client assertion issuer and subject must be the client id.")
        return None

    # -- access tokens -----------------------------------------------------------------------

    def issue_access_token(self, roles: Collection[str], *, lifetime_s: int = TOKEN_LIFETIME_S,
                           tenant_id: str | None = None, app_id: str | None = None) -> str:
        """An app-only Graph token (tests forge expired or foreign-tenant ones with this)."""
        now = int(time.time())
        app_id = app_id or self.app.client_id
        claims: dict[str, Any] = {
            "aud": GRAPH_RESOURCE,
            "iss": f"https://sts.windows.net/{tenant_id or self.tenant_id}/",
            "iat": now, "nbf": now, "exp": now + lifetime_s,
            "appid": app_id, "appidacr": "1", "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app_id)),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, app_id)),
            "tid": tenant_id or self.tenant_id,
            "ver": "1.0",
        }
        if roles:
            claims["roles"] = sorted(roles)
        return jwt.encode(claims, self._signing_key, algorithm="RS256",
                          headers={"kid": self.key_id, "typ": "JWT"})

    def verify_access_token(self, token: str) -> Claims:
        """Check a bearer token as Graph does; raise TokenRejected with Graph's reason."""
        try:
            claims = jwt.decode(token, self._verify_key, algorithms=["RS256"],
                                audience=[GRAPH_RESOURCE, GRAPH_APP_ID],
                                options={"require": ["exp", "aud", "tid"]})
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("Lifetime validation failed, the token is expired.") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("Signature verification failed.") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("IDX14100: JWT is not well formed.") from exc
        if claims["tid"] != self.tenant_id:
            raise TokenRejected("Access token validation failure. Invalid audience.")
        return Claims(str(claims.get("appid", "")), claims["tid"],
                      frozenset(claims.get("roles", ())))

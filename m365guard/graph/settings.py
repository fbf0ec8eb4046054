"""Connection settings: the [tenant] table of policies.toml, overridable from M365GUARD_* variables.

Secrets never live in policies.toml or on the command line: a client secret comes from
M365GUARD_CLIENT_SECRET or a file named by client_secret_file / M365GUARD_CLIENT_SECRET_FILE,
and a certificate password from M365GUARD_CERT_PASSWORD or certificate_password_file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

# The [tenant] table is parsed with the rest of policies.toml (config.py); re-exported here for
# the callers that resolve it.
from m365guard.config import TenantSection as TenantSection
from m365guard.errors import config_error

# Microsoft's national cloud deployments: (Entra ID authority host, Microsoft Graph host).
# https://learn.microsoft.com/graph/deployments#microsoft-graph-and-graph-explorer-service-root-endpoints
CLOUD_HOSTS: dict[str, tuple[str, str]] = {
    "global": ("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": ("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgovdod": ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^([a-zA-Z0-9-]+\.)+[a-zA-Z]{2,}$")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to reach one tenant, resolved and validated (secrets wrapped)."""

    tenant_id: str
    client_id: str
    authority_host: str
    graph_endpoint: str
    client_secret: SecretStr | None = None
    certificate_path: Path | None = None
    certificate_password: SecretStr | None = None
    ca_bundle: Path | None = None

    @property
    def authority(self) -> str:
        """The tenant's authority URL as msal wants it."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def graph_host(self) -> str:
        """The Graph host name (no port): the only host our tokens are sent to."""
        return urlsplit(self.graph_endpoint).hostname or ""

    @property
    def uses_certificate(self) -> bool:
        """Certificate credentials are preferred whenever one is configured."""
        return self.certificate_path is not None


def _pick(env: Mapping[str, str], name: str, configured: Any) -> Any:
    """An environment variable (when set and non-empty) wins over the policies.toml value."""
    value = env.get(name, "").strip()
    return value if value else configured


def _read_secret_file(path: Path, setting: str) -> SecretStr:
    try:
        value = path.expanduser().read_text(encoding="utf-8-sig").strip()  # BOM, CRLF
    except OSError as exc:
        raise config_error(f"{setting}: cannot read {path} ({exc.strerror}); fix the path") from exc
    if not value:
        raise config_error(f"{setting}: {path} is empty; put the secret on its first line")
    return SecretStr(value)


def _https_url(value: str, setting: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise config_error(f"{setting}: {value!r} must be an https:// URL (TLS is always verified)")
    if parts.path not in ("", "/") or parts.query:
        raise config_error(f"{setting}: {value!r} must be a host only, like https://host[:port]")
    return f"https://{parts.netloc}"


def resolve_connection(section: TenantSection, env: Mapping[str, str]) -> ConnectionSettings:
    """Merge the [tenant] table with M365GUARD_* variables and check every value."""
    tenant_id = _pick(env, "M365GUARD_TENANT_ID", section.tenant_id)
    if not tenant_id:
        raise config_error("tenant_id is missing: set [tenant] tenant_id or M365GUARD_TENANT_ID")
    if not (_GUID.match(tenant_id) or _DOMAIN.match(tenant_id)):
        raise config_error(
            f"tenant_id {tenant_id!r} is neither a GUID nor a domain like school.onmicrosoft.com"
        )
    client_id = _pick(env, "M365GUARD_CLIENT_ID", section.client_id)
    if not client_id:
        raise config_error("client_id is missing: set [tenant] client_id or M365GUARD_CLIENT_ID")
    if not _GUID.match(client_id):
        raise config_error(
            f"client_id {client_id!r} is not a GUID: copy the app registration's Application ID"
        )

    cloud = _pick(env, "M365GUARD_CLOUD", section.cloud)
    if cloud not in CLOUD_HOSTS:
        raise config_error(f"cloud {cloud!r} is unknown: use one of {', '.join(CLOUD_HOSTS)}")
    default_authority, default_graph = CLOUD_HOSTS[cloud]
    authority_host = _https_url(
        _pick(env, "M365GUARD_AUTHORITY_HOST", section.authority_host) or default_authority,
        "authority_host",
    )
    graph_endpoint = _https_url(
        _pick(env, "M365GUARD_GRAPH_ENDPOINT", section.graph_endpoint) or default_graph,
        "graph_endpoint",
    )

    ca_value = _pick(env, "M365GUARD_CA_BUNDLE", section.ca_bundle)
    ca_bundle = Path(ca_value).expanduser() if ca_value else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise config_error(f"ca_bundle: {ca_bundle} is not a file; point it at a PEM CA bundle")

    cert_value = _pick(env, "M365GUARD_CERT_PATH", section.certificate_path)
    certificate_path = Path(cert_value).expanduser() if cert_value else None
    certificate_password: SecretStr | None = None
    client_secret: SecretStr | None = None
    if certificate_path is not None:
        password = env.get("M365GUARD_CERT_PASSWORD", "")
        if password:
            certificate_password = SecretStr(password)
        elif section.certificate_password_file is not None:
            certificate_password = _read_secret_file(
                section.certificate_password_file, "certificate_password_file"
            )
    else:
        secret = env.get("M365GUARD_CLIENT_SECRET", "")
        secret_file = _pick(env, "M365GUARD_CLIENT_SECRET_FILE", section.client_secret_file)
        if secret:
            client_secret = SecretStr(secret)
        elif secret_file:
            client_secret = _read_secret_file(Path(secret_file), "client_secret_file")
        else:
            raise config_error(
                "no credential: set [tenant] certificate_path (recommended) or M365GUARD_CERT_PATH,"
                " or a client secret in M365GUARD_CLIENT_SECRET / client_secret_file"
            )
    return ConnectionSettings(
        tenant_id=tenant_id,
        client_id=client_id,
        authority_host=authority_host,
        graph_endpoint=graph_endpoint,
        client_secret=client_secret,
        certificate_path=certificate_path,
        certificate_password=certificate_password,
        ca_bundle=ca_bundle,
    )

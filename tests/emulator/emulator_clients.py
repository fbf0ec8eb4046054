"""Real msal and msgraph-sdk clients that trust the emulator's CA, for the emulator tests."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import msal
import requests
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

from m365guard.emulator.server import EmulatorSettings

TINY = Path(__file__).parent.parent / "data" / "tiny-tenant.json"
TEACHER = "a1000000-0000-4000-8000-000000000002"
TEACHER_UPN = "jsmith@manbylodge.sch.uk"
GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]


def requests_session(settings: EmulatorSettings) -> requests.Session:
    """msal's HTTP client: trusts only the emulator CA (REQUESTS_CA_BUNDLE is ignored)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = settings.ca_bundle
    return session


def msal_app(settings: EmulatorSettings, credential: Any = None,
             client_id: str | None = None, tenant: str | None = None
             ) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id or settings.client_id,
        client_credential=credential if credential is not None else settings.client_secret,
        authority=f"{settings.authority_host}/{tenant or settings.tenant_id}",
        http_client=requests_session(settings),
        instance_discovery=False,
    )


def secret_token(settings: EmulatorSettings) -> str:
    result = msal_app(settings).acquire_token_for_client(GRAPH_SCOPE)
    assert "access_token" in result, result
    return str(result["access_token"])


def ssl_context(settings: EmulatorSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_bundle)


def http(settings: EmulatorSettings, token: str | None = None, **kwargs: Any) -> httpx.Client:
    """A plain httpx client for raw-shape checks (Graph base URL, bearer token)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{settings.graph_endpoint}/v1.0", headers=headers,
                        verify=ssl_context(settings), trust_env=False, **kwargs)


class StaticToken(AccessTokenProvider):  # type: ignore[misc]
    """Hands the SDK a token msal obtained."""

    def __init__(self, token: str, host: str) -> None:
        self.token = token
        self.validator = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri: str,
                                      additional_authentication_context: Any = None) -> str:
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self.validator


def graph_client(settings: EmulatorSettings, token: str) -> GraphServiceClient:
    """The real SDK over an httpx client that trusts the emulator CA; base URL on the adapter."""
    host = settings.graph_endpoint.removeprefix("https://")
    auth = BaseBearerTokenAuthenticationProvider(StaticToken(token, host.split(":")[0]))
    client = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ssl_context(settings), trust_env=False))
    adapter = GraphRequestAdapter(auth, client=client)
    adapter.base_url = f"{settings.graph_endpoint}/v1.0"
    return GraphServiceClient(request_adapter=adapter)

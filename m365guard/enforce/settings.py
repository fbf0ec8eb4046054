"""Which app registration enforcement writes with, and the refusal when it is off.

The nightly app stays read-only. [enforce] client_id names a second app that holds
MailboxSettings.ReadWrite; its credential is its own (certificate_path, or a secret from
M365GUARD_ENFORCE_CLIENT_SECRET / client_secret_file; M365GUARD_ENFORCE_CERT_PASSWORD for the
certificate). Without client_id the [tenant] app is used, which then must hold the permission.
"""

from __future__ import annotations

from collections.abc import Mapping

from m365guard.config import Policy
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.settings import ConnectionSettings, resolve_connection

_CREDENTIAL_VARIABLES = ("M365GUARD_CLIENT_ID", "M365GUARD_CLIENT_SECRET",
                         "M365GUARD_CLIENT_SECRET_FILE", "M365GUARD_CERT_PATH",
                         "M365GUARD_CERT_PASSWORD")


def require_enabled(policy: Policy) -> None:
    """One line when enforcement is off."""
    if not policy.enforce.enabled:
        raise GuardError("enforcement is off: set enabled = true under [enforce] in"
                         " policies.toml (README: Enforcement)", ExitCode.ENFORCE_REFUSED)


def write_connection(policy: Policy, env: Mapping[str, str]) -> ConnectionSettings:
    """The write app's connection: [enforce]'s own app, or the [tenant] app."""
    section = policy.enforce
    if section.client_id is None:
        return resolve_connection(policy.tenant, env)
    tenant = policy.tenant.model_copy(update={
        "client_id": section.client_id,
        "certificate_path": section.certificate_path,
        "certificate_password_file": section.certificate_password_file,
        "client_secret_file": section.client_secret_file,
    })
    own = {key: value for key, value in env.items() if key not in _CREDENTIAL_VARIABLES}
    for suffix in ("CLIENT_SECRET", "CERT_PASSWORD"):
        value = env.get(f"M365GUARD_ENFORCE_{suffix}", "")
        if value:
            own[f"M365GUARD_{suffix}"] = value
    return resolve_connection(tenant, own)

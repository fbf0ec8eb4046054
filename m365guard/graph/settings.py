"""Connection settings: the [tenant] table of policies.toml, overridable from M365GUARD_* variables.

Secrets never live in policies.toml or on the command line: a client secret comes from
M365GUARD_CLIENT_SECRET or a file named by client_secret_file / M365GUARD_CLIENT_SECRET_FILE,
and a certificate password from M365GUARD_CERT_PASSWORD or certificate_password_file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

Cloud = Literal["global", "usgov", "usgovdod", "china"]


class TenantSection(BaseModel):
    """The [tenant] table as the technician writes it (all optional: the environment may supply)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_file: Path | None = None
    certificate_path: Path | None = None
    certificate_password_file: Path | None = None
    cloud: Cloud = "global"
    authority_host: str | None = None
    graph_endpoint: str | None = None
    ca_bundle: Path | None = None

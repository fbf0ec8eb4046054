"""Connection settings: environment over policies.toml, national clouds, one-line errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m365guard.errors import ExitCode, GuardError
from m365guard.exports import read_forwarding_export
from m365guard.graph.audit import forwarding_from_audit
from m365guard.graph.client import RetryPolicy
from m365guard.graph.replies import parse_retry_after
from m365guard.graph.settings import CLOUD_HOSTS, TenantSection, resolve_connection

TENANT = "6f1c2d3e-0000-4000-8000-000000000001"
CLIENT = "7a2b3c4d-0000-4000-8000-000000000002"
BASE = {"M365GUARD_TENANT_ID": TENANT, "M365GUARD_CLIENT_ID": CLIENT,
        "M365GUARD_CLIENT_SECRET": "s3cret-value"}


def test_environment_wins_and_cloud_picks_documented_hosts() -> None:
    section = TenantSection(tenant_id="school.onmicrosoft.com", client_id=CLIENT, cloud="global")
    conn = resolve_connection(section, {**BASE, "M365GUARD_CLOUD": "usgovdod"})
    assert conn.tenant_id == TENANT
    assert (conn.authority_host, conn.graph_endpoint) == CLOUD_HOSTS["usgovdod"]
    assert conn.authority_host == "https://login.microsoftonline.us"
    assert conn.graph_endpoint == "https://dod-graph.microsoft.us"
    assert conn.client_secret is not None and "s3cret" not in repr(conn)


def test_explicit_hosts_win_over_cloud() -> None:
    conn = resolve_connection(TenantSection(cloud="china"), {
        **BASE, "M365GUARD_AUTHORITY_HOST": "https://127.0.0.1:8443",
        "M365GUARD_GRAPH_ENDPOINT": "https://127.0.0.1:8444/"})
    assert conn.authority_host == "https://127.0.0.1:8443"
    assert conn.graph_endpoint == "https://127.0.0.1:8444"
    assert conn.graph_host == "127.0.0.1"


def test_certificate_preferred_over_secret(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("pfx-pass\n")
    conn = resolve_connection(TenantSection(certificate_path=tmp_path / "app.pfx",
                                            certificate_password_file=password), BASE)
    assert conn.uses_certificate and conn.client_secret is None
    assert conn.certificate_password is not None
    assert conn.certificate_password.get_secret_value() == "pfx-pass"


def test_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    env = {k: v for k, v in BASE.items() if k != "M365GUARD_CLIENT_SECRET"}
    conn = resolve_connection(TenantSection(), {**env, "M365GUARD_CLIENT_SECRET_FILE": str(secret)})
    assert conn.client_secret is not None
    assert conn.client_secret.get_secret_value() == "from-file"


@pytest.mark.parametrize(("env", "names"), [
    ({"M365GUARD_TENANT_ID": ""}, "tenant_id"),
    ({"M365GUARD_CLIENT_ID": "not-a-guid"}, "client_id"),
    ({"M365GUARD_CLOUD": "mars"}, "cloud"),
    ({"M365GUARD_GRAPH_ENDPOINT": "http://graph.local"}, "graph_endpoint"),
    ({"M365GUARD_CA_BUNDLE": "/nonexistent/ca.pem"}, "ca_bundle"),
    ({"M365GUARD_CLIENT_SECRET": ""}, "credential"),
    ({"M365GUARD_CLIENT_SECRET": "", "M365GUARD_CLIENT_SECRET_FILE": "/nonexistent"},
     "client_secret_file"),
])
def test_bad_settings_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(GuardError) as caught:
        resolve_connection(TenantSection(), {**BASE, **env})
    assert caught.value.exit_code == ExitCode.CONFIG_ERROR
    assert names in caught.value.message and "\n" not in caught.value.message


def test_fractional_retry_after() -> None:
    assert parse_retry_after("2.128") == pytest.approx(2.128)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert RetryPolicy(max_seconds=10).backoff(1, 2.128) == pytest.approx(2.128)


@given(st.integers(min_value=1, max_value=30))
def test_backoff_is_bounded_and_grows(attempt: int) -> None:
    policy = RetryPolicy(base_seconds=1.0, max_seconds=60.0)
    wait = policy.backoff(attempt)
    ceiling = min(2 ** (attempt - 1), 60.0)
    assert ceiling / 2 <= wait <= ceiling


def test_audit_record_and_export_rows(tmp_path: Path) -> None:
    record = {"id": "r1", "operation": "Set-Mailbox", "createdDateTime": "2025-01-02T03:04:05Z",
              "objectId": "jsmith", "auditData": {"Parameters": [
                  {"Name": "Identity", "Value": "jsmith@school.sch.uk"},
                  {"Name": "ForwardingSmtpAddress", "Value": "smtp:jo@gmail.com"},
                  {"Name": "DeliverToMailboxAndForward", "Value": "True"}]}}
    assert forwarding_from_audit(record) == [("jsmith@school.sch.uk", "jo@gmail.com", True,
                                              "audit", "2025-01-02T03:04:05Z", "r1")]
    assert forwarding_from_audit({**record, "operation": "New-InboxRule"}) == []
    export = tmp_path / "fwd.csv"
    export.write_text('#TYPE Selected.Microsoft.Exchange.Data.Directory.Management.Mailbox\n'
                      '"UserPrincipalName","ForwardingSmtpAddress","ForwardingAddress",'
                      '"DeliverToMailboxAndForward"\n'
                      '"a@school.sch.uk","smtp:a@yahoo.co.uk","","False"\n'
                      '"b@school.sch.uk","","","False"\n', encoding="utf-8")
    rows = read_forwarding_export(export)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [  # b: listed, forwards nowhere
        ("a@school.sch.uk", "a@yahoo.co.uk", False, "export"), ("b@school.sch.uk", "", False,
                                                                 "export")]
    assert isinstance(rows[0][4], dt.datetime)
    export.write_text("Name,Alias\nx,y\n")
    with pytest.raises(GuardError) as caught:
        read_forwarding_export(export)
    assert caught.value.exit_code == ExitCode.INPUT_FILE_ERROR

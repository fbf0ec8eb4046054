"""Every bad connection setting fails with its own one-line GuardError and exit code."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from graph_support import cert_conn, secret_conn, section_for

from m365guard.emulator.server import RunningEmulator
from m365guard.errors import ExitCode, GuardError
from m365guard.graph.auth import VerifiedSession, load_certificate
from m365guard.graph.client import open_session
from m365guard.graph.settings import ConnectionSettings, resolve_connection

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def self_signed(days_valid: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m365guard test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now + dt.timedelta(days=days_valid))
            .sign(key, hashes.SHA256()))
    return key, cert


def failure(conn: ConnectionSettings) -> GuardError:
    with pytest.raises(GuardError) as caught:
        open_session(conn).close()
    assert "\n" not in caught.value.message
    return caught.value


def test_unknown_tenant(emulator: RunningEmulator) -> None:
    error = failure(secret_conn(emulator.settings, tenant_id=str(uuid.uuid4())))
    assert error.exit_code == ExitCode.UNKNOWN_TENANT
    assert "tenant" in error.message


def test_wrong_secret(emulator: RunningEmulator) -> None:
    settings = emulator.settings
    conn = resolve_connection(section_for(settings), {"M365GUARD_CLIENT_SECRET": "not-it-1234"})
    error = failure(conn)
    assert error.exit_code == ExitCode.CLIENT_REJECTED
    assert "not-it-1234" not in error.message


def test_unknown_client(emulator: RunningEmulator) -> None:
    error = failure(secret_conn(emulator.settings, client_id=str(uuid.uuid4())))
    assert error.exit_code == ExitCode.CLIENT_REJECTED


def test_unregistered_certificate(emulator: RunningEmulator, tmp_path: Path) -> None:
    key, cert = self_signed(30)
    path = tmp_path / "other.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert failure(cert_conn(emulator.settings, certificate_path=path)).exit_code \
        == ExitCode.CERTIFICATE_ERROR


def test_expired_certificate(emulator: RunningEmulator, tmp_path: Path) -> None:
    key, cert = self_signed(-1)
    path = tmp_path / "expired.pfx"
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"old", key, cert, None, serialization.NoEncryption()))
    error = failure(cert_conn(emulator.settings, certificate_path=path))
    assert error.exit_code == ExitCode.CERTIFICATE_ERROR
    assert "expired" in error.message


def test_pfx_password(tmp_path: Path) -> None:
    key, cert = self_signed(30)
    path = tmp_path / "app.pfx"
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"app", key, cert, None, serialization.BestAvailableEncryption(b"right")))
    assert "BEGIN CERTIFICATE" in load_certificate(path, "right")["public_certificate"]
    with pytest.raises(GuardError) as caught:
        load_certificate(path, "wrong")
    assert caught.value.exit_code == ExitCode.CERTIFICATE_ERROR


def test_wrong_ca_bundle(emulator: RunningEmulator) -> None:
    error = failure(secret_conn(emulator.settings, ca_bundle=SYSTEM_CA))
    assert error.exit_code == ExitCode.TLS_ERROR


def test_unreachable_host(emulator: RunningEmulator) -> None:
    error = failure(secret_conn(emulator.settings, authority_host="https://127.0.0.1:9"))
    assert error.exit_code == ExitCode.HOST_UNREACHABLE


def test_ca_bundle_beats_environment_and_proxies_still_apply(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("placeholder")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(SYSTEM_CA))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(SYSTEM_CA))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.school.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    merged = VerifiedSession(bundle).merge_environment_settings(
        "https://login.microsoftonline.com/x", {}, None, None, None)
    assert merged["verify"] == str(bundle)
    assert merged["proxies"]["https"] == "http://proxy.school.example:3128"
    plain = requests.Session().merge_environment_settings(
        "https://login.microsoftonline.com/x", {}, None, None, None)
    assert plain["verify"] == str(SYSTEM_CA)  # the trap this class exists for

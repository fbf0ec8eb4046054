"""A local certificate authority for the emulator, and the app's client certificate.

msal refuses plain-http authorities, so the emulator serves HTTPS with a server certificate
from its own CA; clients trust that CA through a CA bundle. The app registration's certificate
(for client assertions) is a self-signed RSA certificate, as an IT technician would upload.
Every file is written owner-only (0600) and reused when already present in the workdir.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated PEM files and the client certificate's thumbprint."""

    ca_bundle: Path  # the CA certificate clients trust
    server_cert: Path
    server_key: Path
    client_pem: Path  # the app's certificate followed by its private key
    client_thumbprint: str  # SHA-1, upper-case hex, as the Entra portal shows it


def write_private(path: Path, data: bytes) -> None:
    """Create (or replace) a file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: str, public_key: rsa.RSAPublicKey) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def thumbprint(cert_pem: bytes) -> str:
    """SHA-1 thumbprint of a PEM certificate (the form Entra shows and msal accepts)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()  # noqa: S324


def ensure_tls_files(workdir: Path) -> TlsFiles:
    """Create the CA, server and client certificates in workdir unless already there."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TlsFiles(
        ca_bundle=workdir / "ca.pem",
        server_cert=workdir / "server.pem",
        server_key=workdir / "server-key.pem",
        client_pem=workdir / "client.pem",
        client_thumbprint="",
    )
    paths = (files.ca_bundle, files.server_cert, files.server_key, files.client_pem)
    if not all(path.exists() for path in paths):
        _generate(files)
    client_cert = files.client_pem.read_bytes()
    return TlsFiles(*paths, client_thumbprint=thumbprint(client_cert))


def _generate(files: TlsFiles) -> None:
    ca_key = _key()
    ca_cert = (
        _builder("m365guard emulator CA", "m365guard emulator CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    server_cert = (
        _builder("127.0.0.1", "m365guard emulator CA", server_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = _key()
    client_cert = _builder("m365guard", "m365guard", client_key.public_key()).sign(
        client_key, hashes.SHA256()
    )
    pem = serialization.Encoding.PEM
    write_private(files.ca_bundle, ca_cert.public_bytes(pem))
    write_private(files.server_cert, server_cert.public_bytes(pem))
    write_private(files.server_key, _key_pem(server_key))
    write_private(files.client_pem, client_cert.public_bytes(pem) + _key_pem(client_key))

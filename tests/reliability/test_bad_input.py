"""Bad input: each mistake in configuration is one clear line and its documented exit code;
each odd thing in the tenant's data is a logged, counted skip. Never a traceback."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hostile import CASES, hostile_document
from site_support import DATA, Site, run_cli_inprocess

from m365guard.config import load_policy
from m365guard.demo import connection_for
from m365guard.emulator.server import start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.errors import ExitCode
from m365guard.pipeline import NightlyOutcome, run_nightly

# -- configuration, credentials and input files: one line, documented code ----------------------

Edit = Callable[[Site], None]


def toml(old: str, new: str) -> Edit:
    def edit(site: Site) -> None:
        text = site.config.read_text()
        assert old in text, old
        site.config.write_text(text.replace(old, new, 1))
    return edit


def append(extra: str) -> Edit:
    return lambda site: site.config.write_text(site.config.read_text() + "\n" + extra + "\n")


def write(path: str, data: bytes) -> Edit:
    return lambda site: (site.root / path).write_bytes(data)


def env(**values: str) -> Edit:
    return lambda site: site.env.update(values)


def drop_env(name: str) -> Edit:
    return lambda site: site.env.pop(name)


def self_signed(site: Site) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not registered")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    path = site.root / "other.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM))
    site.env["M365GUARD_CERT_PATH"] = str(path)


def encrypted_key(site: Site) -> None:
    data = Path(site.env["M365GUARD_CERT_PATH"]).read_bytes()
    key = serialization.load_pem_private_key(data, None)
    cert = x509.load_pem_x509_certificate(data)
    path = site.root / "locked.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"s3cret-pw"))
                     + cert.public_bytes(serialization.Encoding.PEM))
    site.env["M365GUARD_CERT_PATH"] = str(path)


def use_secret(secret: str) -> Edit:
    def edit(site: Site) -> None:
        site.env.pop("M365GUARD_CERT_PATH")
        site.env["M365GUARD_CLIENT_SECRET"] = secret
    return edit


CONFIG = ExitCode.CONFIG_ERROR
FILE = ExitCode.INPUT_FILE_ERROR
CONFIG_CASES: dict[str, tuple[list[Edit], ExitCode]] = {
    "policy file missing": ([lambda s: s.config.unlink()], CONFIG),
    "policy file empty": ([write("policies.toml", b"")], CONFIG),
    "TOML syntax error": ([append('[collect\nfolders = ["inbox"')], CONFIG),
    "duplicate table": ([append("[school]\nname = \"again\"")], CONFIG),
    "not UTF-8": ([write("policies.toml", b"[school]\nname = \"\xff\xfe\"\n")], CONFIG),
    "NUL byte": ([write("policies.toml", b"[school]\nname = \"a\x00b\"\n")], CONFIG),
    "binary garbage": ([write("policies.toml", bytes(range(256)) * 4)], CONFIG),
    "unknown table": ([append("[schol]\nname = \"x\"")], CONFIG),
    "unknown key": ([toml("first_run_days = 30", "first_run_day = 30")], CONFIG),
    "unknown rule id": ([append("[rules.bcc-check]\nenabled = false")], CONFIG),
    "unknown rule setting": ([append("[rules.multi-recipient-without-bcc]\nthreshold = 3")],
                             CONFIG),
    "school missing": ([toml("[school]", "[schoolx]")], CONFIG),
    "wrong type: string for int": ([toml("first_run_days = 30", 'first_run_days = "30"')],
                                   CONFIG),
    "wrong type: string for bool": ([toml("include_audit_log = false",
                                          'include_audit_log = "no"')], CONFIG),
    "wrong type: list for string": ([toml('[school]\nname = "', '[school]\nname = ["')
                                     , toml('School"', 'School"]')], CONFIG),
    "out of range": ([toml("first_run_days = 30", "first_run_days = 0")], CONFIG),
    "negative timeout": ([toml("request_timeout_seconds = 10.0",
                               "request_timeout_seconds = -1.0")], CONFIG),
    "bad domain": ([toml('domains = ["', 'domains = ["not a domain", "')], CONFIG),
    "bad allowed mailbox": ([toml("mailboxes = [", 'mailboxes = ["office at school", ')],
                            CONFIG),
    "bad severity": ([append('[rules.external-forwarding-personal]\nseverity = "urgent"')
                      ], CONFIG),
    "bad folder": ([append('[collect]\nfolders = ["drafts"]')], CONFIG),
    "bad recogniser": ([append('[people]\nrecognise = ["astrology"]')], CONFIG),
    "parent roster missing": ([lambda s: (s.root / "inputs" / "parents.csv").unlink()], FILE),
    "export missing": ([lambda s: (s.root / "inputs" / "exchange-forwarding.csv").unlink()],
                       FILE),
    "roster is a folder": ([lambda s: (s.root / "inputs" / "parents.csv").unlink(),
                            lambda s: (s.root / "inputs" / "parents.csv").mkdir()], FILE),
    "roster without its header": ([write("inputs/parents.csv", b"a@b.com,Name,x\n")], FILE),
    "roster not UTF-8": ([write("inputs/parents.csv",
                                b"email,name,pupil_upns\n\xff\xfe@x.com,\xe9,y\n")], FILE),
    "export without its columns": ([write("inputs/exchange-forwarding.csv", b"a,b\n1,2\n")],
                                   FILE),
    "tenant id not a GUID": ([env(M365GUARD_TENANT_ID="manby lodge")], CONFIG),
    "client id not a GUID": ([env(M365GUARD_CLIENT_ID="app-1")], CONFIG),
    "no credential": ([drop_env("M365GUARD_CERT_PATH")], CONFIG),
    "unknown cloud": ([env(M365GUARD_CLOUD="mars")], CONFIG),
    "CA bundle missing": ([env(M365GUARD_CA_BUNDLE="/nonexistent/ca.pem")], CONFIG),
    "http graph endpoint": ([env(M365GUARD_GRAPH_ENDPOINT="http://127.0.0.1:9")], CONFIG),
    "client secret file missing": ([drop_env("M365GUARD_CERT_PATH"),
                                    env(M365GUARD_CLIENT_SECRET_FILE="/nonexistent/secret")],
                                   CONFIG),
    "wrong client secret": ([use_secret("not-the-secret-at-all")], ExitCode.CLIENT_REJECTED),
    "unknown client id": ([env(M365GUARD_CLIENT_ID=str(uuid.UUID(int=7)))],
                          ExitCode.CLIENT_REJECTED),
    "unknown tenant": ([env(M365GUARD_TENANT_ID=str(uuid.UUID(int=9)))],
                       ExitCode.UNKNOWN_TENANT),
    "certificate missing": ([env(M365GUARD_CERT_PATH="/nonexistent/cert.pem")],
                            ExitCode.CERTIFICATE_ERROR),
    "certificate garbage": ([write("garbage.pem", b"not a certificate\x00\x01"),
                             lambda s: s.env.update(M365GUARD_CERT_PATH=str(
                                 s.root / "garbage.pem"))], ExitCode.CERTIFICATE_ERROR),
    "encrypted key, no password": ([encrypted_key], ExitCode.CERTIFICATE_ERROR),
    "encrypted key, wrong password": ([encrypted_key, env(M365GUARD_CERT_PASSWORD="nope")],
                                      ExitCode.CERTIFICATE_ERROR),
    "certificate not registered": ([self_signed], ExitCode.CERTIFICATE_ERROR),
    "unreachable graph host": ([env(M365GUARD_AUTHORITY_HOST="https://127.0.0.1:9")],
                               ExitCode.HOST_UNREACHABLE),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_configuration_mistake_is_one_line(case: str, site: Site,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    edits, code = CONFIG_CASES[case]
    for edit in edits:
        edit(site)
    done = run_cli_inprocess(["nightly", "--config", str(site.config)], site.env, capsys,
                             monkeypatch)
    assert done.code == code, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not list(site.out.glob("findings-*.csv"))


def test_the_real_script_prints_the_same_line(site: Site) -> None:
    """One case through the installed console script, as cron runs it."""
    (site.root / "inputs" / "parents.csv").unlink()
    done = site.nightly()
    assert done.returncode == ExitCode.INPUT_FILE_ERROR
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


ROSTER_ROWS = (b"email,name,pupil_upns\n"
               b"not-an-address,Bad Row,x\n"
               b",,\n"
               b"\"=HYPERLINK(\"\"x\"\"),\"\"y\"\")@gmail.com\",Evil,\n"
               b"only-one-column\n"
               b"parent.ok@gmail.com,\"O'Brien, \"\"Mags\"\" <m>\",p@pupils.manbylodge.sch.uk\n"
               b"parent\x00nul@gmail.com,N\x00UL,x\n")


def test_roster_bad_rows_are_skipped_and_counted(site: Site, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (site.root / "inputs" / "parents.csv").write_bytes(ROSTER_ROWS)
    (site.root / "inputs" / "staff-personal.csv").write_bytes(
        b"upn,personal_email\nnobody@manbylodge.sch.uk,x@gmail.com\n,\nbad,also bad\n")
    done = run_cli_inprocess(["nightly", "--config", str(site.config)], site.env, capsys,
                             monkeypatch)
    assert done.code == ExitCode.NEW_HIGH_FINDINGS, done.stderr
    assert "Traceback" not in done.stderr
    skipped = [line for line in done.stderr.splitlines() if "roster row skipped" in line]
    assert len(skipped) >= 5, done.stderr


# -- hostile Graph data: skipped, counted, the rest unaffected ---------------------------------

POLICY = """\
[school]
name = "Manby Lodge"
domains = ["manbylodge.sch.uk"]
[people]
staff_groups = ["All Staff"]
[collect]
include_audit_log = false
[state]
path = "state/db"
[output]
dir = "out"
[rules.pupil-contact-non-school-channel]
severity = "high"
"""


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((DATA / "tiny-tenant.json").read_bytes())
    return doc


def night_on(doc: dict[str, Any], root: Path, workdir: Path) -> NightlyOutcome:
    tenant = Tenant.from_document(doc)
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies.toml").write_text(POLICY)
    with start_in_thread(tenant, workdir=workdir) as running:
        return run_nightly(load_policy(root / "policies.toml"), connection_for(running.settings),
                           root / "out", now=tenant.now)


@pytest.fixture(scope="module")
def tiny_findings(tiny: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                  emu_workdir: Path) -> set[str]:
    outcome = night_on(tiny, tmp_path_factory.mktemp("tiny"), emu_workdir)
    assert outcome.run.outcome == "complete" and len(outcome.update.new) >= 2
    return set(outcome.update.new["finding_id"])


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_graph_data_leaves_the_rest_of_the_run_alone(
        case: str, tiny: dict[str, Any], tiny_findings: set[str], tmp_path: Path,
        emu_workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    outcome = night_on(hostile_document(tiny, [case]), tmp_path, emu_workdir)
    assert outcome.run.outcome == "complete", outcome.run.counts
    assert tiny_findings <= set(outcome.update.new["finding_id"])
    skipped = outcome.run.counts["skipped_items"]
    logged = [r for r in caplog.records if "skipped a malformed" in r.getMessage()]
    assert skipped == len(logged)
    text = outcome.paths.findings_csv.read_bytes()
    assert b"\x00" not in text


def test_the_hostile_tenant_file(tiny_findings: set[str], tmp_path: Path,
                                 emu_workdir: Path) -> None:
    doc = orjson.loads((DATA / "hostile-tenant.json").read_bytes())
    outcome = night_on(doc, tmp_path, emu_workdir)
    assert outcome.run.outcome == "complete"
    assert outcome.run.counts["skipped_items"] >= 1
    assert tiny_findings <= set(outcome.update.new["finding_id"])
    summaries = " ".join(outcome.update.new["summary"])
    assert "very long subject" in summaries or len(outcome.update.new) > len(tiny_findings)


def test_cli_on_the_hostile_tenant(tmp_path: Path, emu_workdir: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the CLI too: the malformed items are warnings on stderr, not a traceback."""
    doc = orjson.loads((DATA / "hostile-tenant.json").read_bytes())
    (tmp_path / "policies.toml").write_text(POLICY)
    with start_in_thread(Tenant.from_document(doc), workdir=emu_workdir) as running:
        settings = running.settings
        done = run_cli_inprocess(
            ["nightly", "--config", str(tmp_path / "policies.toml")],
            {"M365GUARD_TENANT_ID": settings.tenant_id, "M365GUARD_CLIENT_ID": settings.client_id,
             "M365GUARD_CERT_PATH": settings.certificate_path,
             "M365GUARD_AUTHORITY_HOST": settings.authority_host,
             "M365GUARD_GRAPH_ENDPOINT": settings.graph_endpoint,
             "M365GUARD_CA_BUNDLE": settings.ca_bundle}, capsys, monkeypatch)
    assert done.code in (ExitCode.CLEAN, ExitCode.NEW_HIGH_FINDINGS), done.stderr
    assert "Traceback" not in done.stderr
    assert "skipped a malformed" in done.stderr

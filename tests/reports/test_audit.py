"""The audit pack: every clause, nights missed, coverage gaps, manifest hashes, folder and zip."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sample_school import SampleSchool, assert_matches_golden

from m365guard.cli.reading import audit_inputs
from m365guard.errors import ExitCode, GuardError
from m365guard.reports.audit import ClauseCoverage
from m365guard.reports.audit import build_audit_pack as build_from_values
from m365guard.state import StateDB


def build_audit_pack(db: StateDB, period_from: date, period_to: date,
                     *args: Any, **kwargs: Any) -> Any:
    """The pack from the state the audit command reads (cli/reading.py)."""
    return build_from_values(audit_inputs(db, period_from, period_to), period_from, period_to,
                             *args, **kwargs)

CLAUSES = {"AUP-PUPIL-CONTACT": "All email contact with pupils ...", "AUP-BCC": "use BCC",
           "AUP-PERSONAL-EMAIL": "no personal email", "AUP-INTENDED-RECIPIENTS": "intended",
           "AUP-APPROVED-APPS": "approved apps", "AUP-MOBILE-NUMBER": "=never give numbers"}
COVERAGE = {
    "AUP-PUPIL-CONTACT": ClauseCoverage("automatic", ("pupil-contact-non-school-channel",)),
    "AUP-BCC": ClauseCoverage("automatic", ("multi-recipient-without-bcc",)),
    "AUP-PERSONAL-EMAIL": ClauseCoverage("partial", ("school-business-personal-email",)),
    "AUP-INTENDED-RECIPIENTS": ClauseCoverage("automatic", ("external-forwarding-personal",)),
    "AUP-APPROVED-APPS": ClauseCoverage("partial", ("pupil-contact-non-school-channel",)),
}
BUILT = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)



def read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, encoding="utf-8-sig", keep_default_na=False)


def test_pack_contents_match_golden_and_history(sample: SampleSchool, tmp_path: Path) -> None:
    pack = build_audit_pack(sample.db, date(2025, 3, 1), date(2025, 3, 16), tmp_path, CLAUSES,
                            COVERAGE, BUILT, school_name="Manby Lodge")
    folder = pack.folder
    assert folder.name == "audit-pack-2025-03-01_2025-03-16"
    for name in ("clauses.csv", "nights.csv", "mailbox-coverage.csv", "inventory.csv",
                 "permissions.csv"):
        assert_matches_golden(folder / name, f"audit-{name}")
    nights = read(folder, "nights.csv").set_index("date")["outcome"]
    assert nights["2025-03-01"] == "missed" and nights["2025-03-06"] == "missed"
    assert nights["2025-03-12"] == "partial"
    clauses = read(folder, "clauses.csv").set_index("clause_id")
    assert clauses.loc["AUP-MOBILE-NUMBER", "coverage"] == "manual"
    assert clauses.loc["AUP-BCC", "acknowledged_in_period"] == 1
    findings = read(folder, "findings.csv").set_index("finding_id")
    assert sorted(findings.index) == ["F1", "F2", "F3", "F4", "F5", "F6"]
    assert findings.loc["F4", "status_at_period_end"] == "resolved"
    history = read(folder, "finding-history.csv")
    assert history[history["finding_id"] == "F1"]["event"].tolist()[:7] == [
        "opened", "seen", "seen", "seen", "seen", "resolved", "reopened"]


def test_manifest_hashes_and_zip_agree_with_folder(sample: SampleSchool, tmp_path: Path) -> None:
    pack = build_audit_pack(sample.db, date(2025, 3, 1), date(2025, 3, 16), tmp_path / "out",
                            CLAUSES, COVERAGE, BUILT, school_name="Manby Lodge")
    manifest = read(pack.folder, "manifest.csv")
    assert sorted(manifest["file"]) == sorted(set(pack.files) - {"manifest.csv"})
    for row in manifest.to_dict("records"):
        data = (pack.folder / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == row["bytes"]
    with zipfile.ZipFile(pack.zip_path) as archive:
        names = archive.namelist()
        assert sorted(names) == sorted(f"{pack.folder.name}/{name}" for name in pack.files)
        for name in pack.files:
            assert archive.read(f"{pack.folder.name}/{name}") == (pack.folder / name).read_bytes()
    assert stat.S_IMODE(pack.zip_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pack.folder.stat().st_mode) == 0o700
    readme = (pack.folder / "README.md").read_text(encoding="utf-8")
    assert "No run at all (missed): 3" in readme
    again = build_audit_pack(sample.db, date(2025, 3, 1), date(2025, 3, 16), tmp_path / "out",
                             CLAUSES, COVERAGE, BUILT, school_name="Manby Lodge")
    assert again.zip_path.read_bytes() == pack.zip_path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "audit-pack-2025-03-01_2025-03-16", "audit-pack-2025-03-01_2025-03-16.zip"]


def test_bad_period_and_unknown_clause_are_user_errors(sample: SampleSchool,
                                                       tmp_path: Path) -> None:
    with pytest.raises(GuardError) as backwards:
        build_audit_pack(sample.db, date(2025, 3, 16), date(2025, 3, 1), tmp_path / "out", CLAUSES,
                         COVERAGE, BUILT, school_name="X")
    assert backwards.value.exit_code == ExitCode.USAGE
    with pytest.raises(GuardError) as unknown:
        build_audit_pack(sample.db, date(2025, 3, 1), date(2025, 3, 16), tmp_path / "out", CLAUSES,
                         {"AUP-NOPE": ClauseCoverage("manual")}, BUILT, school_name="X")
    assert unknown.value.exit_code == ExitCode.CONFIG_ERROR
    assert not (tmp_path / "out").exists()

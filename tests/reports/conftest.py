"""Fixtures for the report tests: the sample school's state, built fresh for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sample_school import SampleSchool, build_sample_school


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[SampleSchool]:
    school = build_sample_school(tmp_path / "state.db")
    yield school
    school.db.close()

"""Fixtures: the emulated school with its outbox, Mail.Send scoped to the sender or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_school import School, school_for


@pytest.fixture
def school(tmp_path: Path) -> Iterator[School]:
    yield from school_for(tmp_path, scoped=True)


@pytest.fixture
def unscoped_school(tmp_path: Path) -> Iterator[School]:
    yield from school_for(tmp_path, scoped=False)



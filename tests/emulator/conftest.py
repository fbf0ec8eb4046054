"""Fixtures: a fresh tiny tenant and an emulator over HTTPS (one workdir per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from emulator_clients import TINY

from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant


@pytest.fixture(scope="session")
def tiny_doc() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(TINY.read_bytes())
    return doc


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workdir for the session: the CA and certificates are made once and reused."""
    return tmp_path_factory.mktemp("emulator")


@pytest.fixture
def tenant(tiny_doc: dict[str, Any]) -> Tenant:
    return Tenant.from_document(tiny_doc)


@pytest.fixture
def emulator(tenant: Tenant, workdir: Path) -> Iterator[RunningEmulator]:
    with start_in_thread(tenant, workdir=workdir) as running:
        yield running

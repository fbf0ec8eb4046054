"""Fixtures: a small synthetic school served by the emulator over HTTPS, and connections to it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from m365guard import tables
from m365guard.emulator import synth
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.server import EmulatorSettings, RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.graph.client import RetryPolicy
from m365guard.graph.settings import ConnectionSettings, TenantSection, resolve_connection

FAST_RETRY = RetryPolicy(attempts=8, base_seconds=0.02, max_seconds=0.5, request_timeout=20.0)
# Graph allows 30 Teams GETs a second and the collector paces at 25 (test_graph_teams.py): a
# night of the small school's ~300 chat lists would wait 12 s. Tests that are not about that
# limit raise the emulator's and the pace together (FAST_TEAMS, fast_teams).
FAST_TEAMS = {"teams_requests_per_second": 100_000.0}


def fast_teams(faults: FaultConfig | None = None) -> FaultConfig:
    """These faults with the Teams limit out of the way (for tests not about it)."""
    return dataclasses.replace(faults or FaultConfig(), **FAST_TEAMS)


@pytest.fixture(scope="session")
def school() -> synth.SyntheticSchool:
    return synth.generate("small", 11, history_days=30, future_days=3)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graph-emulator")


@pytest.fixture
def emulator(school: synth.SyntheticSchool, workdir: Path) -> Iterator[RunningEmulator]:
    with start_in_thread(Tenant.from_document(school.tenant), workdir=workdir,
                         faults=fast_teams()) as running:
        yield running


def section_for(settings: EmulatorSettings, **overrides: Any) -> TenantSection:
    values: dict[str, Any] = {
        "tenant_id": settings.tenant_id, "client_id": settings.client_id,
        "authority_host": settings.authority_host, "graph_endpoint": settings.graph_endpoint,
        "ca_bundle": Path(settings.ca_bundle),
    }
    values.update(overrides)
    return TenantSection(**values)


def secret_conn(settings: EmulatorSettings, **overrides: Any) -> ConnectionSettings:
    return resolve_connection(section_for(settings, **overrides),
                              {"M365GUARD_CLIENT_SECRET": settings.client_secret})


def cert_conn(settings: EmulatorSettings, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {"certificate_path": Path(settings.certificate_path), **overrides}
    return resolve_connection(section_for(settings, **values), {})


def clock(school: synth.SyntheticSchool) -> dt.datetime:
    return dt.datetime.fromisoformat(school.tenant["clock"]["start"])


def assert_same_table(name: str, got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal as sets of rows with the contract's dtypes (order does not matter)."""
    columns = list(tables.SCHEMAS[name])

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values(columns, ignore_index=True, na_position="first")

    pd.testing.assert_frame_equal(ordered(got), ordered(want), obj=name)

"""What every handler is given: the service (the tenant, its faults, delta rounds in progress)
and the call (the request and who makes it). Kept apart from odata.py so that the request and
response shapes sit below the fault engine, which changes responses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from m365guard.emulator.faults import FaultEngine
from m365guard.emulator.identity import Claims
from m365guard.emulator.odata import GraphRequest, GraphResponse
from m365guard.emulator.resources import Json
from m365guard.emulator.state import Tenant


@dataclass
class DeltaSnapshot:
    """The changes one delta round serves page by page."""

    user_id: str
    folder: str
    items: list[Json]
    select: list[str] | None
    page_size: int
    since: float | None
    asof: float


@dataclass
class GraphService:
    """What handlers share: the tenant, the faults, and delta rounds in progress."""

    tenant: Tenant
    faults: FaultEngine
    delta_rounds: dict[str, DeltaSnapshot] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Call:
    """A request as a handler sees it: who calls, and the service."""

    service: GraphService
    request: GraphRequest
    claims: Claims

    @property
    def tenant(self) -> Tenant:
        return self.service.tenant


Handler = Callable[[Call, dict[str, str]], GraphResponse]

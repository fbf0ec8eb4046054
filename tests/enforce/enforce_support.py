"""A tiny school for the enforcement tests: the tiny tenant plus the rules Microsoft's docs show.

The emulator grants the nightly app's least-privilege roles by default; `write_emulator`
adds MailboxSettings.ReadWrite, as the optional second app registration would have.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from m365guard.emulator.identity import LEAST_PRIVILEGE_ROLES
from m365guard.emulator.server import EmulatorSettings, RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.graph.client import GraphSession, RetryPolicy, open_session
from m365guard.graph.settings import ConnectionSettings, TenantSection, resolve_connection

TINY = Path(__file__).parent.parent / "data" / "tiny-tenant.json"
TEACHER_ID = "a1000000-0000-4000-8000-000000000002"
TEACHER = "jsmith@manbylodge.sch.uk"
HEAD_ID = "a1000000-0000-4000-8000-000000000001"
FORWARD_RULE = "AQAAAJ5dZqA="  # the tiny tenant's "Forward to home" (to a gmail address)
DOC_RULE = "AQAAAJ5dZqZ="  # messagerule-get.md's example rule, in the head's mailbox
READ_ONLY_RULE = "AQAAAJ5dZqR="
WRITE_ROLES = (*LEAST_PRIVILEGE_ROLES, "MailboxSettings.ReadWrite")
FAST_RETRY = RetryPolicy(attempts=3, base_seconds=0.01, max_seconds=0.05, request_timeout=20.0)

# The rule messagerule-get.md shows and messagerule-update.md changes (its id made unique here).
DOC_EXAMPLE_RULE: dict[str, Any] = {
    "id": DOC_RULE, "displayName": "From partner", "sequence": 2, "isEnabled": True,
    "hasError": False, "isReadOnly": False, "conditions": {"senderContains": ["ADELE"]},
    "actions": {"forwardTo": [{"emailAddress": {"name": "Alex Wilbur",
                                                "address": "AlexW@contoso.com"}}]},
}
# The request body and response body of messagerule-update.md's example, verbatim.
DOC_UPDATE_REQUEST: dict[str, Any] = {"displayName": "Important from partner",
                                      "actions": {"markImportance": "high"}}
DOC_UPDATE_RESPONSE: dict[str, Any] = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Me/mailFolders('inbox')"
                      "/messageRules/$entity",
    "id": "AQAAAJ5dZqA=", "displayName": "Important from partner", "sequence": 2,
    "isEnabled": True, "hasError": False, "isReadOnly": False,
    "conditions": {"senderContains": ["ADELE"]}, "actions": {"markImportance": "high"},
}
# mailfolder-list-messagerules.md / DESIGN.md: rules can come back isReadOnly with no actions.
READ_ONLY_EXAMPLE: dict[str, Any] = {
    "id": READ_ONLY_RULE, "displayName": "Managed by the client", "sequence": 3,
    "isEnabled": True, "hasError": False, "isReadOnly": True, "conditions": {},
    "actions": {"redirectTo": [{"emailAddress": {"name": "Me",
                                                 "address": "jane.smith1987@gmail.com"}}]},
}


def school_doc() -> dict[str, Any]:
    """The tiny tenant with the docs' rule (head) and a read-only forwarding rule (teacher)."""
    doc: dict[str, Any] = orjson.loads(TINY.read_bytes())
    doc = copy.deepcopy(doc)
    doc["mailboxes"][HEAD_ID]["messageRules"] = [copy.deepcopy(DOC_EXAMPLE_RULE)]
    rules = doc["mailboxes"][TEACHER_ID]["messageRules"]
    rules[:] = [rule for rule in rules if "x-visibleFrom" not in rule]
    rules.append(copy.deepcopy(READ_ONLY_EXAMPLE))
    return doc


def section_for(settings: EmulatorSettings) -> TenantSection:
    return TenantSection(tenant_id=settings.tenant_id, client_id=settings.client_id,
                         authority_host=settings.authority_host,
                         graph_endpoint=settings.graph_endpoint,
                         ca_bundle=Path(settings.ca_bundle))


def conn_for(settings: EmulatorSettings) -> ConnectionSettings:
    return resolve_connection(section_for(settings),
                              {"M365GUARD_CLIENT_SECRET": settings.client_secret})


def session_for(emulator: RunningEmulator, retry: RetryPolicy = FAST_RETRY) -> GraphSession:
    return open_session(conn_for(emulator.settings), retry)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enforce-emulator")


@pytest.fixture
def write_emulator(workdir: Path) -> Iterator[RunningEmulator]:
    """The school served to an app that holds MailboxSettings.ReadWrite."""
    with start_in_thread(Tenant.from_document(school_doc()), workdir=workdir,
                         roles=WRITE_ROLES) as running:
        yield running


@pytest.fixture
def read_emulator(workdir: Path) -> Iterator[RunningEmulator]:
    """The school served to the nightly app: MailboxSettings.Read only."""
    with start_in_thread(Tenant.from_document(school_doc()), workdir=workdir) as running:
        yield running


def tenant_rule(emulator: RunningEmulator, user_id: str, rule_id: str) -> dict[str, Any]:
    """The rule as the emulated Exchange holds it (for checks Graph itself cannot make)."""
    mailbox = emulator.tenant.mailbox(user_id)
    assert mailbox is not None
    return next(rule for rule in emulator.tenant.message_rules(mailbox) if rule["id"] == rule_id)

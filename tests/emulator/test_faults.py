"""Throttling and injected faults as a client meets them over HTTPS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from emulator_clients import TEACHER, http, secret_token, ssl_context

from m365guard.emulator.faults import FaultConfig, FaultEngine, format_retry_after
from m365guard.emulator.server import RunningEmulator

MESSAGES = f"/users/{TEACHER}/mailFolders/inbox/messages"


def test_retry_after_is_an_integer_or_microsoft_style_fraction() -> None:
    assert format_retry_after(3.0) == "3"
    assert format_retry_after(2.128) == "2.128"


def test_invalid_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        FaultConfig(error_rate=0.7, reset_rate=0.5)


def test_the_same_seed_draws_the_same_faults() -> None:
    config = FaultConfig(seed=7, error_rate=0.3, reset_rate=0.1, slow_rate=0.1)
    first, second = FaultEngine(config), FaultEngine(config)
    assert [first.draw() for _ in range(50)] == [second.draw() for _ in range(50)]


def test_fifth_concurrent_request_to_a_mailbox_is_throttled(emulator: RunningEmulator) -> None:
    emulator.set_faults(FaultConfig(latency_ms=400))
    settings = emulator.settings
    token = secret_token(settings)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=f"{settings.graph_endpoint}/v1.0",
                                     verify=ssl_context(settings), trust_env=False,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            return list(await asyncio.gather(*(client.get(MESSAGES) for _ in range(6))))

    statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert statuses.count(200) == 4 and statuses.count(429) == 2
    throttled = [r for r in asyncio.run(burst()) if r.status_code == 429]
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    assert float(throttled[0].headers["Retry-After"]) > 0
    assert emulator.stats.throttled == 4


def test_request_budget_per_window(emulator: RunningEmulator) -> None:
    emulator.set_faults(FaultConfig(budget_requests=3, budget_window_s=60))
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        statuses = [client.get(MESSAGES).status_code for _ in range(4)]
        other_mailbox = client.get("/users/head@manbylodge.sch.uk/mailFolders/inbox/messages")
        last = client.get(MESSAGES)
    assert statuses == [200, 200, 200, 429]
    assert other_mailbox.status_code == 200
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    assert emulator.stats.per_mailbox[TEACHER] == 5


def test_random_errors_follow_dev_proxy(emulator: RunningEmulator) -> None:
    emulator.set_faults(FaultConfig(error_rate=1.0, retry_after_s=(2.128,)))
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        responses = [client.get("/users") for _ in range(30)]
    assert {r.status_code for r in responses} == {429, 500, 502, 503, 504}
    throttled = next(r for r in responses if r.status_code == 429)
    assert throttled.headers["Retry-After"] == "2.128"
    assert emulator.stats.faults_injected == 30


def test_single_batch_items_are_throttled_inside_an_outer_200(emulator: RunningEmulator) -> None:
    emulator.set_faults(FaultConfig(batch_item_throttle_rate=1.0, retry_after_s=(1.0,)))
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        answer = client.post("/$batch", json={"requests": [
            {"id": "1", "method": "GET", "url": MESSAGES},
            {"id": "2", "method": "GET", "url": "/users?$top=1"}]})
    assert answer.status_code == 200
    items = {item["id"]: item for item in answer.json()["responses"]}
    assert items["1"]["status"] == 429 and items["1"]["headers"]["Retry-After"] == "1"
    assert items["2"]["status"] == 200  # directory calls are not Outlook-throttled


def test_connection_resets_and_slow_answers(emulator: RunningEmulator) -> None:
    emulator.set_faults(FaultConfig(reset_rate=1.0))
    with http(emulator.settings, secret_token(emulator.settings)) as client, \
            pytest.raises(httpx.RemoteProtocolError):
        client.get("/users")
    emulator.set_faults(FaultConfig(slow_rate=1.0, slow_seconds=5))
    with http(emulator.settings, secret_token(emulator.settings), timeout=0.5) as client, \
            pytest.raises(httpx.ReadTimeout):
        client.get("/users")


def test_empty_delta_pages_still_carry_a_next_link(emulator: RunningEmulator) -> None:
    emulator.set_faults(FaultConfig(empty_delta_page_rate=1.0))
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        page = client.get(f"{MESSAGES}/delta", headers={"Prefer": "odata.maxpagesize=1"}).json()
        pages, items = [page], list(page["value"])
        while "@odata.nextLink" in page:
            page = client.get(page["@odata.nextLink"]).json()
            pages.append(page)
            items.extend(page["value"])
    assert [len(p["value"]) for p in pages] == [0, 1, 0, 1]
    assert all("@odata.nextLink" in p for p in pages[:-1])
    assert "@odata.deltaLink" in pages[-1]
    assert [m["id"] for m in items] == ["AAMkADI0001=", "AAMkADI0002="]


def test_settings_files_are_owner_only(emulator: RunningEmulator) -> None:
    for name in ("ca_bundle", "certificate_path"):
        assert Path(getattr(emulator.settings, name)).stat().st_mode & 0o077 == 0
    assert set(emulator.settings.model_dump()) == {
        "tenant_id", "client_id", "client_secret", "certificate_path", "certificate_thumbprint",
        "authority_host", "graph_endpoint", "ca_bundle"}


def test_hostile_mode_changes_answers_at_its_rate(emulator: RunningEmulator) -> None:
    """Issue 18: every kind of change is met over many answers; with the mode off (the
    default) the same requests answer as Graph does."""
    with http(emulator.settings, secret_token(emulator.settings)) as client:
        clean = [client.get(path).content for path in ("/users", MESSAGES)]
        emulator.set_faults(FaultConfig(seed=5, hostile_rate=1.0))
        answers = [client.get(path) for _ in range(60) for path in ("/users", MESSAGES)]
        emulator.set_faults(FaultConfig())
        again = [client.get(path).content for path in ("/users", MESSAGES)]
    assert again == clean
    statuses = {answer.status_code for answer in answers}
    assert {200, 429} <= statuses and statuses & {502, 503}
    # some changes leave a page as it was (no date to rewrite, no item to list twice)
    assert sum(answer.content not in clean for answer in answers) > len(answers) * 2 // 3
    odd = {answer.headers["Retry-After"] for answer in answers if answer.status_code == 429}
    assert len(odd) > 3  # 0, -1, abc, dates...
    html = [a for a in answers if a.headers["content-type"].startswith("text/html")]
    assert html and all(a.content.startswith(b"<html>") for a in html)

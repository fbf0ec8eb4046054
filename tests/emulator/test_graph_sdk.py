"""The real msgraph-sdk against the emulator: paging, $select, delta, rules, chats, audit, $batch.

Every model the SDK builds must have empty `additional_data`: no field the emulator sends is
unknown to Graph's own schema. Each test runs one event loop (the SDK's httpx client is bound
to it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from emulator_clients import TEACHER, TEACHER_UPN, graph_client, secret_token
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph import GraphServiceClient
from msgraph.generated.models.security.audit_log_query import AuditLogQuery
from msgraph.generated.users.item.chats.chats_request_builder import ChatsRequestBuilder
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from m365guard.emulator.server import RunningEmulator


def assert_nothing_lost(models: Iterable[Any]) -> None:
    for model in models:
        assert model.additional_data == {}, model.additional_data


def client_for(emulator: RunningEmulator) -> GraphServiceClient:
    return graph_client(emulator.settings, secret_token(emulator.settings))


def test_users_page_by_page_with_select(emulator: RunningEmulator) -> None:
    client = client_for(emulator)
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        top=2, select=["id", "userPrincipalName", "accountEnabled", "assignedLicenses"])

    async def all_pages() -> tuple[list[Any], int]:
        page = await client.users.get(RequestConfiguration(query_parameters=query))
        users, pages = list(page.value), 1
        while page.odata_next_link:
            page = await client.users.with_url(page.odata_next_link).get()
            users.extend(page.value)
            pages += 1
        return users, pages

    users, pages = asyncio.run(all_pages())
    assert pages == 3 and len(users) == 6
    assert_nothing_lost(users)
    leaver = next(u for u in users if u.user_principal_name.startswith("pleaver"))
    assert leaver.account_enabled is False
    assert users[0].assigned_licenses[0].sku_id is not None
    assert users[0].display_name is None  # not selected, not sent


def test_messages_with_select_filter_and_orderby(emulator: RunningEmulator) -> None:
    client = client_for(emulator)
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        select=["internetMessageId", "sentDateTime", "toRecipients", "ccRecipients",
                "bccRecipients", "from", "subject", "hasAttachments"],
        filter="sentDateTime ge 2024-11-18T10:00:00Z", orderby=["sentDateTime desc"], top=1000)
    page = asyncio.run(client.users.by_user_id(TEACHER_UPN).mail_folders
                       .by_mail_folder_id("sentitems").messages
                       .get(RequestConfiguration(query_parameters=query)))
    assert_nothing_lost(page.value)
    assert [m.subject for m in page.value] == ["Deleted later", "Newsletter", "Homework"]
    newsletter = page.value[1]
    assert [r.email_address.address for r in newsletter.bcc_recipients] == [
        "raj.patel@gmail.com", "kgreen@hotmail.co.uk"]
    assert newsletter.body is None
    assert page.odata_next_link is None


def test_delta_round_then_only_changes(emulator: RunningEmulator) -> None:
    client = client_for(emulator)
    delta = client.users.by_user_id(TEACHER).mail_folders.by_mail_folder_id(
        "sentitems").messages.delta

    async def one_round(first_url: str | None) -> tuple[list[Any], str]:
        config = RequestConfiguration[Any]()
        config.headers.add("Prefer", "odata.maxpagesize=2")
        page = await (delta.with_url(first_url).get(config) if first_url else delta.get(config))
        items, pages = list(page.value), 1
        while page.odata_next_link:
            page = await delta.with_url(page.odata_next_link).get(config)
            items.extend(page.value)
            pages += 1
        assert page.odata_delta_link
        assert pages == max(1, -(-len(items) // 2))
        return items, page.odata_delta_link

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        items, link = await one_round(None)
        again, link = await one_round(link)
        emulator.tenant.advance_to(datetime(2024, 11, 22, tzinfo=UTC))
        changes, _ = await one_round(link)
        return items, again, changes

    items, again, changes = asyncio.run(scenario())
    assert len(items) == 4
    assert_nothing_lost(items)
    assert again == []
    assert [m.id for m in changes] == ["AAMkADS0005=", "AAMkADS0004="]
    assert changes[1].additional_data == {"@removed": {"reason": "deleted"}}


def test_rules_settings_chats_and_members(emulator: RunningEmulator) -> None:
    client = client_for(emulator)
    user = client.users.by_user_id(TEACHER)
    query = ChatsRequestBuilder.ChatsRequestBuilderGetQueryParameters(expand=["members"])

    async def read() -> tuple[Any, Any, Any, Any]:
        rules = await user.mail_folders.by_mail_folder_id("inbox").message_rules.get()
        settings = await user.mailbox_settings.get()
        chats = await user.chats.get(RequestConfiguration(query_parameters=query))
        group = next(c for c in chats.value if c.chat_type.value == "group")
        members = await client.chats.by_chat_id(group.id).members.get()
        return rules, settings, chats, members

    rules, settings, chats, members = asyncio.run(read())
    assert_nothing_lost(rules.value)
    assert rules.value[0].actions.forward_to[0].email_address.address == (
        "jane.smith1987@gmail.com")
    assert settings.time_zone == "GMT Standard Time"
    assert_nothing_lost(chats.value)
    assert_nothing_lost(m for chat in chats.value for m in chat.members)
    group = next(c for c in chats.value if c.chat_type.value == "group")
    guest = next(m for m in group.members if "guest" in m.roles)
    assert guest.email == "raj.patel@gmail.com" and guest.tenant_id
    assert_nothing_lost(members.value)
    assert members.odata_count == 2


def test_audit_log_query_lifecycle(emulator: RunningEmulator) -> None:
    queries = client_for(emulator).security.audit_log.queries
    body = AuditLogQuery(
        display_name="forwarding changes",
        filter_start_date_time=datetime(2024, 11, 1, tzinfo=UTC),
        filter_end_date_time=datetime(2024, 11, 30, tzinfo=UTC),
        operation_filters=["Set-Mailbox", "New-InboxRule", "Set-InboxRule", "UpdateInboxRules"])

    async def lifecycle() -> tuple[Any, list[str], Any]:
        created = await queries.post(body)
        statuses = [(await queries.by_audit_log_query_id(created.id).get()).status.value
                    for _ in range(3)]
        records = await queries.by_audit_log_query_id(created.id).records.get()
        return created, statuses, records

    created, statuses, records = asyncio.run(lifecycle())
    assert created.status.value == "notStarted"
    assert statuses == ["notStarted", "running", "succeeded"]
    assert_nothing_lost(records.value)
    assert [r.operation for r in records.value] == ["Set-Mailbox", "New-InboxRule"]


def test_batch_through_the_sdk_adapter(emulator: RunningEmulator) -> None:
    """msgraph_core's BatchRequestContent needs the missing 'deprecated' package, so the batch
    goes through the SDK's adapter (auth + middleware) as raw bytes, as collect.py does."""
    settings = emulator.settings
    client = client_for(emulator)
    payload = {"requests": [
        {"id": "1", "method": "GET", "url": "/users?$top=1&$select=id"},
        {"id": "2", "method": "GET", "url": f"{settings.graph_endpoint}/v1.0/subscribedSkus",
         "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": "users/nobody@nowhere/mailboxSettings"},
        {"id": "4", "method": "GET", "url": "subscribedSkus", "depends_on": ["3"]},
        {"id": "5", "method": "GET", "url": f"/users/{TEACHER}/mailFolders/inbox/messageRules"}]}
    request = RequestInformation(Method.POST, "{+baseurl}/$batch")
    request.path_parameters["baseurl"] = client.request_adapter.base_url
    request.headers.add("Content-Type", "application/json")
    request.content = orjson.dumps(payload)
    raw = asyncio.run(client.request_adapter.send_primitive_async(request, "bytes", {}))
    items = {item["id"]: item for item in orjson.loads(raw)["responses"]}
    assert [items[i]["status"] for i in "12345"] == [200, 200, 404, 424, 200]
    assert len(items["1"]["body"]["value"]) == 1 and "@odata.nextLink" in items["1"]["body"]
    assert items["3"]["body"]["error"]["code"] == "ErrorInvalidUser"
    assert items["2"]["headers"]["Content-Type"] == "application/json"
    assert items["5"]["body"]["value"][0]["displayName"] == "Forward to home"

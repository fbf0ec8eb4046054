"""Mail listings and the folder tree: GET /users/{id}/messages (the whole mailbox), one
folder's messages, /mailFolders, a folder, its childFolders (user-list-messages.md,
user-list-mailfolders.md, mailfolder-get.md, mailfolder-list-childfolders.md). Handlers as in
odata.py: the parsed request in, Graph-shaped JSON out.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import orjson

from m365guard.emulator.messages import (
    MESSAGE_PROPERTIES,
    folder_of,
    mailbox_of,
    message_filter,
    message_json,
    message_order,
    selected,
)
from m365guard.emulator.odata import (
    GraphResponse,
    collection,
    next_link,
    offset_page,
    page_size,
    project,
    resume,
    select_of,
)
from m365guard.emulator.resources import ROOT_FOLDER, Folder, Json, Mailbox, Message, folder_id_for
from m365guard.emulator.service import Call


def list_messages(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/mailFolders/{folder}/messages: newest first unless $orderby says."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    folder = folder_of(mailbox, params["folder"], call.tenant.now_epoch)
    context = f"users('{user['id']}')/mailFolders('{params['folder']}')/messages"
    return message_listing(call, folder.order, context)


def list_user_messages(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/messages: every folder's messages, Deleted Items and Junk Email too
    (user-list-messages.md), with the same query options as one folder's listing."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    return message_listing(call, mailbox.order, f"users('{user['id']}')/messages")


def message_listing(call: Call, order: Callable[[str], tuple[list[float], list[Message]]],
                    context: str) -> GraphResponse:
    """A page of messages from `order` (messages sorted by a date property): $select, $top,
    $filter on dates, $orderby; the clock of the first page holds for the later ones."""
    query, cursor = resume(call.request)
    size, applied = page_size(query, call.request.headers, default=10, maximum=1000,
                              code="ErrorInvalidUrlQuery")
    select = select_of(query, MESSAGE_PROPERTIES)
    conditions = message_filter(query)
    ordered, descending = message_order(query, conditions)
    asof = float(cursor["asof"]) if cursor else call.tenant.now_epoch
    low = high = None
    for condition in conditions:
        if condition.field == ordered and condition.op in ("ge", "gt", "eq"):
            low = condition.value if low is None else max(low, condition.value)
        if condition.field == ordered and condition.op in ("le", "lt", "eq"):
            high = condition.value if high is None else min(high, condition.value)
    keys, ranked = order(ordered)
    start = 0 if low is None else bisect.bisect_left(keys, low)
    stop = len(keys) if high is None else bisect.bisect_right(keys, high)
    position = int(cursor["pos"]) if cursor else 0
    items: list[orjson.Fragment] = []
    key = selected(select)
    step = -1 if descending else 1
    index = (stop - 1 - position) if descending else (start + position)
    while start <= index < stop and len(items) < size:
        message = ranked[index]
        index += step
        position += 1
        if message.visible(asof) and all(c.holds(message.dates) for c in conditions):
            items.append(message_json(message, key, typed=False))
    more = start <= index < stop
    link = next_link(call.request, query, {"pos": position, "asof": asof}) if more else None
    if select:
        context += f"({','.join(select)})"
    return collection(call.request, context, items, link, headers=applied)


def folder_resource(mailbox: Mailbox, folder: Folder, now: float) -> Json:
    """A mailFolder as Graph serves it (mailfolder resource; counts at `now`)."""
    present = [m for m in folder.messages if m.visible(now)]
    return {"id": folder.id, "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
            "childFolderCount": len(mailbox.children(folder.id, now)),
            "unreadItemCount": sum(1 for m in present if not m.data.get("isRead")),
            "totalItemCount": len(present), "isHidden": False}


def list_mail_folders(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/mailFolders: the folders directly under the root only
    (user-list-mailfolders.md: each child folder is traversed separately); 10 a page."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    now = call.tenant.now_epoch
    root = folder_id_for(user["id"], ROOT_FOLDER)
    rows = [folder_resource(mailbox, f, now) for f in mailbox.children(root, now)]
    return offset_page(call.request, f"users('{user['id']}')/mailFolders", rows, default=10,
                       maximum=1000)


def get_mail_folder(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/mailFolders/{id or well-known name} (mailfolder-get.md)."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    now = call.tenant.now_epoch
    folder = folder_of(mailbox, params["folder"], now)
    body = {"@odata.context":
            f"{call.request.base_url}/v1.0/$metadata#users('{user['id']}')/mailFolders/$entity",
            **project(folder_resource(mailbox, folder, now), select_of(call.request.query))}
    return GraphResponse(200, body)


def list_child_folders(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/mailFolders/{id}/childFolders (mailfolder-list-childfolders.md)."""
    user, mailbox = mailbox_of(call.tenant, params["user_id"])
    now = call.tenant.now_epoch
    folder = folder_of(mailbox, params["folder"], now)
    rows = [folder_resource(mailbox, f, now) for f in mailbox.children(folder.id, now)]
    return offset_page(call.request,
                       f"users('{user['id']}')/mailFolders('{folder.id}')/childFolders",
                       rows, default=10, maximum=1000)

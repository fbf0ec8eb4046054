"""Teams handlers: a user's chats (optionally with members expanded) and a chat's members
(chat-list.md, chat-list-members.md).
"""

from __future__ import annotations

from m365guard.emulator.directory import directory_user
from m365guard.emulator.odata import (
    GraphError,
    GraphResponse,
    collection,
    next_link,
    page_size,
    project,
    resume,
    select_of,
)
from m365guard.emulator.service import Call

EXPANDED_MEMBERS_CAP = 25


def list_user_chats(call: Call, params: dict[str, str]) -> GraphResponse:
    """GET /users/{id}/chats (optionally $expand=members), at most 50 per page."""
    user = directory_user(call.tenant, params["user_id"])
    query, cursor = resume(call.request)
    size, applied = page_size(query, call.request.headers, default=50, maximum=50)
    expand = query.get("$expand", "")
    if expand not in ("", "members"):
        raise GraphError(400, "BadRequest", f"Expand '{expand}' is not supported.")
    select = select_of(query)
    chats = sorted(call.tenant.chats_of(user["id"]),
                   key=lambda pair: str(pair[0].get("lastUpdatedDateTime", "")), reverse=True)
    start = int(cursor["offset"]) if cursor else 0
    items = []
    for chat, members in chats[start:start + size]:
        item = project(chat, select)
        if expand == "members":  # chat-list.md, known issue: at most 25 members expanded
            item["members"] = members[:EXPANDED_MEMBERS_CAP]
        items.append(item)
    link = next_link(call.request, query, {"offset": start + size}) \
        if start + size < len(chats) else None
    return collection(call.request, f"users('{user['id']}')/chats", items, link, headers=applied)


def list_chat_members(call: Call, params: dict[str, str]) -> GraphResponse:
    found = call.tenant.chat(params["chat_id"])
    if found is None:
        raise GraphError(404, "NotFound", f"Chat '{params['chat_id']}' was not found.")
    _, members = found
    return collection(call.request, f"chats('{params['chat_id']}')/members", members,
                      extra={"@odata.count": len(members)})

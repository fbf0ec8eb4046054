"""Directory handlers: /users, /users/{id}, /subscribedSkus, /groups, transitiveMembers and
/education/users (user-list.md, subscribedsku-list.md, group-list.md,
group-list-transitivemembers.md, educationuser-list.md), with Graph's basic $filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from m365guard.emulator.odata import (
    GraphError,
    GraphResponse,
    collection,
    offset_page,
    project,
    select_of,
)
from m365guard.emulator.resources import Json
from m365guard.emulator.service import Call
from m365guard.emulator.state import Tenant

# What GET /users returns without $select (Graph's default user properties).
USER_DEFAULT_PROPERTIES = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)

DIRECTORY_CLAUSE = re.compile(
    r"^\s*(?:(?P<prop>[A-Za-z]+)\s+(?P<op>eq|ne)\s+(?P<value>'(?:[^']|'')*'|true|false|null)"
    r"|startswith\(\s*(?P<sprop>[A-Za-z]+)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\))\s*$"
)


def directory_filter(query: Mapping[str, str]) -> Callable[[Json], bool]:
    """Graph's basic directory $filter: eq/ne and startswith, joined by 'and'."""
    tests: list[Callable[[Json], bool]] = []
    for clause in re.split(r"\s+and\s+", query["$filter"]):
        match = DIRECTORY_CLAUSE.match(clause)
        if match is None:
            raise GraphError(400, "Request_UnsupportedQuery",
                             f"Unsupported or invalid query filter clause specified: '{clause}'.")
        if match.group("sprop"):
            prop, prefix = match.group("sprop"), match.group("prefix").replace("''", "'").lower()

            def starts(row: Json, p: str = prop, x: str = prefix) -> bool:
                return str(row.get(p) or "").lower().startswith(x)

            tests.append(starts)
            continue
        literal = match.group("value")
        expected: Any = {"true": True, "false": False, "null": None}.get(
            literal, literal[1:-1].replace("''", "'"))
        prop, negate = match.group("prop"), match.group("op") == "ne"

        def equal(row: Json, p: str = prop, e: Any = expected, n: bool = negate) -> bool:
            value = row.get(p)
            same = (value.lower() == e.lower() if isinstance(value, str) and isinstance(e, str)
                    else value == e)
            return same != n

        tests.append(equal)
    return lambda row: all(test(row) for test in tests)


def list_users(call: Call, _: dict[str, str]) -> GraphResponse:
    return offset_page(call.request, "users", call.tenant.users, default=100, maximum=999,
                       default_select=USER_DEFAULT_PROPERTIES, filter_fn=directory_filter)


def get_user(call: Call, params: dict[str, str]) -> GraphResponse:
    user = directory_user(call.tenant, params["user_id"])
    select = select_of(call.request.query)
    body = {"@odata.context": f"{call.request.base_url}/v1.0/$metadata#users/$entity",
            **project(user, select if select is not None else USER_DEFAULT_PROPERTIES)}
    return GraphResponse(200, body)


def directory_user(tenant: Tenant, id_or_upn: str) -> Json:
    user = tenant.user(id_or_upn)
    if user is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{id_or_upn}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    return user


def list_skus(call: Call, _: dict[str, str]) -> GraphResponse:
    if "$filter" in call.request.query:
        raise GraphError(400, "Request_UnsupportedQuery", "This request does not support $filter.")
    select = select_of(call.request.query)
    return collection(call.request, "subscribedSkus",
                      [project(s, select) for s in call.tenant.skus])


def list_groups(call: Call, _: dict[str, str]) -> GraphResponse:
    return offset_page(call.request, "groups", call.tenant.groups, default=100, maximum=999,
                       filter_fn=directory_filter)


def group_transitive_members(call: Call, params: dict[str, str]) -> GraphResponse:
    group_id = params["group_id"]
    if group_id not in call.tenant.groups_by_id:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{group_id}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    members = call.tenant.transitive_members(group_id)
    return offset_page(call.request, "directoryObjects", members, default=100, maximum=999)


def list_education_users(call: Call, _: dict[str, str]) -> GraphResponse:
    return offset_page(call.request, "education/users", call.tenant.education_users,
                       default=100, maximum=999, filter_fn=directory_filter)

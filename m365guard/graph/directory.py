"""The directory reader: users, SKUs, education roles and named groups' members, paged directly.

These are a few large lists, not per-mailbox chains, so they are GETs of their own (each
following nextLinks through empty pages), read alongside the mailbox streams' first batches.
"""

from __future__ import annotations

import logging
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration

from m365guard.errors import ExitCode, GuardError
from m365guard.graph.client import GraphSession
from m365guard.graph.pages import items, text
from m365guard.graph.sink import RowSink, failure_reason

log = logging.getLogger(__name__)

USER_FIELDS = ("id", "userPrincipalName", "mail", "displayName", "accountEnabled",
               "assignedLicenses")
USER_TYPE = "#microsoft.graph.user"


class DirectoryReader:
    """Reads the tenant-wide lists into the sink's users, skus, edu_roles, group_members."""

    def __init__(self, session: GraphSession, sink: RowSink) -> None:
        self.session = session
        self.sink = sink

    async def read_all(self, kind: str, first: Any, mailbox: str = "") -> list[Any] | None:
        """Every item of a paged list (following nextLinks through empty pages); None, with
        a failed coverage row, when a page could not be read."""
        info: Any = first
        found: list[Any] = []
        while True:
            status, body = await self.session.get_json(info)
            if status != 200:
                self.sink.cover(mailbox, kind, "failed", failure_reason(kind, status, body), 0)
                return None
            found.extend(body.get("value", []))
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return found
            info = self.session.get_info(next_link)

    async def read_users(self) -> list[dict[str, Any]]:
        """Every user (well-formed ones only); no user list at all ends the run."""
        client = self.session.client
        config = RequestConfiguration(
            query_parameters=client.users.UsersRequestBuilderGetQueryParameters(
                select=list(USER_FIELDS), top=999))
        users = await self.read_all("users", client.users.to_get_request_information(config))
        if users is None:
            reason = self.sink.last_reason("users")
            if reason.startswith("access denied"):
                raise GuardError(
                    "cannot list users: grant the application permission User.Read.All"
                    " (run `m365guard doctor`)", ExitCode.PERMISSION_MISSING)
            # a 5xx or 429 that outlived every retry: nothing can be read, say so (not 403)
            raise GuardError(f"cannot list users: Graph kept failing ({reason}); nothing was"
                             " read, try again later", ExitCode.HOST_UNREACHABLE)
        if not users:
            # every tenant has users (the app's admins at least): an empty list is a fault
            # (a proxy, a service glitch; issue 18 hostile mode), and taken as a complete
            # night it would move every mailbox's window past mail never read
            raise GuardError("cannot list users: Graph answered an empty directory; nothing"
                             " was read, try again later", ExitCode.HOST_UNREACHABLE)
        good: list[dict[str, Any]] = []
        seen: set[str] = set()
        for user in users:
            if not isinstance(user, dict) or not user.get("id") or not isinstance(
                    user.get("userPrincipalName"), str) or str(user["id"]) in seen:
                self.sink.skipped += 1
                log.warning("skipped a malformed or repeated user (no id or"
                            " userPrincipalName, or an id seen before): %.200r", user)
                continue
            seen.add(str(user["id"]))
            skus = ";".join(text(lic.get("skuId")) for lic in items(
                user.get("assignedLicenses")) if isinstance(lic, dict))
            self.sink.rows["users"].append((
                text(user.get("id")), user["userPrincipalName"], text(user.get("mail")),
                text(user.get("displayName")), user.get("accountEnabled") is True, skus))
            good.append(user)
        self.sink.cover("", "users", "ok", "", len(good))
        return good

    async def read_skus(self) -> None:
        builder = self.session.client.subscribed_skus
        config = RequestConfiguration(query_parameters=builder
                                      .SubscribedSkusRequestBuilderGetQueryParameters(
                                          select=["skuId", "skuPartNumber"]))
        skus = await self.read_all("skus", builder.to_get_request_information(config))
        if skus is not None:
            self.sink.rows["skus"].extend((s.get("skuId", ""), s.get("skuPartNumber") or "")
                                          for s in skus)
            self.sink.cover("", "skus", "ok", "", len(skus))

    async def read_edu_roles(self) -> None:
        builder = self.session.client.education.users
        config = RequestConfiguration(query_parameters=builder
                                      .UsersRequestBuilderGetQueryParameters(
                                          select=["id", "primaryRole"], top=999))
        users = await self.read_all("edu_roles", builder.to_get_request_information(config))
        if users is not None:
            self.sink.rows["edu_roles"].extend((u.get("id", ""), u.get("primaryRole") or "")
                                               for u in users)
            self.sink.cover("", "edu_roles", "ok", "", len(users))

    async def read_groups(self, group_names: tuple[str, ...]) -> None:
        """The user members (transitive, not nested groups) of each group the policy names."""
        for name in group_names:
            builder = self.session.client.groups
            escaped = name.replace("'", "''")
            config = RequestConfiguration(query_parameters=builder
                                          .GroupsRequestBuilderGetQueryParameters(
                                              filter=f"displayName eq '{escaped}'",
                                              select=["id", "displayName"]))
            found = await self.read_all("group_members", builder.to_get_request_information(config))
            if found is None:
                continue
            if not found:
                raise GuardError(f"policy names group {name!r}, which the tenant does not have;"
                                 " fix the group name in policies.toml", ExitCode.CONFIG_ERROR)
            for group in found:
                await self._read_members(group["id"], name)

    async def _read_members(self, group_id: str, name: str) -> None:
        members = self.session.client.groups.by_group_id(group_id).transitive_members
        config = RequestConfiguration(query_parameters=members
                                      .TransitiveMembersRequestBuilderGetQueryParameters(
                                          select=["id"], top=999))
        found = await self.read_all("group_members", members.to_get_request_information(config))
        if found is None:
            return
        users = [m for m in found if m.get("@odata.type", USER_TYPE) == USER_TYPE]
        self.sink.rows["group_members"].extend((group_id, name, u.get("id", "")) for u in users)
        self.sink.cover("", f"group:{name}", "ok", "", len(users))

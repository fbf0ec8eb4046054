"""The route table: which Graph paths exist, the handler of each, which application roles each
accepts (each endpoint's Permissions table in api-reference/v1.0/api), and how a denial reads.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from starlette.routing import compile_path

from m365guard.emulator import audit, directory, mail, messages, rule_write, sendmail, teams
from m365guard.emulator.odata import GraphError
from m365guard.emulator.service import Handler

USERS_READ = ("User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All", "Directory.Read.All",
              "Directory.ReadWrite.All")
SKUS_READ = ("Organization.Read.All", "LicenseAssignment.Read.All", "Directory.Read.All",
             "Directory.ReadWrite.All", "Organization.ReadWrite.All")
GROUPS_READ = ("GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All",
               "Directory.Read.All", "Directory.ReadWrite.All")
# educationuser-list.md: application EduRoster.Read.All or ReadWrite.All; ReadBasic is not enough
EDU_READ = ("EduRoster.Read.All", "EduRoster.ReadWrite.All")
MAIL_READ = ("Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite")
SETTINGS_READ = ("MailboxSettings.Read", "MailboxSettings.ReadWrite")
CHATS_READ = ("Chat.ReadBasic.All", "Chat.Read.All", "Chat.ReadWrite.All")
CHAT_MEMBERS_READ = ("ChatMember.Read.All", "ChatMember.ReadWrite.All", *CHATS_READ)
AUDIT_READ = ("AuditLogsQuery-Exchange.Read.All", "AuditLogsQuery.Read.All")

DIRECTORY_DENIED = ("Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.")
EXCHANGE_DENIED = ("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
FORBIDDEN = ("Forbidden", "Missing role permissions on the request. API requires one of '{}'. "
                          "Roles on the request '{}'.")


@dataclass(frozen=True)
class GraphRoute:
    """One Graph endpoint: method, path template, handler, roles accepted, how a denial reads."""

    method: str
    template: str
    handler: Handler
    roles: tuple[str, ...]
    denied: tuple[str, str]
    per_mailbox: bool = False  # subject to Outlook's per app+mailbox limits
    teams: bool = False  # an "other GET" of Teams: 30 per second per app (faults.py)
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", compile_path(self.template)[0])


GRAPH_ROUTES = (
    GraphRoute("GET", "/users", directory.list_users, USERS_READ, DIRECTORY_DENIED),
    GraphRoute("GET", "/users/{user_id}", directory.get_user, USERS_READ, DIRECTORY_DENIED),
    GraphRoute("GET", "/subscribedSkus", directory.list_skus, SKUS_READ, DIRECTORY_DENIED),
    GraphRoute("GET", "/groups", directory.list_groups, GROUPS_READ, DIRECTORY_DENIED),
    GraphRoute("GET", "/groups/{group_id}/transitiveMembers", directory.group_transitive_members,
               GROUPS_READ, DIRECTORY_DENIED),
    GraphRoute("GET", "/education/users", directory.list_education_users, EDU_READ,
               DIRECTORY_DENIED),
    GraphRoute("GET", "/users/{user_id}/messages", mail.list_user_messages,
               MAIL_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/mailFolders", mail.list_mail_folders,
               MAIL_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/mailFolders/{folder}", mail.get_mail_folder,
               MAIL_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/mailFolders/{folder}/childFolders",
               mail.list_child_folders, MAIL_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/mailFolders/{folder}/messages", mail.list_messages,
               MAIL_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/mailFolders/{folder}/messages/delta",
               messages.messages_delta, MAIL_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/mailFolders/{folder}/messageRules",
               messages.list_message_rules, SETTINGS_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("PATCH", "/users/{user_id}/mailFolders/{folder}/messageRules/{rule_id}",
               rule_write.update_message_rule, rule_write.WRITE_ROLES, EXCHANGE_DENIED,
               per_mailbox=True),
    GraphRoute("POST", "/users/{user_id}/sendMail", sendmail.send_mail, (), EXCHANGE_DENIED),
    GraphRoute("GET", "/users/{user_id}/mailboxSettings", messages.get_mailbox_settings,
               SETTINGS_READ, EXCHANGE_DENIED, per_mailbox=True),
    GraphRoute("GET", "/users/{user_id}/chats", teams.list_user_chats, CHATS_READ, FORBIDDEN,
               teams=True),
    GraphRoute("GET", "/chats/{chat_id}/members", teams.list_chat_members, CHAT_MEMBERS_READ,
               FORBIDDEN, teams=True),
    GraphRoute("POST", "/security/auditLog/queries", audit.create_audit_query, AUDIT_READ,
               FORBIDDEN),
    GraphRoute("GET", "/security/auditLog/queries", audit.list_audit_queries, AUDIT_READ,
               FORBIDDEN),
    GraphRoute("GET", "/security/auditLog/queries/{query_id}", audit.get_audit_query, AUDIT_READ,
               FORBIDDEN),
    GraphRoute("GET", "/security/auditLog/queries/{query_id}/records", audit.list_audit_records,
               AUDIT_READ, FORBIDDEN),
)


def match_route(method: str, path: str) -> tuple[GraphRoute, dict[str, str]]:
    """The route for a path, or Graph's 400 for an unknown segment / 405 for a wrong method."""
    path_matched = False
    for route in GRAPH_ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        path_matched = True
        if route.method == method:
            return route, found.groupdict()
    if path_matched:
        raise GraphError(405, "Request_BadRequest",
                           f"The HTTP method '{method}' is not allowed for this resource.")
    segment = path.strip("/").split("/")[-1] if path.strip("/") else ""
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def route_table() -> Collection[tuple[str, str, tuple[str, ...]]]:
    """(method, path, roles) for every Graph route, for docs and `emulator routes`."""
    return [(r.method, r.template, r.roles) for r in GRAPH_ROUTES]

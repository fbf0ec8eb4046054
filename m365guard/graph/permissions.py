"""The application permissions each kind of data needs: least privilege, never Mail.Read.

Mail.ReadBasic.All reads senders, recipients, dates and subjects but never bodies or
attachments; inbox rules need MailboxSettings.Read; chats Chat.ReadBasic.All. Each value is the
least-privileged application permission Microsoft documents for that endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

REQUIRED_PERMISSIONS: dict[str, str] = {
    "users": "User.Read.All",  # GET /users
    "skus": "LicenseAssignment.Read.All",  # GET /subscribedSkus
    "group_members": "GroupMember.Read.All",  # GET /groups/{id}/transitiveMembers
    "edu_roles": "EduRoster.Read.All",  # GET /education/users (educationuser-list.md)
    "messages": "Mail.ReadBasic.All",  # GET /users/{id}/mailFolders/{id}/messages/delta
    "messageRules": "MailboxSettings.Read",  # GET /users/{id}/mailFolders/inbox/messageRules
    "chats": "Chat.ReadBasic.All",  # GET /users/{id}/chats
    "auditLog": "AuditLogsQuery-Exchange.Read.All",  # POST /security/auditLog/queries
}

# Permissions that would work but read more than m365guard needs (message bodies).
TOO_BROAD = frozenset({"Mail.Read", "Mail.ReadWrite"})


def required_for(kinds: Iterable[str]) -> set[str]:
    """The permissions to grant for the data kinds a run will read."""
    return {REQUIRED_PERMISSIONS[kind] for kind in kinds}

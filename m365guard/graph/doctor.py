"""`m365guard doctor`: check the connection step by step and say exactly what to fix.

Order matters: configuration, then the authority (TLS, tenant), then a token, then the token's
application permissions against what the enabled checks need, then one real call per endpoint.
Each step that fails stops the steps that depend on it, so the first failing line is the cause.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import orjson
import requests
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.security.audit_log_query import AuditLogQuery

from m365guard.errors import GuardError
from m365guard.graph.auth import TokenSource, VerifiedSession, connection_error
from m365guard.graph.client import GraphSession, RetryPolicy
from m365guard.graph.permissions import REQUIRED_PERMISSIONS, TOO_BROAD, required_for
from m365guard.graph.replies import error_code
from m365guard.graph.settings import ConnectionSettings


@dataclass(frozen=True)
class DoctorCheck:
    """One line of the doctor's table."""

    name: str
    passed: bool
    detail: str
    fix: str = ""


def _authority_check(conn: ConnectionSettings) -> DoctorCheck:
    """Fetch the tenant's OpenID configuration: proves TLS, reachability and the tenant id."""
    url = f"{conn.authority}/v2.0/.well-known/openid-configuration"
    name = "authority reachable"
    try:
        response = VerifiedSession(conn.ca_bundle).get(url)
    except requests.RequestException as exc:
        error = connection_error(exc, conn.authority_host)
        return DoctorCheck(name, False, f"{url}: {type(exc).__name__}", error.message)
    if response.status_code == 200:
        return DoctorCheck(name, True, f"{conn.authority_host} knows tenant {conn.tenant_id}")
    return DoctorCheck(name, False, f"{url} answered HTTP {response.status_code}",
                       f"check tenant_id {conn.tenant_id} and cloud / authority_host")


def _probes(session: GraphSession, mailbox_id: str | None) -> dict[str, RequestInformation]:
    """One cheap GET per data kind, built by the SDK's request builders."""
    client = session.client
    now = dt.datetime.now(dt.UTC)
    probes: dict[str, RequestInformation] = {
        "users": client.users.to_get_request_information(RequestConfiguration(
            query_parameters=client.users.UsersRequestBuilderGetQueryParameters(
                select=["id"], top=1))),
        "skus": client.subscribed_skus.to_get_request_information(),
        "group_members": client.groups.to_get_request_information(RequestConfiguration(
            query_parameters=client.groups.GroupsRequestBuilderGetQueryParameters(
                select=["id"], top=1))),
        "edu_roles": client.education.users.to_get_request_information(RequestConfiguration(
            query_parameters=client.education.users.UsersRequestBuilderGetQueryParameters(
                select=["id"], top=1))),
        # the call the nightly run makes, over one minute (Graph queues it; nothing changes)
        "auditLog": client.security.audit_log.queries.to_post_request_information(AuditLogQuery(
            odata_type="#microsoft.graph.security.auditLogQuery",
            display_name="m365guard doctor", filter_start_date_time=now - dt.timedelta(minutes=1),
            filter_end_date_time=now, operation_filters=["Set-Mailbox"])),
    }
    if mailbox_id is not None:
        user = client.users.by_user_id(mailbox_id)
        inbox = user.mail_folders.by_mail_folder_id("inbox")
        probes["messages"] = inbox.messages.to_get_request_information(RequestConfiguration(
            query_parameters=inbox.messages.MessagesRequestBuilderGetQueryParameters(
                select=["id"], top=1)))
        probes["messageRules"] = inbox.message_rules.to_get_request_information()
        probes["chats"] = user.chats.to_get_request_information(RequestConfiguration(
            query_parameters=user.chats.ChatsRequestBuilderGetQueryParameters(top=1)))
    return probes


async def _call_checks(session: GraphSession, kinds: set[str]) -> list[DoctorCheck]:
    client = session.client
    status, body = await session.get_json(client.users.to_get_request_information(
        RequestConfiguration(query_parameters=client.users.UsersRequestBuilderGetQueryParameters(
            select=["id", "mail"], top=20))))
    users = body.get("value", []) if status == 200 and isinstance(body, dict) else []
    with_mail = [u["id"] for u in users if u.get("mail")]
    mailbox_id = with_mail[0] if with_mail else None
    probes = _probes(session, mailbox_id)
    checks = []
    if "messages" in kinds and len(with_mail) > 1:
        checks.append(await _scope_check(session, with_mail))
    for kind in sorted(kinds):
        name = f"call {kind}"
        if kind not in probes:
            checks.append(DoctorCheck(name, False, "no user with a mailbox to try it on",
                                      "check that staff have Exchange Online licences"))
            continue
        response = await session.send(probes[kind])
        if response.status_code in (200, 201):
            checks.append(DoctorCheck(name, True, f"HTTP 200 from {response.request.url.path}"))
            continue
        try:
            code, message = error_code(orjson.loads(response.content))
        except orjson.JSONDecodeError:
            code, message = "", ""
        permission = REQUIRED_PERMISSIONS[kind]
        fix = f"grant the application permission {permission} with admin consent"
        if code == "ErrorAccessDenied" and permission in session.granted_roles:
            fix = (f"{permission} is granted: an Exchange scope (RBAC for Applications or an"
                   " application access policy) leaves this mailbox out; add it to the scope,"
                   " or set [collect] mailbox_scope_group to the scope's group")
        checks.append(DoctorCheck(
            name, False, f"HTTP {response.status_code} {code} {message}".strip(), fix))
    return checks


async def _scope_check(session: GraphSession, mailbox_ids: list[str]) -> DoctorCheck:
    """Read one message id from each sampled mailbox: some answering 403 ErrorAccessDenied
    while Mail.ReadBasic.All is granted means the app is scoped to a set of mailboxes."""
    outside = 0
    for mailbox_id in mailbox_ids:
        inbox = session.client.users.by_user_id(mailbox_id).mail_folders.by_mail_folder_id(
            "inbox")
        response = await session.send(inbox.messages.to_get_request_information(
            RequestConfiguration(query_parameters=inbox.messages
                                 .MessagesRequestBuilderGetQueryParameters(select=["id"], top=1))))
        if response.status_code == 403:
            outside += 1
    if not outside:
        return DoctorCheck("mailbox scope", True, f"all {len(mailbox_ids)} sampled mailboxes"
                                                  " readable: the app is not scoped, or all are in")
    return DoctorCheck(
        "mailbox scope", outside < len(mailbox_ids),
        f"{outside} of {len(mailbox_ids)} sampled mailboxes answer 403 ErrorAccessDenied: an"
        " Exchange scope (RBAC for Applications or an application access policy) limits the app",
        "set [collect] mailbox_scope_group to the scope's group, so the mailboxes outside it"
        " are reported as excluded by policy, not as failed; or widen the scope")


def run_doctor(conn: ConnectionSettings, kinds: set[str]) -> list[DoctorCheck]:
    """Every check in order; `kinds` are the data kinds (REQUIRED_PERMISSIONS keys) needed."""
    credential = f"certificate {conn.certificate_path}" if conn.uses_certificate \
        else "client secret (a certificate is recommended)"
    checks = [DoctorCheck("configuration", True,
                          f"tenant {conn.tenant_id}, client {conn.client_id}, {credential},"
                          f" graph {conn.graph_endpoint}")]
    authority = _authority_check(conn)
    checks.append(authority)
    if not authority.passed:
        return checks
    try:
        tokens = TokenSource(conn)
        tokens.token()
    except GuardError as exc:
        checks.append(DoctorCheck("token", False, f"exit code {int(exc.exit_code)}", exc.message))
        return checks
    checks.append(DoctorCheck("token", True, f"app-only token with {len(tokens.granted_roles)}"
                                             " application permissions"))
    for permission in sorted(required_for(kinds)):
        granted = permission in tokens.granted_roles
        checks.append(DoctorCheck(
            f"permission {permission}", granted, "granted" if granted else "not granted",
            "" if granted else f"API permissions > Microsoft Graph > Application > {permission},"
                               " then Grant admin consent"))
    for permission in sorted(TOO_BROAD & tokens.granted_roles):
        checks.append(DoctorCheck(
            f"permission {permission}", False, "granted but reads message bodies",
            f"remove {permission}: Mail.ReadBasic.All is all m365guard needs"))
    with GraphSession(conn, tokens, RetryPolicy(attempts=2, request_timeout=30.0)) as session:
        try:
            checks.extend(session.run(_call_checks(session, kinds)))
        except GuardError as exc:
            checks.append(DoctorCheck("graph reachable", False, conn.graph_endpoint, exc.message))
    return checks


"""The doctor's lines about apps: which app registrations m365guard has, and what each can do.

The nightly app should only read; the [enforce] app (when enforcement is on) needs
MailboxSettings.ReadWrite and nothing that reads mail. Each app's token is fetched and its
application permissions read from it; no write is attempted.
"""

from __future__ import annotations

from collections.abc import Mapping

from m365guard.config import Policy
from m365guard.errors import GuardError
from m365guard.graph.auth import TokenSource
from m365guard.graph.doctor import DoctorCheck
from m365guard.graph.permissions import TOO_BROAD
from m365guard.graph.rule_write import WRITE_PERMISSION
from m365guard.graph.settings import ConnectionSettings

GRANT = (f"API permissions > Microsoft Graph > Application > {WRITE_PERMISSION}, then Grant"
         " admin consent (or scope it with Exchange RBAC for Applications: README Enforcement)")


def _roles(conn: ConnectionSettings) -> frozenset[str] | GuardError:
    try:
        tokens = TokenSource(conn)
        tokens.token()
    except GuardError as exc:
        return exc
    return tokens.granted_roles


def app_checks(policy: Policy | None, read: ConnectionSettings,
               env: Mapping[str, str]) -> list[DoctorCheck]:
    """One line per app: its client id, whether it can change inbox rules, and the fix."""
    from m365guard.enforce.settings import write_connection

    enforcing = policy is not None and policy.enforce.enabled
    separate = enforcing and policy is not None and policy.enforce.client_id is not None
    roles = _roles(read)
    if isinstance(roles, GuardError):
        return []  # the doctor's own token line already says what is wrong
    writes = WRITE_PERMISSION in roles
    checks = [DoctorCheck(
        "app nightly", not (writes and (separate or not enforcing)),
        f"client {read.client_id}: reads ({len(roles)} application permissions); "
        + ("can change inbox rules" if writes else "cannot change anything"),
        f"remove {WRITE_PERMISSION} from the nightly app" if writes and (separate or
                                                                        not enforcing) else "")]
    if not enforcing or policy is None:
        checks.append(DoctorCheck("app enforcement", True, "enforcement is off ([enforce]"
                                  " enabled = false): no app may change the tenant"))
        return checks
    if not separate:
        checks.append(DoctorCheck(
            "app enforcement", writes, f"the nightly app {read.client_id} also enforces: "
            + ("it can disable inbox rules" if writes else f"it lacks {WRITE_PERMISSION}"),
            "" if writes else GRANT))
        return checks
    try:
        conn = write_connection(policy, env)
    except GuardError as exc:
        return [*checks, DoctorCheck("app enforcement", False,
                                     f"client {policy.enforce.client_id}: settings", exc.message)]
    write_roles = _roles(conn)
    if isinstance(write_roles, GuardError):
        return [*checks, DoctorCheck("app enforcement", False, f"client {conn.client_id}: no"
                                     " token", write_roles.message)]
    can = WRITE_PERMISSION in write_roles
    checks.append(DoctorCheck(
        "app enforcement", can, f"client {conn.client_id}: "
        + ("can disable inbox rules" if can else f"lacks {WRITE_PERMISSION}"),
        "" if can else GRANT))
    checks.extend(DoctorCheck(f"app enforcement {name}", False, "granted but reads message"
                              " bodies", f"remove {name} from the enforcement app")
                  for name in sorted(TOO_BROAD & write_roles))
    return checks

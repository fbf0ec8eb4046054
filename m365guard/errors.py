"""Exit codes and the one error type that reaches the user.

Every user mistake (bad policy, bad credentials, unreachable host, bad input file) is raised as
`GuardError` with a one-line message that says what to fix; the CLI prints that line and exits
with the error's code. Anything else is a bug: it is logged with its traceback and exits 1.
The table is documented in README.md and jobs/README.md; keep them in step.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, stable across releases (schedulers and scripts read them)."""

    CLEAN = 0  # run complete, nothing new of high severity
    INTERNAL_ERROR = 1  # a bug: traceback in the log
    USAGE = 2  # bad command-line usage (Typer/Click)
    NEW_HIGH_FINDINGS = 3  # run complete, new high-severity findings need attention
    PARTIAL_RUN = 4  # some mailboxes or folders could not be read: results are incomplete
    ALREADY_RUNNING = 5  # another run holds the lock
    CONFIG_ERROR = 6  # policies.toml or a setting is invalid
    INPUT_FILE_ERROR = 7  # a roster, export or tenant file cannot be used
    # the state file cannot be trusted: empty, damaged or missing tables, another tenant's; or
    # the clock disagrees with it (earlier than the last run, or far ahead of it)
    STATE_REFUSED = 8
    UNKNOWN_TENANT = 10  # the tenant id / authority is not known to Entra ID
    CLIENT_REJECTED = 11  # unknown client id or wrong client secret
    CERTIFICATE_ERROR = 12  # certificate unreadable, wrong password, expired or not registered
    TLS_ERROR = 13  # TLS verification failed (wrong or missing CA bundle)
    HOST_UNREACHABLE = 14  # the authority or Graph host cannot be reached
    PERMISSION_MISSING = 15  # the token lacks an application permission a check needs
    ENFORCE_REFUSED = 16  # enforcement refused: off, not approved by a second person, changed
    ENFORCE_INCOMPLETE = 17  # some enforcement actions were skipped or failed (each is named)


class GuardError(Exception):
    """A problem the user can fix; `message` is one line naming the setting and the fix."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def config_error(message: str) -> GuardError:
    """Shorthand for the most common user error."""
    return GuardError(message, ExitCode.CONFIG_ERROR)

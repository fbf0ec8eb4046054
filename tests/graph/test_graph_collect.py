"""The collector against the emulator: real msal + msgraph-sdk over HTTPS, compared with truth."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from graph_support import (
    FAST_RETRY,
    FAST_TEAMS,
    assert_same_table,
    cert_conn,
    clock,
    fast_teams,
    secret_conn,
)

from m365guard import tables
from m365guard.emulator import synth
from m365guard.emulator.faults import FaultConfig
from m365guard.emulator.identity import LEAST_PRIVILEGE_ROLES
from m365guard.emulator.resources import Folder, Mailbox, folder_id_for
from m365guard.emulator.server import RunningEmulator, start_in_thread
from m365guard.emulator.state import Tenant
from m365guard.emulator.truth import expected_tables
from m365guard.graph.client import open_session
from m365guard.graph.collect import CollectRequest, CollectResult, collect

FAULTS = fast_teams(FaultConfig(seed=3, error_rate=0.1, reset_rate=0.02,
                                batch_item_throttle_rate=0.1, empty_delta_page_rate=0.1,
                                retry_after_s=(0.05, 0.128)))


def group_names(school: synth.SyntheticSchool) -> tuple[str, ...]:
    return tuple(g["displayName"] for g in school.tenant.get("groups", []))


def night(emulator: RunningEmulator, school: synth.SyntheticSchool, since: dt.datetime,
          delta_links: dict[tuple[str, str], str] | None = None, *, cert: bool = False,
          **options: object) -> CollectResult:
    settings = emulator.settings
    conn = cert_conn(settings) if cert else secret_conn(settings)
    request = CollectRequest(since=since, delta_links=delta_links or {}, **FAST_TEAMS,
                             group_names=group_names(school), page_size=40,
                             audit_poll_seconds=0.0, **options)  # type: ignore[arg-type]
    with open_session(conn, FAST_RETRY) as session:
        return collect(session, request)


def assert_matches_truth(result: CollectResult, school: synth.SyntheticSchool, now: dt.datetime,
                         since: dt.datetime) -> None:
    want = expected_tables(school.tenant, now=now, since=since)
    for name in tables.COLLECTED:
        if name != "coverage":
            expected = want[name]
            if name == "mailbox_forwarding":  # the audit query covers [since, now] only
                expected = expected[expected["observed_at"] >= since]
            assert_same_table(name, result.collected[name], expected)


def test_first_night_with_faults_equals_truth(emulator: RunningEmulator,
                                              school: synth.SyntheticSchool) -> None:
    emulator.set_faults(FAULTS)
    now = clock(school)
    result = night(emulator, school, now - dt.timedelta(days=30))
    assert_matches_truth(result, school, now, now - dt.timedelta(days=30))
    coverage = result.collected["coverage"]
    assert set(coverage["status"]) <= {"ok", "no_mailbox"}, result.errors
    assert result.errors == []
    users = len(school.tenant["users"])
    mail_rows = coverage[coverage["folder"].isin(["sentitems", "inbox"])]
    assert len(mail_rows) == 2 * users
    sent = mail_rows[mail_rows["folder"] == "sentitems"]  # received mail is a listing
    assert len(result.delta_links) == (sent["status"] == "ok").sum()


def test_certificate_delta_second_night_and_request_budget(
        emulator: RunningEmulator, school: synth.SyntheticSchool) -> None:
    first_now = clock(school)
    since = first_now - dt.timedelta(days=30)
    first = night(emulator, school, since, cert=True)
    assert_matches_truth(first, school, first_now, since)

    second_now = first_now + dt.timedelta(days=1)
    emulator.tenant.advance_to(second_now)
    second = night(emulator, school, first_now, first.delta_links, cert=True)
    assert_matches_truth(second, school, second_now, first_now)
    assert len(second.collected["messages"]) > 0  # future_days planted new mail

    # a third night with no new mail: only the batched delta calls (plus the directory lists)
    third = night(emulator, school, second_now, second.delta_links, cert=True,
                  include_rules=False, include_chats=False, include_audit=False)
    assert len(third.collected["messages"]) == 0
    users = len(school.tenant["users"])
    assert third.batch_requests == math.ceil(2 * users / 20)  # 20 delta calls per $batch
    assert third.batch_requests / users <= 0.11


def test_users_without_a_mailbox_are_asked_weekly_and_lose_no_mail(
        emulator: RunningEmulator, school: synth.SyntheticSchool) -> None:
    mail_only = {"include_rules": False, "include_chats": False, "include_audit": False}
    first_now = clock(school)
    first = night(emulator, school, first_now - dt.timedelta(days=30), **mail_only)
    coverage = first.collected["coverage"]
    without = sorted(set(coverage[coverage["status"] == "no_mailbox"]["mailbox"]))
    assert without, "the school has accounts without an Exchange mailbox"

    # a quiet night: those users are not asked, and coverage says so
    quiet = night(emulator, school, first_now, first.delta_links, until=first_now,
                  without_mailbox=dict.fromkeys(without, first_now), **mail_only)
    users = len(school.tenant["users"])
    assert quiet.batch_requests == math.ceil(2 * (users - len(without)) / 20)
    assert quiet.batch_requests / users <= 0.1
    skipped = quiet.collected["coverage"].query("mailbox in @without")
    assert set(skipped["status"]) == {"no_mailbox"}
    assert skipped["reason"].str.startswith(tables.NOT_ASKED).all()

    # one of them gets a mailbox and sends mail before the weekly check: it is still read
    upn = without[0]
    user_id = next(u["id"] for u in school.tenant["users"] if u["userPrincipalName"] == upn)
    sent_at = first_now + dt.timedelta(days=2)
    stamp = sent_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    message = {"id": "AAMkNEWMAILBOX1", "internetMessageId": "<new1@example>",
               "conversationId": "AAQkNEW1", "subject": "Hello from my new mailbox",
               "sentDateTime": stamp, "receivedDateTime": stamp, "hasAttachments": False,
               "from": {"emailAddress": {"name": "New", "address": upn}},
               "toRecipients": [{"emailAddress": {"name": "P", "address": "p@gmail.com"}}],
               "ccRecipients": [], "bccRecipients": []}
    tenant = emulator.tenant
    tenant.has_mailbox[user_id] = True
    tenant.mailboxes[user_id] = Mailbox(user_id, {
        name: Folder(folder_id_for(user_id, name), name, [message] if name == "sentitems" else [])
        for name in ("sentitems", "inbox")}, [], {})
    week_later = first_now + dt.timedelta(days=8)
    tenant.advance_to(week_later)
    asked = night(emulator, school, week_later - dt.timedelta(days=1), quiet.delta_links,
                  until=week_later, without_mailbox=dict.fromkeys(without, first_now),
                  **mail_only)
    theirs = asked.collected["messages"].query("mailbox == @upn")
    assert list(theirs["message_id"]) == ["AAMkNEWMAILBOX1"]
    mine = asked.collected["coverage"].query("mailbox == @upn")
    assert set(mine["status"]) == {"ok"}


def test_expired_delta_link_resyncs_the_folder(emulator: RunningEmulator,
                                               school: synth.SyntheticSchool) -> None:
    now = clock(school)
    since = now - dt.timedelta(days=30)
    first = night(emulator, school, since, include_rules=False, include_chats=False,
                  include_audit=False)
    emulator.tenant.expire_delta_tokens()
    second = night(emulator, school, since, first.delta_links, include_rules=False,
                   include_chats=False, include_audit=False)
    coverage = second.collected["coverage"]
    sent = coverage[coverage["folder"] == "sentitems"]  # received mail has no delta link
    assert set(sent["status"]) == {"resynced", "no_mailbox"}
    assert_same_table("messages", second.collected["messages"],
                      expected_tables(school.tenant, now=now, since=since)["messages"])


def test_missing_permission_is_recorded_and_the_run_goes_on(
        school: synth.SyntheticSchool, tmp_path: Path) -> None:
    roles = [r for r in LEAST_PRIVILEGE_ROLES if r != "MailboxSettings.Read"]
    with start_in_thread(Tenant.from_document(school.tenant), workdir=tmp_path,
                         roles=roles) as emulator:
        now = clock(school)
        result = night(emulator, school, now - dt.timedelta(days=30), include_chats=False,
                       include_audit=False)
    coverage = result.collected["coverage"]
    rules = coverage[coverage["folder"] == "messageRules"]
    assert set(rules["status"]) == {"failed"}
    assert rules["reason"].str.contains("MailboxSettings.Read").all()
    assert len(result.collected["rule_forwards"]) == 0
    assert_same_table("messages", result.collected["messages"],
                      expected_tables(school.tenant, now=now,
                                      since=now - dt.timedelta(days=30))["messages"])


@pytest.mark.parametrize("bad_cert", ["missing", "garbage"])
def test_collect_never_starts_with_a_bad_certificate(emulator: RunningEmulator, tmp_path: Path,
                                                     bad_cert: str) -> None:
    from m365guard.errors import ExitCode, GuardError
    path = tmp_path / "cert.pem"
    if bad_cert == "garbage":
        path.write_text("not a certificate")
    with pytest.raises(GuardError) as caught:
        open_session(cert_conn(emulator.settings, certificate_path=path))
    assert caught.value.exit_code == ExitCode.CERTIFICATE_ERROR


def test_each_stream_reads_from_its_own_mark_and_resyncs_from_it(
        emulator: RunningEmulator, school: synth.SyntheticSchool) -> None:
    """Issue 18: a folder not read in full one night is read from its own mark the next
    (not from the global window start), the received-mail listing and a 410 resync of Sent
    Items alike."""
    mail_only = {"include_rules": False, "include_chats": False}
    now = clock(school)
    month_ago = now - dt.timedelta(days=30)
    first = night(emulator, school, month_ago, until=now, **mail_only)
    assert first.read_marks[("", "auditLog")] == now
    truth = expected_tables(school.tenant, now=now, since=month_ago)["messages"]
    upn = truth[truth["folder"] == "inbox"]["mailbox"].value_counts().index[0]
    assert first.read_marks[(upn.lower(), "inbox")] == now
    # the next night: this mailbox last read in full a month ago; every delta link expired
    emulator.tenant.expire_delta_tokens()
    marks = {(upn.lower(), "inbox"): month_ago, (upn.lower(), "sentitems"): month_ago}
    second = night(emulator, school, now, first.delta_links, until=now, read_marks=marks,
                   **mail_only)
    got = second.collected["messages"]
    theirs = truth[truth["mailbox"] == upn]
    assert_same_table("messages", got, theirs)  # everyone else: nothing since `now`
    coverage = second.collected["coverage"].set_index(["mailbox", "folder"])
    assert coverage.loc[(upn, "sentitems"), "status"] == "resynced"
    assert coverage.loc[(upn, "inbox"), "status"] == "ok"
    assert second.read_marks[(upn.lower(), "inbox")] == now

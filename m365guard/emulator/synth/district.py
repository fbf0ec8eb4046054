"""A district: 100 schools of 1,000 mailboxes in one tenant, its mail generated lazily.

`district(seed)` builds the directory only (100,000 users, their education roles and
licences, the rosters): a few hundred MB in the emulator, never the mail. `district_tenant`
serves it: each school's mail (a month, most pupils sending little: ~19 message copies a
mailbox, ~1.9 million in all) is generated from (seed, school) the first time one of its
mailboxes is asked for, and only the last few schools' mail is kept (`LazyMail`), so a
night that reads the tenant in directory order holds one or two schools at a time. The same
seed always gives the same people, the same mail and the same Graph ids.

Each school also does what the rules look for, now and then: a teacher writes to three
parents in To (AUP-BCC), a member of staff sends work to their own personal address
(AUP-PERSONAL-EMAIL, the address on the staff roster). No ground truth is written: the
district is for scale, the other sizes are for accuracy.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any

from m365guard.emulator.resources import (
    FOLDER_DATE_FIELD,
    Folder,
    Mailbox,
    Message,
    mailbox_folders,
)
from m365guard.emulator.state import Tenant
from m365guard.emulator.synth import SyntheticSchool
from m365guard.emulator.synth._base import (
    CLOCK_START,
    DAY,
    SKUS,
    WEBMAIL,
    Builder,
    Json,
    Person,
    Profile,
    iso,
    mailbox_settings,
)
from m365guard.emulator.synth._traffic import (
    INTERNAL_SUBJECTS,
    PARENT_SUBJECTS,
    PUPIL_SUBJECTS,
    count,
)

SIZE = "district"
SCHOOLS = 100
STAFF, PUPILS = 120, 880  # per school: 1,000 mailboxes
DOMAIN = "lindseyvalley.org.uk"
PUPIL_DOMAIN = "pupils." + DOMAIN
PROFILE = Profile("Lindsey Valley Schools", DOMAIN, PUPIL_DOMAIN, PUPILS, STAFF, 0, 0,
                  ("Year 7", "Year 8", "Year 9", "Year 10", "Year 11"), 1.5, 0.4, 0.0, 0.02, 0)
CLASS_MAIL_PER_DAY = 0.2  # a teacher's message to a class (To: 25 pupils)
SLIPS_PER_DAY = 0.005  # a member of staff's slip, per weekday (a BCC failure, or own address)
KEEP_SCHOOLS = 4  # schools whose generated mail is kept (the collector reads in order)


def _school(seed: int, number: int, history_days: int) -> tuple[
        Builder, list[Person], list[Person], list[Person]]:
    """School `number`'s people (staff with a mailbox, teachers among them, pupils), in a
    builder whose generator then goes on to the school's mail."""
    b = Builder(PROFILE, random.Random(f"{seed}:{number}"), history_days, 0)
    b.tenant_id = str(uuid.UUID(int=random.Random(seed).getrandbits(128)))
    staff, teachers, pupils = [], [], []
    for index in range(STAFF):
        first, last = b.rng.choice(_FIRST), b.rng.choice(_LAST)
        teacher = index % 3 != 2
        person = Person(b.guid(), f"{first[0]}{last}.{number:03d}{index:03d}@{DOMAIN}".lower(),
                        f"{first} {last}", "staff", index % 40 != 39)
        person.personal = (person.name, f"{first}.{last}{number:03d}{index:03d}@"
                           f"{b.rng.choice(WEBMAIL)}".lower())
        b.add_user(person, skus=("M365EDU_A3_FACULTY" if teacher else "STANDARDWOFFPACK_FACULTY",),
                   job_title="Teacher" if teacher else "Teaching Assistant")
        if person.has_mailbox:
            b.education_users.append({"id": person.user_id, "displayName": person.name,
                                      "primaryRole": "teacher" if teacher else "faculty"})
            staff.append(person)
            if teacher:
                teachers.append(person)
    for index in range(PUPILS):
        first, last = b.rng.choice(_FIRST), b.rng.choice(_LAST)
        person = Person(b.guid(), f"{first}.{last}.{number:03d}{index:03d}@{PUPIL_DOMAIN}"
                        .lower(), f"{first} {last}", "pupil", True,
                        year=PROFILE.year_groups[index % len(PROFILE.year_groups)])
        b.add_user(person, skus=("M365EDU_A3_STUUSEBNFT",))
        b.education_users.append({"id": person.user_id, "displayName": person.name,
                                  "primaryRole": "student"})
        pupils.append(person)
    return b, staff, teachers, pupils


_FIRST = ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Leo", "Ivy",
          "Jack", "Freya", "Arthur", "Lily", "Oscar", "Grace", "Theo", "Ella", "Alfie", "Rosie",
          "Jane", "Paul", "Sarah", "Mark", "Helen", "David", "Claire", "Simon", "Emma", "Ian")
_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
         "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
         "Khan", "Clarke", "Jackson", "Wood", "Harris", "Edwards", "Turner", "Martin", "Cooper")


def _mail(b: Builder, staff: list[Person], teachers: list[Person], pupils: list[Person]
          ) -> None:
    """A month of one school's mail, weekdays only, through Builder.deliver."""
    years = {year: [p for p in pupils if p.year == year] for year in PROFILE.year_groups}
    for day in range(b.history_days):
        midnight = b.window_start - 2 * 3600 + day * DAY
        if time.gmtime(midnight + 12 * 3600).tm_wday >= 5:
            continue
        for person in staff:
            for _ in range(count(b, PROFILE.staff_internal_per_day)):
                to = b.rng.sample(staff, b.rng.choice((1, 1, 2, 3)))
                b.deliver(person.address, [p.address for p in to if p is not person] or
                          [staff[0].address], subject=b.rng.choice(INTERNAL_SUBJECTS),
                          at=b.working_time(day))
            for _ in range(count(b, PROFILE.staff_external_per_day)):
                child = b.rng.choice(pupils)
                parent = (f"Parent of {child.name}", f"{child.name.split()[0].lower()}.family"
                          f"{b.rng.randrange(1000)}@{b.rng.choice(WEBMAIL)}")
                subject = b.rng.choice(PARENT_SUBJECTS).format(child=child.name.split()[0])
                at = b.working_time(day)
                b.deliver(parent, [person.address], subject=subject, at=at)
                b.deliver(person.address, [parent], subject="RE: " + subject, at=at + 1800)
            if b.rng.random() < SLIPS_PER_DAY:
                _slip(b, person, pupils, day)
        for teacher in teachers:
            if b.rng.random() < CLASS_MAIL_PER_DAY:
                year = years[b.rng.choice(PROFILE.year_groups)]
                b.deliver(teacher.address, [p.address for p in b.rng.sample(year, 25)],
                          subject="Homework for this week", at=b.working_time(day))
        for pupil in pupils:
            if b.rng.random() < PROFILE.pupil_mail_per_day:
                b.deliver(pupil.address, [b.rng.choice(teachers).address],
                          subject=b.rng.choice(PUPIL_SUBJECTS), at=b.working_time(day))


def _slip(b: Builder, person: Person, pupils: list[Person], day: int) -> None:
    """What the rules are for: parents shown to each other, or work sent home."""
    at = b.working_time(day)
    if b.rng.random() < 0.5 and person.personal is not None:
        b.deliver(person.address, [person.personal], subject="Marking to finish at home", at=at)
        return
    parents = [(f"Parent of {p.name}", f"{p.name.split()[0].lower()}.home{b.rng.randrange(999)}"
                f"@{b.rng.choice(WEBMAIL)}") for p in b.rng.sample(pupils, 3)]
    b.deliver(person.address, parents, subject="Trip reply slips", at=at)


def district(seed: int, *, schools: int = SCHOOLS, history_days: int = 30) -> SyntheticSchool:
    """The district's directory, policy hints and rosters (no mail: see district_tenant)."""
    users: list[Json] = []
    education: list[Json] = []
    roster: list[tuple[str, str]] = []
    tenant_id = ""
    for number in range(schools):
        b, staff, _, _ = _school(seed, number, history_days)
        tenant_id = b.tenant_id
        users.extend(b.users)
        education.extend(b.education_users)
        roster.extend((p.upn, p.personal[1]) for p in staff if p.personal is not None)
    onmicrosoft = DOMAIN.split(".")[0] + ".onmicrosoft.com"
    tenant: Json = {
        "formatVersion": 1,
        "tenant": {"id": tenant_id, "displayName": PROFILE.name,
                   "verifiedDomains": [DOMAIN, PUPIL_DOMAIN, onmicrosoft]},
        "clock": {"start": iso(CLOCK_START)},
        "x-policyHints": {
            "schoolDomains": [DOMAIN, PUPIL_DOMAIN, onmicrosoft], "pupilDomains": [PUPIL_DOMAIN],
            "partnerDomains": ["nhs.net", "lincolnshire.gov.uk"], "staffGroups": [],
            "pupilGroups": [], "governorGroups": [], "sharedMailboxes": [],
        },
        "subscribedSkus": [{"skuId": sku_id, "skuPartNumber": part, "appliesTo": "User",
                            "capabilityStatus": "Enabled", "id": f"{tenant_id}_{sku_id}"}
                           for part, sku_id in SKUS.items()],
        "users": users, "groups": [], "educationUsers": education, "mailboxes": {},
        "chats": [], "auditRecords": [],
        "x-district": {"seed": seed, "schools": schools, "historyDays": history_days},
    }
    return SyntheticSchool(size=SIZE, seed=seed, tenant=tenant, truth=[], staff_roster=roster)


class LazyMail(dict[str, Mailbox]):
    """Tenant.mailboxes for a district: a school's mailboxes generated when one is asked for,
    the last KEEP_SCHOOLS schools kept."""

    def __init__(self, seed: int, history_days: int, school_of: dict[str, int]) -> None:
        super().__init__()
        self.seed, self.history_days, self.school_of = seed, history_days, school_of
        self.kept: OrderedDict[int, dict[str, Mailbox]] = OrderedDict()
        self.generated = 0  # schools generated so far (a school read twice counts twice)

    def get(self, user_id: str, default: Any = None) -> Any:
        number = self.school_of.get(user_id)
        if number is None:
            return default
        boxes = self.kept.get(number)
        if boxes is None:
            boxes = self.kept[number] = self._generate(number)
            while len(self.kept) > KEEP_SCHOOLS:
                self.kept.popitem(last=False)
        self.kept.move_to_end(number)
        return boxes.get(user_id, default)

    def setdefault(self, user_id: str, default: Any = None) -> Any:
        return self.get(user_id, default)

    def _generate(self, number: int) -> dict[str, Mailbox]:
        b, staff, teachers, pupils = _school(self.seed, number, self.history_days)
        _mail(b, staff, teachers, pupils)
        self.generated += 1
        epochs: dict[str, float] = {}
        boxes = {}
        for user_id, box in b.mailboxes.items():
            folders = mailbox_folders(user_id, {})  # every well-known folder, empty
            for name in FOLDER_DATE_FIELD:
                _fill(folders[name], box.get(name, []), epochs)
            boxes[user_id] = Mailbox(user_id, folders, [], mailbox_settings("user"))
        return boxes


def _fill(folder: Folder, raws: list[Json], epochs: dict[str, float]) -> None:
    """An empty Folder given generated messages, without re-reading what the generator knows
    (no bookkeeping keys, no deletions; two times per message): half the cost of Folder()."""
    visible = FOLDER_DATE_FIELD[folder.name]
    for raw in raws:
        received, sent = raw["receivedDateTime"], raw["sentDateTime"]
        for stamp in (received, sent):
            if stamp not in epochs:
                epochs[stamp] = datetime.fromisoformat(stamp).timestamp()
        dates = {"sentDateTime": epochs[sent], "receivedDateTime": epochs[received],
                 "createdDateTime": epochs[received], "lastModifiedDateTime": epochs[received]}
        raw["parentFolderId"] = folder.id
        folder.messages.append(Message(raw, dates, dates[visible], None, folder.window))
    folder.by_id = {message.id: message for message in folder.messages}


def district_tenant(school: SyntheticSchool) -> Tenant:
    """The emulator's tenant for a district school, its mail generated as it is read."""
    tenant = Tenant.from_document(school.tenant)
    plan = school.tenant["x-district"]
    per_school = STAFF + PUPILS
    school_of = {user["id"]: index // per_school
                 for index, user in enumerate(school.tenant["users"])}
    tenant.mailboxes = LazyMail(plan["seed"], plan["historyDays"], school_of)
    return tenant

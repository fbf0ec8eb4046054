"""Ordinary school life: mail, Teams chats, harmless inbox rules and admin audit records.

Nothing here may break a rule: staff mail outside the school goes to one external address at a
time, attachments go to personal webmail only for parents on the roster, newsletters use Bcc.
The few near misses worth labelling are labelled where they are made.
"""

from __future__ import annotations

import time

from m365guard.emulator.synth._base import (
    DAY,
    OTHER_EXTERNAL,
    PARTNERS,
    Address,
    Builder,
    Json,
    Person,
    iso,
)

INTERNAL_SUBJECTS = (
    "Cover for period 3", "Staff meeting agenda", "Trip risk assessment", "Reading records",
    "Phonics groups", "Lunch duty rota", "Assessment data", "Parents' evening slots",
    "SEN review notes", "Class list", "INSET day plan", "Safeguarding training",
    "Resources for next week", "Behaviour log", "Playground rota", "Book scrutiny",
)
PARENT_SUBJECTS = (
    "{child} absence today", "{child} reading book", "Question about the trip", "Dinner money",
    "{child} pick-up arrangements", "Homework question", "Uniform", "After school club",
)
EXTERNAL_SUBJECTS = (
    "Invoice {n}", "Booking confirmation {n}", "Order {n}", "Coach booking", "Class photos",
    "Referral update", "Early help meeting", "Admissions query", "Training course {n}",
)
PUPIL_SUBJECTS = ("Homework", "My project", "Question about the test", "Science work", "Reading")
CHAT_TOPICS = ("Year team", "Trip planning", "Sports day", "Christmas play", "Phonics leads",
               "Maths working group", "Wellbeing", "Site and premises")
BCC_CASE, RULE2 = "2-near-miss", "multi-recipient-without-bcc"
PERSONAL_RULE, PUPIL_RULE = "school-business-personal-email", "pupil-contact-non-school-channel"


def count(b: Builder, rate: float) -> int:
    """An integer whose mean is `rate`."""
    whole = int(rate)
    return whole + (b.rng.random() < rate - whole)


def contacts(b: Builder, domains: tuple[str, ...], n: int) -> list[Address]:
    """Named people at organisations outside the school."""
    out = []
    for index in range(n):
        first, last = b.unique_name()
        domain = domains[index % len(domains)]
        out.append((f"{first} {last}", b.local_part(f"{first}.{last}@{domain}".lower())))
    return out


def build_traffic(b: Builder) -> None:
    """Mail for every day of the window, then chats, inbox rules and audit noise."""
    staff = [p for p in b.people if p.kind == "staff" and p.has_mailbox]
    pupils = [p for p in b.people if p.kind == "pupil" and p.has_mailbox]
    teachers: dict[str, list[Person]] = {}
    for person in staff:
        if person.year:
            teachers.setdefault(person.year, []).append(person)
    partners = contacts(b, PARTNERS, 12)
    suppliers = contacts(b, OTHER_EXTERNAL, 20)
    head, office = staff[0], b.by_address[f"office@{b.profile.domain}"]
    rostered = [(par.name, par.address) for par in b.parents if par.rostered]
    days = b.history_days + b.future_days
    for day in range(days):
        midnight = b.window_start - 2 * 3600 + day * DAY
        weekday = time.gmtime(midnight).tm_wday
        factor = 1.0 if weekday < 5 else 0.08
        active = [s for s in staff if s.active_until > midnight + DAY]
        _staff_day(b, day, active, partners, suppliers, factor)
        _parent_day(b, day, teachers, office, factor)
        _pupil_day(b, day, pupils, teachers, factor)
        if weekday == 4:
            at = b.working_time(day)
            imid = b.deliver(head.address, [office.address], bcc=rostered, attachments=True,
                             subject=f"Newsletter {time.strftime('%d %B', time.gmtime(at))}", at=at)
            b.label(BCC_CASE, RULE2, "none", "message", imid, head.upn, None,
                    "Weekly newsletter to parents with every parent in Bcc.", visible_from=at)
            b.label("4-near-miss", PERSONAL_RULE, "none", "message", imid, head.upn, None,
                    "Newsletter with an attachment to rostered parents' webmail.", visible_from=at)
        if weekday in (0, 3):
            at = b.working_time(day)
            imid = b.deliver(head.address, [("All Staff", f"allstaff@{b.profile.domain}")],
                             subject="Staff briefing", at=at)
            b.label(BCC_CASE, RULE2, "none", "message", imid, head.upn, None,
                    "Internal all-staff briefing with the group in To.", visible_from=at)
        if day % 14 == 5:
            clerk = staff[1]
            b.deliver(clerk.address, [("Governors", f"governors@{b.profile.domain}")],
                      subject="Governing body papers", attachments=True, at=b.working_time(day))
    build_chats(b, staff, pupils, teachers, partners)
    build_rules(b, staff)


def _staff_day(b: Builder, day: int, active: list[Person], partners: list[Address],
               suppliers: list[Address], factor: float) -> None:
    p = b.profile
    for person in active:
        for _ in range(count(b, p.staff_internal_per_day * factor)):
            others = b.rng.sample(active, min(len(active), b.rng.choice((1, 1, 1, 2, 3)) + 1))
            to = [o.address for o in others if o is not person][:3]
            cc = [active[b.rng.randrange(len(active))].address] if b.rng.random() < 0.2 else []
            subject = b.rng.choice(INTERNAL_SUBJECTS)
            at = b.working_time(day)
            deleted = at + b.rng.randrange(1, 5) * DAY if b.rng.random() < 0.01 else None
            conversation = b.graph_id("AAQkA", 30)
            b.deliver(person.address, to, cc=[c for c in cc if c not in to and c != person.address],
                      subject=subject, at=at, attachments=b.rng.random() < 0.25,
                      conversation_id=conversation, deleted_at=deleted)
            if to and b.rng.random() < 0.3:
                replier = b.by_address[to[0][1]]
                b.deliver(replier.address, [person.address], subject=f"RE: {subject}",
                          at=at + b.rng.randrange(600, 7200), conversation_id=conversation)
        for _ in range(count(b, p.staff_external_per_day * factor)):
            kind = b.rng.random()
            contact = b.rng.choice(partners if kind < 0.5 else suppliers)
            subject = b.rng.choice(EXTERNAL_SUBJECTS).format(n=b.rng.randrange(1000, 99999))
            at = b.working_time(day)
            if kind < 0.25 or 0.5 <= kind < 0.7:  # outbound: one external in To
                colleague = b.rng.choice(active)
                cc = [colleague.address] if colleague is not person and kind < 0.25 else []
                b.deliver(person.address, [contact], cc=cc, subject=subject, at=at,
                          attachments=kind < 0.25 and b.rng.random() < 0.3)
            else:  # inbound
                b.deliver(contact, [person.address], subject=subject, at=at,
                          attachments=b.rng.random() < 0.3)


def _parent_day(b: Builder, day: int, teachers: dict[str, list[Person]], office: Person,
                factor: float) -> None:
    """A parent writes (often from webmail); the class teacher replies to that one address."""
    rate = b.profile.pupils / 10 * b.profile.parent_threads_per_day * factor
    for _ in range(count(b, rate)):
        parent = b.rng.choice(b.parents)
        child = b.by_address[parent.pupil_upns[0]]
        subject = b.rng.choice(PARENT_SUBJECTS).format(child=child.name.split(" ")[0])
        at = b.working_time(day)
        candidates = [t for t in teachers.get(child.year, []) if t.active_until > at + DAY]
        if not candidates or b.rng.random() < 0.25:
            b.deliver((parent.name, parent.address), [office.address], subject=subject, at=at)
            continue
        teacher = b.rng.choice(candidates)
        conversation = b.graph_id("AAQkA", 30)
        b.deliver((parent.name, parent.address), [teacher.address], subject=subject, at=at,
                  conversation_id=conversation)
        b.deliver(teacher.address, [(parent.name, parent.address)], subject=f"RE: {subject}",
                  at=at + b.rng.randrange(900, 4 * 3600), conversation_id=conversation,
                  attachments=parent.rostered and b.rng.random() < 0.15)


def _pupil_day(b: Builder, day: int, pupils: list[Person], teachers: dict[str, list[Person]],
               factor: float) -> None:
    """Pupils' school mail: to their teachers and classmates, and teachers to small groups."""
    if not pupils:
        return
    for _ in range(count(b, len(pupils) * b.profile.pupil_mail_per_day * factor)):
        pupil = b.rng.choice(pupils)
        year_teachers = [t for t in teachers.get(pupil.year, [])
                         if t.active_until > b.window_start + (day + 1) * DAY]
        subject = b.rng.choice(PUPIL_SUBJECTS)
        at = b.working_time(day)
        draw = b.rng.random()
        if year_teachers and draw < 0.5:
            b.deliver(pupil.address, [b.rng.choice(year_teachers).address], subject=subject, at=at)
        elif year_teachers and draw < 0.7:
            group = [p.address for p in b.rng.sample(pupils, 3)]
            b.deliver(b.rng.choice(year_teachers).address, group, subject=subject, at=at,
                      attachments=True)
        else:
            b.deliver(pupil.address, [b.rng.choice(pupils).address], subject=subject, at=at)


# -- Teams chats ----------------------------------------------------------------------------

def member(b: Builder, name: str, address: str, user_id: str, *, tenant_id: str | None = None,
           roles: tuple[str, ...] = ("owner",)) -> Json:
    """A Graph aadUserConversationMember."""
    return {"@odata.type": "#microsoft.graph.aadUserConversationMember",
            "id": b.graph_id("MCMjMSMj", 36), "roles": list(roles), "displayName": name,
            "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z", "userId": user_id,
            "email": address, "tenantId": tenant_id or b.tenant_id}


def person_member(b: Builder, person: Person) -> Json:
    return member(b, person.name, person.upn, person.user_id)


def add_chat(b: Builder, chat_type: str, topic: str | None, members: list[Json], at: int) -> Json:
    """A Graph chat with its members; hidden until `at` when it starts in the future part."""
    chat_id = (f"19:{members[0]['userId']}_{members[1]['userId']}@unq.gbl.spaces"
               if chat_type == "oneOnOne" else f"19:{b.rng.getrandbits(128):032x}@thread.v2")
    chat: Json = {"id": chat_id, "topic": topic, "createdDateTime": iso(at),
                  "lastUpdatedDateTime": iso(at + b.rng.randrange(60, 3 * DAY)),
                  "chatType": chat_type, "tenantId": b.tenant_id,
                  "webUrl": f"https://teams.microsoft.com/l/chat/{chat_id}/0?tenantId={b.tenant_id}",
                  "members": members}
    if at > b.window_start + b.history_days * DAY:
        chat["x-visibleFrom"] = iso(at)
    b.chats.append(chat)
    return chat


def build_chats(b: Builder, staff: list[Person], pupils: list[Person],
                teachers: dict[str, list[Person]], partners: list[Address]) -> None:
    """Staff group and one-to-one chats, class chats, and a staff chat with a partner guest."""
    current = [s for s in staff if s.active_until > b.window_end]
    days = b.history_days + b.future_days
    for _ in range(max(2, len(current) // 6)):
        team = b.rng.sample(current, min(len(current), b.rng.randrange(3, 9)))
        add_chat(b, "group", b.rng.choice(CHAT_TOPICS), [person_member(b, p) for p in team],
                 b.working_time(b.rng.randrange(days)))
    for _ in range(max(2, len(current) // 3)):
        pair = b.rng.sample(current, 2)
        add_chat(b, "oneOnOne", None, [person_member(b, p) for p in pair],
                 b.working_time(b.rng.randrange(days)))
    pupils_of = {year: [p for p in pupils if p.year == year] for year in teachers}
    for index, (year, year_teachers) in enumerate(sorted(teachers.items())):
        if len(pupils_of.get(year, [])) < 4:
            continue
        teacher = b.rng.choice([t for t in year_teachers if t in current] or current)
        size = min(len(pupils_of[year]), b.rng.randrange(4, 12))
        class_pupils = b.rng.sample(pupils_of[year], size)
        at = b.working_time(b.rng.randrange(days))
        members = [person_member(b, teacher), *[person_member(b, p) for p in class_pupils]]
        chat = add_chat(b, "group", f"{year} homework help", members, at)
        if index < 2:
            b.label("1-near-miss", PUPIL_RULE, "none", "chat", chat["id"], teacher.upn, None,
                    "Class chat: a teacher and pupils, all school accounts.", visible_from=at)
            duo = [person_member(b, teacher), person_member(b, class_pupils[0])]
            one_to_one = add_chat(b, "oneOnOne", None, duo, at)
            b.label("1-near-miss", PUPIL_RULE, "none", "chat", one_to_one["id"], teacher.upn,
                    None,
                    "One-to-one Teams chat of a teacher and a pupil: a finding (medium) only "
                    "with flag_one_to_one_chats.", visible_from=at)
    name, address = partners[0]
    at = b.working_time(b.rng.randrange(days))
    team = b.rng.sample(current, 3)
    guest = member(b, name, address, b.guid(), tenant_id=b.guid(), roles=("guest",))
    chat = add_chat(b, "group", "Early help planning",
                    [*[person_member(b, p) for p in team], guest], at)
    b.label("1-near-miss", PUPIL_RULE, "none", "chat", chat["id"], team[0].upn, None,
            "Staff chat with a guest from a partner organisation and no pupil.", visible_from=at)


# -- inbox rules and the audit log -------------------------------------------------------------

def audit_record(b: Builder, operation: str, actor: str, mailbox: str, at: int,
                 parameters: list[tuple[str, str]], *, item: bool = False) -> Json:
    """A Graph security.auditLogRecord for an Exchange admin cmdlet or a mailbox operation."""
    record_id = b.guid()
    data: Json = {
        "@odata.type": ("#microsoft.graph.security.exchangeMailboxAuditRecord" if item
                        else "#microsoft.graph.security.exchangeAdminAuditRecord"),
        "CreationTime": iso(at)[:-1], "Id": record_id, "Operation": operation,
        "OrganizationId": b.tenant_id, "RecordType": 2 if item else 1, "ResultStatus": "True",
        "UserKey": actor, "UserType": 0, "Version": 1, "Workload": "Exchange", "ObjectId": mailbox,
        "UserId": actor, "ExternalAccess": False,
        "OrganizationName": b.profile.domain.split(".")[0] + ".onmicrosoft.com",
        ("OperationProperties" if item else "Parameters"):
            [{"Name": name, "Value": value} for name, value in parameters],
    }
    record: Json = {
        "id": record_id, "createdDateTime": iso(at),
        "auditLogRecordType": "exchangeItem" if item else "exchangeAdmin",
        "operation": operation, "organizationId": b.tenant_id, "userType": "regular",
        "userId": actor, "service": "Exchange", "objectId": mailbox, "userPrincipalName": actor,
        "clientIp": f"81.{b.rng.randrange(2, 250)}.{b.rng.randrange(256)}.{b.rng.randrange(256)}",
        "administrativeUnits": [], "auditData": data,
    }
    b.audit.append(record)
    return record


def inbox_rule(b: Builder, person: Person, name: str, actions: Json, *, enabled: bool = True,
               conditions: Json | None = None) -> Json:
    """A Graph messageRule in the person's inbox (sequence follows the existing rules)."""
    rules = b.mailboxes[person.user_id]["messageRules"]
    rule: Json = {"id": b.rule_id(), "displayName": name,
                  "sequence": len(rules) + 1, "isEnabled": enabled, "hasError": False,
                  "isReadOnly": False, "conditions": conditions or {}, "actions": actions}
    rules.append(rule)
    return rule


def build_rules(b: Builder, staff: list[Person]) -> None:
    """Harmless inbox rules (move, mark read, categorise) and admin noise in the audit log."""
    for person in staff:
        if b.rng.random() > 0.4:
            continue
        folder = b.graph_id("AAMkA", 33)
        if person.user_id in b.mailboxes:  # the folder the rule files into, under the Inbox
            b.mailboxes[person.user_id].setdefault("folders", []).append(
                {"id": folder, "displayName": "Newsletters", "parentFolderId": "inbox",
                 "messages": []})
        inbox_rule(b, person, "Newsletters", {"moveToFolder": folder, "stopProcessingRules": True},
                   conditions={"senderContains": ["newsletter", "noreply"]})
        if b.rng.random() < 0.3:
            inbox_rule(b, person, "Invoices", {"assignCategories": ["Finance"], "markAsRead": True},
                       conditions={"subjectContains": ["Invoice"]})
        at = b.window_start + b.rng.randrange(b.history_days * DAY)
        if b.rng.random() < 0.5:
            audit_record(b, "New-InboxRule", person.upn, person.upn, at,
                         [("Mailbox", person.upn), ("Name", "Newsletters"),
                          ("MoveToFolder", "Newsletters"), ("StopProcessingRules", "True")])
        else:
            audit_record(b, "UpdateInboxRules", person.upn, person.upn, at,
                         [("RuleName", "Newsletters"), ("RuleActions", "MoveToFolder"),
                          ("RuleOperation", "AddMailboxRule")], item=True)
    admin = staff[1].upn
    for person in b.rng.sample(staff, min(len(staff), 6)):
        audit_record(b, "Set-Mailbox", admin, person.upn,
                     b.window_start + b.rng.randrange(b.history_days * DAY),
                     [("Identity", person.upn), ("RetainDeletedItemsFor", "30.00:00:00")])

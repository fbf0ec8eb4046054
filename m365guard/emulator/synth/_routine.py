"""Routine near misses at a school's weekly volume: what a school that keeps its policy does.

Each week: class newsletters with attachments and every parent in Bcc, forms and FW: letters
to single parents, multi-agency threads with partner professionals, forwards to colleagues and
partners. Once per school: inbox rules forwarding to a colleague or redirecting to a partner,
mailbox forwarding set for an absence and then cleared, forwarding to the trust, and a "team
around the child" chat with a partner's officer (info). Every item is labelled "none" (or
"info") for each rule it could be mistaken for, so bench/accuracy.py counts false alarms on
them; nothing here is a violation under the rules' documented decisions.
"""

from __future__ import annotations

import time

from m365guard.emulator.synth._base import (
    DAY,
    PARTNERS,
    Address,
    Builder,
    Parent,
    Person,
)
from m365guard.emulator.synth._traffic import (
    add_chat,
    audit_record,
    contacts,
    inbox_rule,
    member,
    person_member,
)

PUPIL = "pupil-contact-non-school-channel"
BCC = "multi-recipient-without-bcc"
FORWARD = "external-forwarding-personal"
PERSONAL = "school-business-personal-email"
CASE = {PUPIL: "1-near-miss", BCC: "2-near-miss", FORWARD: "3-near-miss",
        PERSONAL: "4-near-miss"}

FORMS = ("Permission slip: {trip}", "Consent form for {trip}", "Reading record",
         "Medical form", "Photo consent", "Dinner money statement", "Parents' evening booking")
TRIPS = ("the farm visit", "the Lincoln trip", "the pantomime", "swimming", "the museum")
AGENCY_SUBJECTS = ("Early help review", "Child protection conference", "TAC meeting notes",
                   "Core group meeting", "Health care plan review", "Attendance panel")
FORWARDED = ("Cover request", "Trip risk assessment", "Parent query", "SEN review notes",
             "Training course", "Supply booking", "Invoice query", "Safeguarding update")


class Routine:
    """The people routine mail is drawn from, and the labels it writes."""

    def __init__(self, b: Builder) -> None:
        self.b = b
        end = b.window_end
        self.staff = [p for p in b.people if p.kind == "staff" and p.has_mailbox
                      and p.active_until > end]
        self.dsl = self.staff[0]  # the headteacher is the safeguarding lead
        self.teachers: dict[str, list[Person]] = {}
        for person in self.staff:
            if person.year:
                self.teachers.setdefault(person.year, []).append(person)
        year_of = {p.upn: p.year for p in b.people if p.kind == "pupil"}
        self.parents: dict[str, list[Parent]] = {}
        for parent in b.parents:
            self.parents.setdefault(year_of[parent.pupil_upns[0]], []).append(parent)
        self.partners = contacts(b, PARTNERS, 8)
        self.office = b.by_address[f"office@{b.profile.domain}"]

    def none(self, imid: str, actor: str, rules: tuple[str, ...], description: str,
             at: int) -> None:
        for rule in rules:
            self.b.label(CASE[rule], rule, "none", "message", imid, actor, None, description,
                         visible_from=at)

    # -- weekly mail ------------------------------------------------------------------------

    def day(self, day: int) -> None:
        b = self.b
        midnight = b.window_start - 2 * 3600 + day * DAY
        weekday = time.gmtime(midnight).tm_wday
        if weekday >= 5:
            return
        if weekday == 4:
            for year, teachers in sorted(self.teachers.items()):
                self.class_newsletter(day, b.rng.choice(teachers), year)
        for _ in range(self.count(len(self.staff) * 0.04)):
            self.form_to_parent(day)
        if weekday in (0, 2):
            self.multi_agency(day)
        for _ in range(self.count(len(self.staff) * 0.08)):
            self.internal_forward(day)
        if weekday == 1:
            self.forward_to_partner(day)

    def count(self, rate: float) -> int:
        whole = int(rate)
        return whole + (self.b.rng.random() < rate - whole)

    def class_newsletter(self, day: int, teacher: Person, year: str) -> None:
        parents = self.parents.get(year, [])
        if not parents:
            return
        at = self.b.working_time(day)
        imid = self.b.deliver(teacher.address, [teacher.address],
                              bcc=[(p.name, p.address) for p in parents], attachments=True,
                              subject=f"{year} newsletter", at=at)
        self.none(imid, teacher.upn, (BCC, PERSONAL),
                  f"{year} class newsletter with an attachment, every parent in Bcc.", at)

    def form_to_parent(self, day: int) -> None:
        b = self.b
        year = b.rng.choice(sorted(self.teachers))
        parents = self.parents.get(year)
        if not parents:
            return
        new_families = [p for p in parents if not p.rostered]  # joined since the roster
        teacher = b.rng.choice(self.teachers[year])
        parent = b.rng.choice(new_families if new_families and b.rng.random() < 0.25
                              else parents)
        at = b.working_time(day)
        forwarded = parent.rostered and b.rng.random() < 0.3
        subject = ("FW: Trip letter" if forwarded
                   else b.rng.choice(FORMS).format(trip=b.rng.choice(TRIPS)))
        imid = b.deliver(teacher.address, [(parent.name, parent.address)], subject=subject,
                         at=at, attachments=True)
        how = "a rostered parent" if parent.rostered else "a parent not on the roster"
        self.none(imid, teacher.upn, (PERSONAL,),
                  f"\"{subject}\" with an attachment from school mail to {how}.", at)

    def multi_agency(self, day: int) -> None:
        """The DSL writes to two or three partner professionals; one replies to all."""
        b = self.b
        group = b.rng.sample(self.partners, 2 + (b.rng.random() < 0.4))
        subject = b.rng.choice(AGENCY_SUBJECTS)
        at = b.working_time(day)
        conversation = b.graph_id("AAQkA", 30)
        imid = b.deliver(self.dsl.address, group[:1], cc=group[1:], subject=subject, at=at,
                         attachments=b.rng.random() < 0.5, conversation_id=conversation)
        self.none(imid, self.dsl.upn, (BCC,),
                  "Multi-agency thread: every outside address in To/Cc is a partner.", at)
        replied = at + b.rng.randrange(1800, 6 * 3600)
        b.deliver(group[1], [self.dsl.address, group[0]], cc=group[2:], subject=f"RE: {subject}",
                  at=replied, conversation_id=conversation)
        again = replied + b.rng.randrange(600, 3 * 3600)
        imid = b.deliver(self.dsl.address, group, subject=f"RE: {subject}", at=again,
                         conversation_id=conversation)
        self.none(imid, self.dsl.upn, (BCC,), "Reply to all on a multi-agency thread.", again)

    def internal_forward(self, day: int) -> None:
        b = self.b
        sender, colleague = b.rng.sample(self.staff, 2)
        at = b.working_time(day)
        subject = "FW: " + b.rng.choice(FORWARDED)
        imid = b.deliver(sender.address, [colleague.address], subject=subject, at=at,
                         attachments=b.rng.random() < 0.4)
        self.none(imid, sender.upn, (PERSONAL,), "A forward to a colleague.", at)

    def forward_to_partner(self, day: int) -> None:
        b = self.b
        at = b.working_time(day)
        imid = b.deliver(self.dsl.address, [b.rng.choice(self.partners)], subject="FW: Referral",
                         at=at, attachments=True)
        self.none(imid, self.dsl.upn, (PERSONAL, BCC), "A referral forwarded to a partner.", at)

    # -- settings and chats -----------------------------------------------------------------

    def forwarding(self) -> None:
        """Inbox rules to a colleague or a partner; mailbox forwarding for an absence, cleared
        on return; the business manager's forwarding to the trust."""
        b = self.b
        free = [p for p in self.staff[1:] if p.upn not in b.forwarded]
        for index in range(max(2, len(self.staff) // 15)):
            owner, colleague = free[index], self.staff[(index + 3) % len(self.staff)]
            self.rule(owner, "Forward to deputy", "forwardTo", colleague.address)
        for index in range(max(1, len(self.staff) // 40)):
            owner = free[-1 - index]
            self.rule(owner, "SEN referrals to the local authority", "redirectTo",
                      self.partners[index % len(self.partners)])
        for index in range(max(1, len(self.staff) // 30)):
            owner = free[len(free) // 2 + index]
            colleague = self.staff[(index + 5) % len(self.staff)]
            start = b.window_start + b.rng.randrange(1, max(2, b.history_days - 6)) * DAY
            until = start + 5 * DAY
            self.set_mailbox(owner, start, colleague.upn, "Forwarding to a colleague during an "
                             "absence, cleared on return.", until=until)
        trust = next(p for p in self.partners if not p[1].endswith(("gov.uk", "nhs.net")))
        self.set_mailbox(self.staff[1], b.window_start + DAY, trust[1],
                         "The business manager's mailbox forwards to the trust (a partner).")

    def rule(self, owner: Person, name: str, action: str, target: Address) -> None:
        b = self.b
        recipient = {"emailAddress": {"name": target[0], "address": target[1]}}
        rule = inbox_rule(b, owner, name, {action: [recipient], "stopProcessingRules": False},
                          conditions={"subjectContains": ["referral", "cover"]})
        b.label(CASE[FORWARD], FORWARD, "none", "inbox_rule", f"{owner.upn}/{rule['id']}",
                owner.upn, None, f"Inbox rule \"{name}\" to {target[1]}.", visible_from=None)

    def set_mailbox(self, owner: Person, at: int, address: str, description: str, *,
                    until: int | None = None) -> None:
        b = self.b
        b.forwarded.add(owner.upn)
        admin = self.staff[1].upn
        audit_record(b, "Set-Mailbox", admin, owner.upn, at,
                     [("Identity", owner.upn), ("ForwardingSmtpAddress", f"smtp:{address}"),
                      ("DeliverToMailboxAndForward", "True")])
        if until is not None:
            audit_record(b, "Set-Mailbox", admin, owner.upn, until,
                         [("Identity", owner.upn), ("ForwardingSmtpAddress", ""),
                          ("DeliverToMailboxAndForward", "False")])
        b.label(CASE[FORWARD], FORWARD, "none", "mailbox_forwarding", f"{owner.upn}/{address}",
                owner.upn, None, description, visible_from=at, visible_until=until,
                source="audit")

    def partner_chat(self) -> None:
        """A teacher, a pupil and the school nurse (NHS tenant): info, not a violation."""
        b = self.b
        pupils = [p for p in b.people if p.kind == "pupil" and p.has_mailbox]
        year = sorted(self.teachers)[0]
        teacher = self.teachers[year][0]
        pupil = next((p for p in pupils if p.year == year), pupils[0])
        nurse = next(p for p in self.partners if p[1].endswith("nhs.net"))
        at = b.working_time(b.rng.randrange(b.history_days))
        chat = add_chat(b, "group", "Team around the child", [
            person_member(b, teacher), person_member(b, pupil),
            member(b, nurse[0], nurse[1], b.guid(), tenant_id=b.guid())], at)
        b.label("1-partner", PUPIL, "info", "chat", chat["id"], teacher.upn, "info",
                "Teams chat of a teacher, a pupil and the school nurse (partner, another "
                "tenant): recorded for the DSL, not a violation.", visible_from=at,
                visible_until=None)


def build_routine(b: Builder) -> None:
    """Routine near misses for every day of the window, then the once-only settings."""
    routine = Routine(b)
    for day in range(b.history_days + b.future_days):
        routine.day(day)
    routine.forwarding()
    routine.partner_chat()


"""Planted violations of every sub-case the four rules detect, and near misses, each labelled.

Every third planted item of a kind falls in the future part of the window (it appears on a
later night); some are fixed later (a rule removed, forwarding cleared, a guest removed).
Each planted message triggers exactly one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import cycle

from m365guard.emulator.synth._base import (
    CLOCK_START,
    DAY,
    OTHER_EXTERNAL,
    PARTNERS,
    WEBMAIL,
    Address,
    Builder,
    Json,
    Parent,
    Person,
    iso,
)
from m365guard.emulator.synth._traffic import add_chat, audit_record, contacts, inbox_rule, member
from m365guard.emulator.synth._traffic import person_member as pm

PUPIL = "pupil-contact-non-school-channel"
BCC = "multi-recipient-without-bcc"
FORWARD = "external-forwarding-personal"
PERSONAL = "school-business-personal-email"


def name_variant(name: str, index: int) -> str:
    """The same person's name as webmail shows it: "Smith, Jane", "JANE SMITH", ..."""
    first, _, last = name.partition(" ")
    variants = (f"{last}, {first}", name.upper(), f"{first.lower()}  {last.lower()}", f"{name}.")
    return variants[index % 4]


def address_variant(address: str, index: int) -> str:
    """A personal address as typed: plus-addressed, googlemail for gmail, mixed case."""
    local, _, domain = address.partition("@")
    if index % 2 == 0:
        domain = "googlemail.com" if domain == "gmail.com" else domain
        return f"{local}+school@{domain}"
    return f"{local.capitalize()}@{domain.upper()}"


class Plants:
    """Picks the people for each planted case and records the labels."""

    def __init__(self, b: Builder) -> None:
        self.b = b
        end = b.window_end
        current = [p for p in b.people if p.kind == "staff" and p.has_mailbox
                   and p.active_until > end]
        rostered = {upn for upn, _ in b.staff_roster}
        self.staff = cycle(current[2:])
        self.rostered_staff = cycle([p for p in current if p.upn in rostered])
        self.unrostered_staff = cycle([p for p in current if p.upn not in rostered])
        pupils = [p for p in b.people if p.kind == "pupil"]
        with_role = {e["id"] for e in b.education_users}
        # pupils recognised only by licence, group or domain come first
        fallback = [p for p in pupils if p.user_id not in with_role]
        self.pupils = cycle(fallback[:3] + [p for p in pupils if p.user_id in with_role])
        self.pupils_with_mailbox = cycle([p for p in pupils if p.has_mailbox])
        webmail = tuple(WEBMAIL)
        self.rostered_parents = cycle([par for par in b.parents if par.rostered
                                       and par.address.endswith(webmail)])
        self.unrostered_parents = cycle([par for par in b.parents if not par.rostered
                                         and par.address.endswith(webmail)])
        self.suppliers = contacts(b, OTHER_EXTERNAL, 40)
        self.partners = contacts(b, PARTNERS, 6)

    def times(self) -> Iterator[tuple[int, int]]:
        """(index, time) for each planted instance of one case."""
        for index in range(self.b.profile.plants_per_case):
            yield index, self.b.plant_time(index)

    def stranger(self) -> Address:
        """A personal webmail address of nobody the school knows."""
        first, last = self.b.unique_name()
        return (f"{first} {last}", self.b.personal_address(first, last))

    def next_free_staff(self) -> Person:
        """A staff member whose mailbox has no planted forwarding yet (one state per mailbox)."""
        person = next(self.staff)
        while person.upn in self.b.forwarded:
            person = next(self.staff)
        self.b.forwarded.add(person.upn)
        return person

    def fix_window(self, index: int) -> tuple[int, int]:
        """(from, until) of something fixed later: until falls in the future part if any."""
        b = self.b
        if b.future_days:
            start = b.plant_time(0)
            return start, CLOCK_START + (1 + b.rng.randrange(b.future_days)) * DAY - 4 * 3600
        start = b.window_start + (1 + index) * DAY
        return start, min(start + 3 * DAY, CLOCK_START - 3600)

    # -- rule 1 ---------------------------------------------------------------------------------

    def pupil_contact(self) -> None:
        b = self.b
        for i, at in self.times():
            staff, pupil = next(self.staff), next(self.pupils)
            personal = (name_variant(pupil.name, i), b.personal_address(*pupil.name.split(" ", 1)))
            imid = b.deliver(staff.address, [personal], subject="Your reading challenge", at=at)
            b.label("1a", PUPIL, "finding", "message", imid, staff.upn, "high",
                    f"Staff mail to a pupil's personal address ({pupil.upn}).", visible_from=at)
            at2 = b.plant_time(i)
            imid = b.deliver(personal, [staff.address], subject="question about homework", at=at2)
            b.label("1a", PUPIL, "finding", "message", imid, staff.upn, "high",
                    f"A pupil ({pupil.upn}) wrote to staff from a personal address.",
                    visible_from=b.last_received)
        for i, at in self.times():
            staff = next(self.rostered_staff if i % 2 == 0 else self.unrostered_staff)
            pupil = next(self.pupils_with_mailbox)
            assert staff.personal is not None
            personal = (staff.name if i % 2 else "Home", staff.personal[1])
            imid = b.deliver(personal, [pupil.address], subject="Club tomorrow", at=at)
            b.label("1b", PUPIL, "finding", "message", imid, staff.upn, "high",
                    "A pupil's school mailbox got mail from a staff member's personal address.",
                    visible_from=b.last_received)
            at2 = b.plant_time(i)
            imid = b.deliver(pupil.address, [(name_variant(staff.name, i), staff.personal[1])],
                             subject="My work", at=at2)
            b.label("1b", PUPIL, "finding", "message", imid, staff.upn, "high",
                    "A pupil wrote to a staff member's personal address.", visible_from=at2)
        for i, at in self.times():
            self._chat(i, at, "external")
            self._chat(i, b.plant_time(i), "guest")
        for i in range(max(1, b.profile.plants_per_case // 2)):
            self._chat(i, 0, "fixed")
            self._chat(i, b.plant_time(i), "personal")

    def _chat(self, index: int, at: int, kind: str) -> None:
        b = self.b
        teacher = next(self.staff)
        pupils = [next(self.pupils_with_mailbox) for _ in range(2 + index % 2)]
        name, address = self.suppliers[index] if kind == "external" else self.stranger()
        until = None
        if kind == "external":
            outsider = member(b, name, address, b.guid(), tenant_id=b.guid())
        elif kind == "personal":  # microsoftaccountuserconversationmember.md: no email, tenant
            outsider = {"@odata.type": "#microsoft.graph.microsoftAccountUserConversationMember",
                        "id": b.graph_id("MCMjMSMj", 36), "roles": [], "displayName": name,
                        "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z",
                        "userId": f"{b.rng.getrandbits(64):016x}"}
        else:
            outsider = member(b, name, address, b.guid(), roles=("guest",))
        if kind == "fixed":
            at, until = self.fix_window(index)
            outsider["x-visibleUntil"] = iso(until)
        members = [pm(b, teacher), *[pm(b, p) for p in pupils], outsider]
        chat = add_chat(b, "group", "Extra tuition", members, at)
        what = {"external": "a member of an outside firm's tenant", "guest": "a guest",
                "fixed": "a guest who is removed later",
                "personal": "a personal Microsoft account"}[kind]
        b.label("1c", PUPIL, "finding", "chat", chat["id"], teacher.upn, "high",
                f"Teams chat with pupils and {what}.", visible_from=at, visible_until=until)

    # -- rule 2 ---------------------------------------------------------------------------------

    def bcc(self) -> None:
        b = self.b
        for i, at in self.times():
            staff = next(self.staff)
            firms = b.rng.sample(self.suppliers, 2 + i % 2)
            imid = b.deliver(staff.address, firms[:2], cc=firms[2:], subject="Trip booking", at=at)
            b.label("2-medium", BCC, "finding", "message", imid, staff.upn, "medium",
                    f"{len(firms)} external organisations' addresses in To/Cc.", visible_from=at)
            at = b.plant_time(i)
            parents = [next(self.rostered_parents) for _ in range(2 + i % 3)]
            imid = b.deliver(staff.address, [(p.name, p.address) for p in parents],
                             subject="Reading volunteers", at=at)
            b.label("2-high-parents", BCC, "finding", "message", imid, staff.upn, "high",
                    f"{len(parents)} parents' personal addresses in To.", visible_from=at)
            at = b.plant_time(i)
            many = b.rng.sample(self.suppliers + self.partners, 10 + i % 4)
            imid = b.deliver(staff.address, many[:6], cc=many[6:], subject="Summer fair stalls",
                             at=at)
            b.label("2-high-count", BCC, "finding", "message", imid, staff.upn, "high",
                    f"{len(many)} external addresses in To/Cc.", visible_from=at)
            at = b.plant_time(i)
            parents = [next(self.rostered_parents) for _ in range(2 + i % 2)]
            office = b.by_address[f"office@{b.profile.domain}"]
            imid = b.deliver(office.address, [(p.name, p.address) for p in parents],
                             subject="Reminder: parents' evening", at=at)
            b.label("2-high-shared", BCC, "finding", "message", imid, office.upn, "high",
                    f"The office mailbox (allow-listed) shows {len(parents)} parents in To: "
                    "the allow-list never hides an exposure.", visible_from=at)
            at = b.plant_time(i)
            parent = next(self.rostered_parents)
            imid = b.deliver(staff.address, self.partners[:2], cc=[(parent.name, parent.address)],
                             subject="Meeting about your child", at=at)
            b.label("2-medium", BCC, "finding", "message", imid, staff.upn, "medium",
                    "Two partner professionals and a parent in To/Cc: a parent mixed with "
                    "partners still counts.", visible_from=at)
            at = b.plant_time(i)
            imid = b.deliver(staff.address, self.partners[i % 2:i % 2 + 2],
                             cc=self.partners[3:4], subject="Strategy meeting", at=at)
            b.label("2-near-miss", BCC, "none", "message", imid, staff.upn, None,
                    "Multi-agency thread: every outside address in To/Cc is a partner.",
                    visible_from=at)
            at = b.plant_time(i)
            colleague = next(self.staff)
            imid = b.deliver(staff.address, [colleague.address], bcc=self.partners[:3],
                             subject="Attendance panel", at=at)
            b.label("2-near-miss", BCC, "none", "message", imid, staff.upn, None,
                    "External partners only in Bcc.", visible_from=at)
            at = b.plant_time(i)
            imid = b.deliver(staff.address, [self.partners[i % len(self.partners)]],
                             cc=[colleague.address], subject="Referral", at=at)
            b.label("2-near-miss", BCC, "none", "message", imid, staff.upn, None,
                    "One external address in To and a colleague in Cc.", visible_from=at)

    # -- rule 3 ---------------------------------------------------------------------------------

    def forwarding_rules(self) -> None:
        b = self.b
        actions = ("forwardTo", "redirectTo", "forwardAsAttachmentTo")
        for i, at in self.times():
            staff = next(self.staff)
            assert staff.personal is not None
            target = staff.personal if i % 2 == 0 else self.stranger()
            self._rule(staff, at, None, actions[i % 3], target, "3-rule-personal", "finding",
                       "high", "Inbox rule sending mail to a personal address.")
            self._rule(next(self.staff), b.plant_time(i), None, "forwardTo",
                       self.suppliers[i], "3-rule-other", "finding", "medium",
                       "Inbox rule forwarding to an outside organisation.")
            self._rule(next(self.staff), b.plant_time(i), None, actions[i % 3],
                       self.partners[i % len(self.partners)], "3-near-miss", "none", None,
                       "Inbox rule forwarding to a partner organisation.")
            colleague = next(self.staff)
            self._rule(next(self.staff), b.plant_time(i), None, "forwardTo", colleague.address,
                       "3-near-miss", "none", None, "Inbox rule forwarding to a colleague.")
            self._rule(next(self.staff), b.plant_time(i), None, "forwardTo", self.stranger(),
                       "3-rule-disabled", "info", "info",
                       "Disabled inbox rule that would forward to a personal address.",
                       enabled=False)
        for i in range(max(1, b.profile.plants_per_case // 2)):
            start, until = self.fix_window(i)
            self._rule(next(self.staff), start, until, "forwardTo", self.stranger(),
                       "3-rule-personal", "finding", "high",
                       "Inbox rule forwarding to a personal address, removed later.")

    def _rule(self, staff: Person, at: int, until: int | None, action: str, target: Address,
              case: str, expect: str, severity: str | None, description: str,
              *, enabled: bool = True) -> None:
        b = self.b
        recipient = {"emailAddress": {"name": target[0], "address": target[1]}}
        rule = inbox_rule(b, staff, "Copy to home" if expect != "none" else "Forward",
                          {action: [recipient], "stopProcessingRules": False}, enabled=enabled)
        rule["x-visibleFrom"] = iso(at)
        parameter = {"forwardTo": "ForwardTo", "redirectTo": "RedirectTo",
                     "forwardAsAttachmentTo": "ForwardAsAttachmentTo"}[action]
        audit_record(b, "New-InboxRule", staff.upn, staff.upn, at,
                     [("Mailbox", staff.upn), ("Name", rule["displayName"]),
                      (parameter, target[1])])
        if not enabled:
            audit_record(b, "Disable-InboxRule", staff.upn, staff.upn, at + 600,
                         [("Identity", f"{staff.upn}\\{rule['displayName']}")])
        if until is not None:
            rule["x-visibleUntil"] = iso(until)
            audit_record(b, "Remove-InboxRule", staff.upn, staff.upn, until,
                         [("Identity", f"{staff.upn}\\{rule['displayName']}")])
        b.label(case, FORWARD, expect, "inbox_rule", f"{staff.upn}/{rule['id']}", staff.upn,
                severity, description, visible_from=at, visible_until=until)

    def mailbox_forwarding(self) -> None:
        b = self.b
        for i, at in self.times():
            staff = self.next_free_staff()
            assert staff.personal is not None
            self._set_mailbox(staff, at, staff.personal[1], "3-mailbox-personal", "high",
                              "Mailbox forwarding (Set-Mailbox) to a personal address.",
                              parameter="ForwardingAddress" if i == 1 else "ForwardingSmtpAddress")
            self._set_mailbox(self.next_free_staff(), b.plant_time(i), self.suppliers[10 + i][1],
                              "3-mailbox-other", "medium",
                              "Mailbox forwarding to an outside organisation.")
            self._set_mailbox(self.next_free_staff(), b.plant_time(i),
                              self.partners[i % len(self.partners)][1], "3-near-miss", None,
                              "Mailbox forwarding to a partner organisation.")
        for i in range(max(1, b.profile.plants_per_case // 2)):
            start, until = self.fix_window(i)
            staff = self.next_free_staff()
            address = self.stranger()[1]
            self._set_mailbox(staff, start, address, "3-mailbox-personal", "high",
                              "Mailbox forwarding to a personal address, cleared later.",
                              until=until)
            audit_record(b, "Set-Mailbox", staff.upn, staff.upn, until,
                         [("Identity", staff.upn), ("ForwardingSmtpAddress", ""),
                          ("DeliverToMailboxAndForward", "False")])
        for _ in range(max(1, b.profile.plants_per_case // 2)):
            staff = self.next_free_staff()
            address = self.stranger()[1]
            b.export_only.append((staff.upn, address))
            b.label("3-mailbox-export", FORWARD, "finding", "mailbox_forwarding",
                    f"{staff.upn}/{address}", staff.upn, "high",
                    "Mailbox forwarding to a personal address seen only in the Exchange export.",
                    visible_from=None, source="export")

    def _set_mailbox(self, staff: Person, at: int, address: str, case: str,
                     severity: str | None, description: str, *, until: int | None = None,
                     parameter: str = "ForwardingSmtpAddress") -> None:
        b = self.b
        value = f"smtp:{address}" if parameter == "ForwardingSmtpAddress" else address
        audit_record(b, "Set-Mailbox", staff.upn, staff.upn, at,
                     [("Identity", staff.upn), (parameter, value),
                      ("DeliverToMailboxAndForward", "True")])
        b.label(case, FORWARD, "none" if severity is None else "finding", "mailbox_forwarding",
                f"{staff.upn}/{address}", staff.upn, severity, description, visible_from=at,
                visible_until=until, source="audit")

    # -- rule 4 ---------------------------------------------------------------------------------

    def personal_email(self) -> None:
        b = self.b
        prefixes = ("FW: ", "Fwd: ", "fw: ", "FWD: ")
        for i, at in self.times():
            staff = next(self.rostered_staff)
            roster_address = dict(b.staff_roster)[staff.upn]
            imid = b.deliver(staff.address, [("Me", address_variant(roster_address, i))],
                             subject="Reports to finish at home", at=at, attachments=True)
            b.label("4a", PERSONAL, "finding", "message", imid, staff.upn, "high",
                    "Staff mail to their own personal address (staff roster).", visible_from=at)
            staff = next(self.unrostered_staff)
            assert staff.personal is not None
            at = b.plant_time(i)
            imid = b.deliver(staff.address, [(name_variant(staff.name, i), staff.personal[1])],
                             subject="Planning", at=at)
            b.label("4a", PERSONAL, "finding", "message", imid, staff.upn, "high",
                    "Staff mail to their own personal address (matched by name).", visible_from=at)
            staff, at = next(self.staff), b.plant_time(i)
            imid = b.deliver(staff.address, [self.stranger()], at=at, attachments=i % 2 == 1,
                             subject=prefixes[i % 4] + "Pupil progress data")
            b.label("4b", PERSONAL, "finding", "message", imid, staff.upn, "medium",
                    "School mail forwarded to an unknown personal address.", visible_from=at)
            staff, at = next(self.staff), b.plant_time(i)
            imid = b.deliver(staff.address, [self.stranger()], at=at, attachments=True,
                             subject="Class list")
            b.label("4-near-miss", PERSONAL, "none", "message", imid, staff.upn, None,
                    "New mail with an attachment to an unidentified personal address: without "
                    "the body it looks like a form sent to a parent, so no finding (the rule "
                    "says it cannot see this).", visible_from=at)
            staff = next(self.rostered_staff if i % 2 else self.unrostered_staff)
            at = b.plant_time(i)
            assert staff.personal is not None
            parent = next(self.rostered_parents)
            sender = (staff.name if i % 2 == 0 else "J", staff.personal[1])
            imid = b.deliver(sender, [(parent.name, parent.address)], cc=[staff.address],
                             subject="Trip money", at=at)
            b.label("4c", PERSONAL, "finding", "message", imid, staff.upn, "high",
                    "Staff member's personal address writing to a parent, school mail in Cc.",
                    visible_from=b.last_received)
            self._parent_reply(next(self.unrostered_parents), staff, b.plant_time(i), False)
            self._parent_reply(next(self.rostered_parents), next(self.staff), b.plant_time(i), True)

    def _parent_reply(self, parent: Parent, staff: Person, at: int, attachment: bool) -> None:
        b = self.b
        conversation = b.graph_id("AAQkA", 30)
        asked = b.deliver((parent.name, parent.address), [staff.address], subject="Sports kit",
                          at=at, conversation_id=conversation)
        b.label("4-near-miss", PERSONAL, "none", "message", asked, staff.upn, None,
                "A parent on webmail writing to a teacher.", visible_from=b.last_received)
        reply = b.deliver(staff.address, [(parent.name, parent.address)], subject="RE: Sports kit",
                          at=at + 1800, conversation_id=conversation, attachments=attachment)
        b.label("4-near-miss", PERSONAL, "none", "message", reply, staff.upn, None,
                "A teacher's reply to a parent on webmail"
                + (" (on the roster) with an attachment." if attachment else "."),
                visible_from=at + 1800)


STAGES: tuple[Callable[[Plants], None], ...] = (
    Plants.pupil_contact, Plants.bcc, Plants.forwarding_rules, Plants.mailbox_forwarding,
    Plants.personal_email,
)


def build_plants(b: Builder) -> list[Json]:
    """Plant every case; returns the labels."""
    plants = Plants(b)
    for stage in STAGES:
        stage(plants)
    return b.labels

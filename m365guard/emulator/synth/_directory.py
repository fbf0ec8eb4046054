"""The school's directory: staff, pupils, governors, a shared mailbox, groups and parents.

Most people carry every signal (education role, licence, group, domain); a few carry only one,
so the directory's fallback order (role, licence, group, pupil domain) is exercised.
"""

from __future__ import annotations

from m365guard.emulator.synth._base import DAY, OTHER_EXTERNAL, Builder, Json, Parent, Person


def build_directory(b: Builder) -> None:
    """Fill users, education users, groups and parents."""
    p = b.profile
    b.tenant_id = b.guid()
    staff_ids = _staff(b)
    governors = [_account(b, "governor", p.domain, ("EXCHANGESTANDARD",), "Governor")
                 for _ in range(p.governors)]
    office = Person(b.guid(), f"office@{p.domain}", f"{p.name} Office", "shared", True)
    b.add_user(office, enabled=False)
    pupils_by_year = _pupils(b)
    _groups(b, staff_ids, governors, pupils_by_year)
    _parents(b)


def _account(b: Builder, kind: str, domain: str, skus: tuple[str, ...], title: str | None,
             *, has_mailbox: bool = True, enabled: bool = True) -> Person:
    first, last = b.unique_name()
    stem = f"{first}.{last}" if kind == "pupil" else f"{first[0]}{last}"
    local = b.local_part(stem.lower())
    person = Person(b.guid(), f"{local}@{domain}", f"{first} {last}", kind, has_mailbox)
    person.personal = (person.name, b.personal_address(first, last))
    return b.add_user(person, enabled=enabled, skus=skus, job_title=title)


def _staff(b: Builder) -> dict[str, list[str]]:
    """Staff: teachers and support staff; some unsynced, unlicensed, mailbox-less or leavers."""
    p = b.profile
    ids: dict[str, list[str]] = {"teaching": [], "support": [], "slt": []}
    for index in range(p.staff):
        teacher = index == 0 or (index > 1 and b.rng.random() < 0.55)
        title = "Headteacher" if index == 0 else "School Business Manager" if index == 1 else (
            "Teacher" if teacher else b.rng.choice(("Teaching Assistant", "Administrator",
                                                    "Midday Supervisor", "Site Manager")))
        draw = b.rng.random()
        if index > 1 and not teacher and draw < 0.07:  # no Exchange mailbox, unlicensed
            person = _account(b, "staff", p.domain, (), title, has_mailbox=False)
        elif index % 20 == 7:  # a leaver, disabled part-way through the history
            person = _account(b, "staff", p.domain, ("STANDARDWOFFPACK_FACULTY",), title,
                              enabled=False)
            person.active_until = b.window_start + b.rng.randrange(2, max(b.history_days, 3)) * DAY
        else:
            sku = "M365EDU_A3_FACULTY" if teacher else "STANDARDWOFFPACK_FACULTY"
            person = _account(b, "staff", p.domain, (sku,), title)
        if teacher:
            person.year = p.year_groups[len(ids["teaching"]) % len(p.year_groups)]
        if person.has_mailbox and index % 10 != 3:  # 1 in 10 not synced by School Data Sync
            b.education_users.append({"id": person.user_id, "primaryRole":
                                      "teacher" if teacher else "faculty",
                                      "displayName": person.name})
        if person.has_mailbox and person.active_until > b.window_end and b.rng.random() < 0.5:
            assert person.personal is not None
            b.staff_roster.append((person.upn, person.personal[1]))
        ids["teaching" if teacher else "support"].append(person.user_id)
        if index < 2 or (teacher and len(ids["slt"]) < 5 and b.rng.random() < 0.1):
            ids["slt"].append(person.user_id)
    return ids


def _pupils(b: Builder) -> dict[str, list[str]]:
    """Pupils by year group (value: user ids of pupils who belong in the year's group)."""
    p = b.profile
    by_year: dict[str, list[str]] = {year: [] for year in p.year_groups}
    for index in range(p.pupils):
        year = p.year_groups[index % len(p.year_groups)]
        path = index % 50  # 0: licence only, 1: group only, 2: pupil domain only; else all
        sku = "M365EDU_A3_STUUSEBNFT" if index % 2 else "STANDARDWOFFPACK_STUDENT"
        if path == 0:
            person = _account(b, "pupil", p.domain, (sku,), None)
        elif path == 1:
            person = _account(b, "pupil", p.domain, (), None, has_mailbox=False)
        elif path == 2:
            person = _account(b, "pupil", p.pupil_domain, (), None, has_mailbox=False)
        else:
            person = _account(b, "pupil", p.pupil_domain, (sku,), None)
            b.education_users.append({"id": person.user_id, "primaryRole": "student",
                                      "displayName": person.name})
        person.year = year
        person.personal = None  # pupils' personal addresses exist only where planted
        if path == 1 or path > 2:
            by_year[year].append(person.user_id)
    return by_year


def _group(b: Builder, name: str, members: list[str], *, mail: str | None = None,
           unified: bool = False, description: str = "") -> Json:
    group: Json = {
        "id": b.guid(), "displayName": name, "description": description or name,
        "mail": f"{mail}@{b.profile.domain}" if mail else None, "mailEnabled": mail is not None,
        "mailNickname": mail or name.replace(" ", "").lower(), "securityEnabled": not unified,
        "groupTypes": ["Unified"] if unified else [], "visibility": "Private" if unified else None,
        "createdDateTime": "2019-08-30T09:00:00Z", "x-members": members,
    }
    b.groups.append(group)
    return group


def _groups(b: Builder, staff: dict[str, list[str]], governors: list[Person],
            pupils_by_year: dict[str, list[str]]) -> None:
    """Staff, pupil and governor groups; All Staff and All Pupils nest other groups."""
    by_id = {person.user_id: person for person in b.people}
    teaching = _group(b, "Teaching Staff", staff["teaching"], mail="teachingstaff")
    support = _group(b, "Support Staff", staff["support"], mail="supportstaff")
    _group(b, "Senior Leadership Team", staff["slt"], mail="slt", unified=True)
    all_staff = _group(b, "All Staff", [teaching["id"], support["id"]], mail="allstaff",
                       unified=True, description="Everyone who works at the school")
    years = [_group(b, f"{year} Pupils", ids) for year, ids in pupils_by_year.items()]
    _group(b, "All Pupils", [g["id"] for g in years])
    gov = _group(b, "Governors", [g.user_id for g in governors], mail="governors", unified=True)
    for group, ids in ((teaching, staff["teaching"]), (support, staff["support"]),
                       (all_staff, staff["teaching"] + staff["support"]),
                       (gov, [g.user_id for g in governors])):
        b.group_delivery[group["mail"]] = [by_id[i] for i in ids
                                           if by_id[i].active_until > b.window_end]


def _parents(b: Builder) -> None:
    """Parents and carers: mostly personal webmail, some work addresses; 90% on the roster."""
    pupils = [person for person in b.people if person.kind == "pupil"]
    for index in range(b.profile.parents):
        child = pupils[index % len(pupils)]
        children = [child.upn]
        if b.rng.random() < 0.15:  # siblings
            children.append(b.rng.choice(pupils).upn)
        surname = child.name.split(" ", 1)[1] if b.rng.random() < 0.7 else None
        first, last = b.unique_name(surname)
        if b.rng.random() < 0.12:
            address = b.local_part(f"{first[0]}.{last}@{b.rng.choice(OTHER_EXTERNAL)}".lower())
        else:
            address = b.personal_address(first, last)
        b.parents.append(Parent(f"{first} {last}", address, children, b.rng.random() < 0.9))

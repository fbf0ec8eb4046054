"""Who should act on each kind of finding, and the plain next step: one vocabulary for all.

Why here: the weekly page, the nightly alerts and the CSVs must name the same person for the
same finding. The roles are the people [notify] can reach (headteacher, DSL, DPO, IT); a
member of staff's own line manager has no address in policies.toml, so personal-email findings
go to the headteacher, who passes them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["headteacher", "dsl", "dpo", "it"]
ROLES: tuple[Role, ...] = ("headteacher", "dsl", "dpo", "it")
ROLE_TITLES: dict[Role, str] = {
    "headteacher": "Headteacher",
    "dsl": "Designated safeguarding lead (DSL)",
    "dpo": "Data protection officer (DPO)",
    "it": "IT",
}


@dataclass(frozen=True)
class NextStep:
    """Who acts (as shown to people), which [notify] role is told, and what to do."""

    who: str
    role: Role
    step: str
    short: str  # the step in a few words, for lists
    what: str  # the kind of finding in a few words


NEXT_STEPS: dict[str, NextStep] = {
    "pupil-contact-non-school-channel": NextStep(
        "DSL", "dsl",
        "Talk to the member of staff today; follow the safeguarding procedure for contact with "
        "a pupil outside school accounts.",
        "talk to them today; safeguarding procedure",
        "pupil contact outside school accounts"),
    "multi-recipient-without-bcc": NextStep(
        "DPO", "dpo",
        "Decide whether the exposed addresses are a reportable breach (72 hours from discovery);"
        " remind the sender to use BCC.",
        "decide if reportable (72 h); remind to use BCC",
        "addresses shown to each other (no BCC)"),
    "external-forwarding-personal": NextStep(
        "IT", "it",
        "Remove the forwarding today and check with the member of staff what was forwarded.",
        "remove the forwarding; ask what was sent",
        "mail forwarded outside the school"),
    "school-business-personal-email": NextStep(
        "Line manager", "headteacher",
        "Line manager to remind the member of staff that school business stays in school "
        "accounts.",
        "remind: school business in school accounts",
        "school business by personal email"),
}
UNKNOWN_STEP = NextStep("Headteacher", "headteacher", "Review the finding and decide who acts.",
                        "review and decide who acts", "other finding")


def next_step(rule_id: str) -> NextStep:
    """The next step for a rule's findings (the headteacher decides for a rule not listed)."""
    return NEXT_STEPS.get(rule_id, UNKNOWN_STEP)

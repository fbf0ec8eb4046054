"""policies.toml -> a validated, typed `Policy`.

Public API:
    load_policy(path: Path) -> Policy

Every mistake in the file becomes one `GuardError` line naming the key path, the line number
and what to write instead (CONFIG_ERROR), e.g.
`policies.toml line 12: school.domains[1] "manby lodge.sch.uk" is not a domain name; write e.g.
"manbylodge.sch.uk"`. A roster or export file that does not exist is INPUT_FILE_ERROR.
Relative paths resolve against the policy file's folder, so cron can run from anywhere.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from m365guard.clauses import CLAUSES
from m365guard.config_messages import find_line, syntax_message, validation_message
from m365guard.errors import ExitCode, GuardError

Cloud = Literal["global", "usgov", "usgovdod", "china"]


class TenantSection(BaseModel):
    """The [tenant] table as the technician writes it (all optional: the environment may supply)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_file: Path | None = None
    certificate_path: Path | None = None
    certificate_password_file: Path | None = None
    cloud: Cloud = "global"
    authority_host: str | None = None
    graph_endpoint: str | None = None
    ca_bundle: Path | None = None


Severity = Literal["info", "low", "medium", "high"]
Recogniser = Literal["education_role", "licence", "group", "domain"]
Folder = Literal["sentitems", "inbox"]

_DOMAIN_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^{_DOMAIN_LABEL}(\.{_DOMAIN_LABEL})*\.[a-z]{{2,63}}$")
_ADDRESS_RE = re.compile(r"^[^@\s\"<>]+@[^@\s\"<>]+$")


def _suggest_domain(value: str) -> str:
    """The nearest thing to a domain name in what was typed (spaces, @, scheme, path removed)."""
    text = value.strip().lower()
    text = re.sub(r"^[a-z]+://", "", text).split("/")[0].split("@")[-1]
    return re.sub(r"[^a-z0-9.-]", "", text).strip(".-")


def _check_domain(value: str) -> str:
    """A bare domain name, lower-cased (what Entra ID lists as an accepted domain)."""
    domain = value.strip().lower().rstrip(".")
    if _DOMAIN_RE.match(domain):
        return domain
    suggestion = _suggest_domain(value)
    example = suggestion if _DOMAIN_RE.match(suggestion) else "manbylodge.sch.uk"
    raise ValueError(f'is not a domain name; write e.g. "{example}"')


def _check_address(value: str) -> str:
    """An email address, lower-cased."""
    address = value.strip().lower()
    if _ADDRESS_RE.match(address) and _DOMAIN_RE.match(address.rsplit("@", 1)[1]):
        return address
    raise ValueError('is not an email address; write e.g. "office@manbylodge.sch.uk"')


def _check_time_zone(value: str) -> str:
    """An IANA time zone name such as Europe/London (weeks are cut at its midnight)."""
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError('is not a time zone; write e.g. "Europe/London"') from None
    return value.strip()


def _check_clause(value: str) -> str:
    """A clause id from m365guard.clauses.CLAUSES."""
    if value in CLAUSES:
        return value
    raise ValueError(f"is not a clause id; write one of {', '.join(CLAUSES)}")


def _check_sku_suffix(value: str) -> str:
    """A licence part-number suffix such as _STUDENT (compared upper-case)."""
    suffix = value.strip().upper()
    if re.fullmatch(r"[A-Z0-9_]+", suffix):
        return suffix
    raise ValueError('is not a licence suffix; write e.g. "_STUDENT"')


Domain = Annotated[StrictStr, AfterValidator(_check_domain)]
Address = Annotated[StrictStr, AfterValidator(_check_address)]
TimeZone = Annotated[StrictStr, AfterValidator(_check_time_zone)]
ClauseId = Annotated[StrictStr, AfterValidator(_check_clause)]
SkuSuffix = Annotated[StrictStr, AfterValidator(_check_sku_suffix)]


class _Section(BaseModel):
    """Every table rejects keys it does not know: a typo must not silently disable a check."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SchoolSection(_Section):
    """[school]: who the school is and which domains are its own accounts."""

    name: StrictStr = Field(min_length=1)
    domains: list[Domain] = Field(min_length=1)
    pupil_domains: list[Domain] = []
    # weeks are cut at local midnight here; people-facing dates are shown in it
    time_zone: TimeZone = "Europe/London"

    @property
    def all_domains(self) -> frozenset[str]:
        """Every school domain, pupil-only domains included."""
        return frozenset(self.domains) | frozenset(self.pupil_domains)


class PeopleSection(_Section):
    """[people]: how pupils, staff and governors are told apart, in order of trust."""

    recognise: list[Recogniser] = ["education_role", "licence", "group", "domain"]
    pupil_sku_suffixes: list[SkuSuffix] = ["_STUDENT", "_STUUSEBNFT"]
    staff_sku_suffixes: list[SkuSuffix] = ["_FACULTY"]
    pupil_groups: list[StrictStr] = []
    staff_groups: list[StrictStr] = []
    governor_groups: list[StrictStr] = []
    staff_roster: Path | None = None
    parent_roster: Path | None = None


class AddressesSection(_Section):
    """[addresses]: which outside domains are partners and which are personal webmail."""

    partner_domains: list[Domain] = []
    personal_domains_extra: list[Domain] = []
    personal_domains_remove: list[Domain] = []
    use_free_email_list: StrictBool = True


class AllowSection(_Section):
    """[allow]: shared mailboxes and lists whose mail the rules accept."""

    mailboxes: list[Address] = []
    distribution_lists: list[Address] = []


class CollectSection(_Section):
    """[collect]: what the nightly job reads from Graph and how hard it pushes."""

    first_run_days: StrictInt = Field(default=30, ge=1, le=365)
    folders: list[Folder] = ["sentitems", "inbox"]
    include_chats: StrictBool = True
    include_audit_log: StrictBool = True
    exchange_forwarding_export: Path | None = None
    max_concurrency: StrictInt = Field(default=4, ge=1, le=64)
    # first wait for the audit log query; doubles up to a minute (0: poll at once, as the
    # demo against the emulator does)
    audit_poll_seconds: StrictFloat = Field(default=0.5, ge=0, le=600)
    # no retry waits past this many minutes after the run starts (a Retry-After is honoured
    # as sent, however long, until then); what is left unread is reported, the run ends
    run_deadline_minutes: StrictInt = Field(default=360, ge=1, le=1440)
    # the group an Exchange scope (RBAC for Applications, application access policy) limits
    # the app to: other mailboxes are not asked and reported as excluded. Unset: all
    mailbox_scope_group: str | None = None
    request_timeout_seconds: StrictFloat = Field(default=60.0, gt=0, le=600)
    # Teams GETs a second (list chats, a chat's members; each $batch item counts): under
    # Graph's 30 per app per tenant (concepts/throttling-limits.md)
    teams_requests_per_second: StrictFloat = Field(default=25.0, gt=0, le=100_000)


def _default_state_path() -> Path:
    return Path(platformdirs.user_data_dir("m365guard")) / "state.sqlite3"


class StateSection(_Section):
    """[state]: the SQLite history of runs and findings."""

    path: Path = Field(default_factory=_default_state_path)
    retention_days: StrictInt = Field(default=400, ge=1)
    # a clock further than this past the last run's window end is refused (a bad RTC, faketime);
    # 60 days leave room for a server switched off over the summer holiday (about six weeks)
    max_gap_days: StrictInt = Field(default=60, ge=1, le=3650)
    # consistent copies kept in a backups folder beside the state, one per committed night
    backups: StrictInt = Field(default=3, ge=0, le=100)
    # how long to wait for a write lock another program holds on the state file, then exit 5
    lock_wait_seconds: StrictFloat | StrictInt = Field(default=30, gt=0, le=3600)


class OutputSection(_Section):
    """[output]: where the CSV reports and the log go."""

    dir: Path = Path("m365guard-output")
    # the nightly log; default m365guard.log in dir (a server keeps it under /var/log)
    log_file: Path | None = None


def _notice_placeholders(text: str) -> str:
    try:
        text.format(rules="", school="", contact="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"may only name {{rules}}, {{school}} and {{contact}} (found {exc});"
                         " write {{ and }} for a brace") from None
    return text


class EnforceSection(_Section):
    """[enforce]: changes to the tenant (disabling inbox rules). Off unless enabled.

    The write permission (MailboxSettings.ReadWrite) belongs to a second app registration;
    without client_id here the [tenant] app is used, which must then hold it too.
    """

    enabled: StrictBool = False
    client_id: StrictStr | None = None
    certificate_path: Path | None = None
    certificate_password_file: Path | None = None
    client_secret_file: Path | None = None
    plans_dir: Path = Path("m365guard-plans")
    # A folder written by jobs/windows/export-exchange.ps1 and how old it may be
    exchange_export: Path | None = None
    exchange_export_max_age_days: StrictInt = Field(default=8, ge=1, le=90)
    # Tell each member of staff before their mailbox is changed (enforce/notice.py), from the
    # [notify] sender; the text may name {rules}, {school} and {contact}
    staff_notice: StrictBool = False
    staff_notice_subject: StrictStr = "A change to your school mailbox"
    staff_notice_text: Annotated[StrictStr, AfterValidator(_notice_placeholders)] = (
        "The school's IT team is about to turn off these inbox rules in your mailbox: {rules}."
        "\n\nThey send school mail outside the school automatically, which the staff"
        " Acceptable Use Policy does not allow (school mail is only sent to intended"
        " recipients). Nothing else in your mailbox changes, and the change can be undone."
        "\n\nIf you need mail to reach you elsewhere, or think this is a mistake, please"
        " reply to {contact}.\n\n{school}")


class NotifySection(_Section):
    """[notify]: who is told about what, from which mailbox, and an optional Teams channel."""

    sender: Address | None = None  # the one school mailbox alerts and the weekly page come from
    headteacher: list[Address] = []
    dsl: list[Address] = []
    dpo: list[Address] = []
    it: list[Address] = []
    alerts: StrictBool = True  # mail each role after a night with new high findings
    weekly_to: list[Literal["headteacher", "dsl", "dpo", "it"]] = ["headteacher", "dsl", "dpo"]
    # a file holding the Teams Workflows webhook URL (the URL is a secret: it carries a key)
    teams_webhook_file: Path | None = None

    def recipients(self, role: str) -> list[str]:
        """The addresses of one role ([] when none are set)."""
        addresses: list[str] = getattr(self, role)
        return addresses


class RuleSettings(_Section):
    """[rules.<rule-id>]: keys every rule accepts. severity/clause default to the rule's own."""

    enabled: StrictBool = True
    severity: Severity | None = None
    clause: ClauseId | None = None


class PupilContactSettings(RuleSettings):
    """[rules.pupil-contact-non-school-channel]"""

    flag_one_to_one_chats: StrictBool = False


class BccSettings(RuleSettings):
    """[rules.multi-recipient-without-bcc]"""

    min_external_recipients: StrictInt = Field(default=2, ge=2)
    high_recipient_count: StrictInt = Field(default=10, ge=2)


class RulesSection(_Section):
    """[rules]: one table per rule id (rule ids contain hyphens, hence the aliases)."""

    pupil_contact: PupilContactSettings = Field(
        default_factory=PupilContactSettings, alias="pupil-contact-non-school-channel"
    )
    bcc: BccSettings = Field(default_factory=BccSettings, alias="multi-recipient-without-bcc")
    forwarding: RuleSettings = Field(
        default_factory=RuleSettings, alias="external-forwarding-personal"
    )
    personal_email: RuleSettings = Field(
        default_factory=RuleSettings, alias="school-business-personal-email"
    )

    def for_rule(self, rule_id: str) -> RuleSettings:
        """The settings of one rule, by its id."""
        for name, field in type(self).model_fields.items():
            if field.alias == rule_id:
                settings: RuleSettings = getattr(self, name)
                return settings
        raise KeyError(rule_id)


RULE_IDS = tuple(str(field.alias) for field in RulesSection.model_fields.values())


class Policy(_Section):
    """The whole policies.toml, validated; paths already resolved against its folder."""

    school: SchoolSection
    tenant: TenantSection = Field(default_factory=TenantSection)
    people: PeopleSection = Field(default_factory=PeopleSection)
    addresses: AddressesSection = Field(default_factory=AddressesSection)
    allow: AllowSection = Field(default_factory=AllowSection)
    collect: CollectSection = Field(default_factory=CollectSection)
    state: StateSection = Field(default_factory=StateSection)
    output: OutputSection = Field(default_factory=OutputSection)
    notify: NotifySection = Field(default_factory=NotifySection)
    rules: RulesSection = Field(default_factory=RulesSection)
    enforce: EnforceSection = Field(default_factory=EnforceSection)


# Files the policy names that must exist when it is loaded (key path -> getter).
_INPUT_FILES: tuple[tuple[str, ...], ...] = (
    ("people", "staff_roster"),
    ("people", "parent_roster"),
    ("collect", "exchange_forwarding_export"),
)
_RELATIVE_PATHS: tuple[tuple[str, ...], ...] = (
    *_INPUT_FILES,
    ("tenant", "client_secret_file"),
    ("tenant", "certificate_path"),
    ("tenant", "certificate_password_file"),
    ("tenant", "ca_bundle"),
    ("state", "path"),
    ("output", "dir"),
    ("enforce", "certificate_path"),
    ("enforce", "certificate_password_file"),
    ("enforce", "client_secret_file"),
    ("enforce", "plans_dir"),
    ("enforce", "exchange_export"),
    ("output", "log_file"),
)


def load_policy(path: Path) -> Policy:
    """Read and validate policies.toml; raise one GuardError line on any mistake."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad may add a BOM
    except FileNotFoundError:
        raise GuardError(
            f"{path}: policy file not found; pass --config PATH or copy the example "
            "policies.toml", ExitCode.CONFIG_ERROR) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardError(f"{path}: cannot read the policy file ({exc}); save it as UTF-8 text",
                         ExitCode.CONFIG_ERROR) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GuardError(syntax_message(name, str(exc)), ExitCode.CONFIG_ERROR) from None
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise GuardError(validation_message(name, text, exc, Policy),
                         ExitCode.CONFIG_ERROR) from None
    return _resolve_paths(policy, path.resolve().parent, name, text)


def _resolve_paths(policy: Policy, base: Path, name: str, text: str) -> Policy:
    """Relative paths against the policy's folder; named input files must exist."""
    for section_name, field in _RELATIVE_PATHS:
        section = getattr(policy, section_name)
        value = getattr(section, field)
        if value is None:
            continue
        resolved = value.expanduser()
        if not resolved.is_absolute():
            resolved = base / resolved
        setattr(section, field, resolved)
        if (section_name, field) in _INPUT_FILES and not resolved.is_file():
            line = find_line(text, (section_name, field))
            where = f"{name} line {line}" if line else name
            raise GuardError(
                f'{where}: {section_name}.{field} "{value}" does not exist ({resolved}); '
                "write the path of the CSV file, relative to the policy file",
                ExitCode.INPUT_FILE_ERROR)
    return policy

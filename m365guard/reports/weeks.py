"""School weeks: ISO weeks cut at local midnight in the school's time zone.

Why local: a headteacher's "last week" is Monday 00:00 to Sunday 24:00 on the school's clock,
and across a clock change that week is 167 or 169 hours long, so a week's end is the next
Monday's local midnight, never start + 7 days. State keeps UTC; only the cut and the dates
people read are local. A week or period that has not started yet is refused (exit 2): a report
on the future could only say "nothing found", which is not true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from m365guard.errors import ExitCode, GuardError

DEFAULT_TIME_ZONE = "Europe/London"


def school_zone(name: str) -> ZoneInfo:
    """The IANA zone by name (GuardError naming the setting otherwise)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise GuardError(
            f"school.time_zone {name!r} is not a time zone; write e.g. \"Europe/London\"",
            ExitCode.CONFIG_ERROR) from None


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The start of `day` on the school's clock, in UTC."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    """The school's calendar day at `moment`."""
    return moment.astimezone(zone).date()


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week (Monday to Sunday) on the school's clock."""

    year: int
    week: int
    zone: ZoneInfo = field(default=ZoneInfo(DEFAULT_TIME_ZONE), compare=False)

    @classmethod
    def of(cls, day: date, zone: ZoneInfo | None = None) -> IsoWeek:
        """The week a (local) day falls in."""
        year, week, _ = day.isocalendar()
        return cls(year, week, zone or ZoneInfo(DEFAULT_TIME_ZONE))

    @classmethod
    def containing(cls, moment: datetime, zone: ZoneInfo) -> IsoWeek:
        """The week `moment` falls in on the school's clock."""
        return cls.of(local_day(moment, zone), zone)

    @classmethod
    def last_complete(cls, now: datetime, zone: ZoneInfo | None = None) -> IsoWeek:
        """The latest week that has ended by `now` (local)."""
        zone = zone or ZoneInfo(DEFAULT_TIME_ZONE)
        return cls.containing(now, zone).shifted(-1)

    @classmethod
    def parse(cls, text: str, zone: ZoneInfo | None = None) -> IsoWeek:
        """Parse '2025-W10' (GuardError naming the expected form otherwise)."""
        try:
            year, week = text.strip().upper().split("-W")
            monday = date.fromisocalendar(int(year), int(week), 1)
        except ValueError as exc:
            raise GuardError(
                f"week {text!r} is not an ISO week; write it like 2025-W10", ExitCode.USAGE
            ) from exc
        return cls.of(monday, zone)

    @property
    def label(self) -> str:
        """'2025-W10'."""
        return f"{self.year}-W{self.week:02d}"

    @property
    def monday(self) -> date:
        """The first day of the week."""
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> date:
        """The last day of the week."""
        return self.monday + timedelta(days=6)

    @property
    def days(self) -> list[date]:
        """Monday to Sunday."""
        return [self.monday + timedelta(days=offset) for offset in range(7)]

    @property
    def start(self) -> datetime:
        """Monday 00:00 local, as UTC."""
        return local_midnight(self.monday, self.zone)

    @property
    def end(self) -> datetime:
        """The next Monday 00:00 local, as UTC (exclusive)."""
        return local_midnight(self.monday + timedelta(days=7), self.zone)

    def shifted(self, weeks: int) -> IsoWeek:
        """The week `weeks` later (negative: earlier)."""
        return IsoWeek.of(self.monday + timedelta(weeks=weeks), self.zone)

    def in_progress(self, now: datetime) -> bool:
        """True while `now` is inside the week."""
        return self.start <= now < self.end


def refuse_future_week(week: IsoWeek, now: datetime) -> None:
    """A week that has not started has nothing to report: one line, exit 2."""
    if week.start > now:
        latest = IsoWeek.last_complete(now, week.zone)
        raise GuardError(
            f"week {week.label} has not started yet; the last complete week is {latest.label}",
            ExitCode.USAGE)


def refuse_future_period(period_from: date, period_to: date, now: datetime,
                         zone: ZoneInfo) -> None:
    """An audit period must end by today (local): future nights cannot be called missed."""
    today = local_day(now, zone)
    if period_from > today:
        raise GuardError(f"--from {period_from} is in the future; today is {today}",
                         ExitCode.USAGE)
    if period_to > today:
        raise GuardError(
            f"--to {period_to} is in the future; end the period today ({today}) or earlier",
            ExitCode.USAGE)

"""Calendar arithmetic of the programme: local days, months and years in the programme's time zone,
when a lot expires, when pending points are released, which review period a moment falls in.

Every boundary is the first instant of the next local period, and a lot is expired when
``now >= expires_at``: "valid through 31 December" is stored as 1 January 00:00 local time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from schemas import ProgrammeConfig


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(programme: ProgrammeConfig, at: datetime) -> date:
    return at.astimezone(zone(programme.timezone)).date()


def start_of(programme: ProgrammeConfig, day: date) -> datetime:
    """The first instant of a local day, in UTC."""
    return datetime.combine(day, time(0), tzinfo=zone(programme.timezone)).astimezone(UTC)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def expires_at(programme: ProgrammeConfig, earned_at: datetime) -> datetime | None:
    """When points earned at ``earned_at`` lapse under the programme's expiry policy (None: never)."""
    policy = programme.expiry
    if policy.policy == "never":
        return None
    day = local_date(programme, earned_at)
    if policy.policy == "days":
        assert policy.days is not None
        return start_of(programme, day + timedelta(days=policy.days + 1))
    if policy.policy == "end_of_month":
        year, month = _add_months(day.year, day.month, policy.months + 1)
        return start_of(programme, date(year, month, 1))
    return start_of(programme, date(day.year + policy.years + 1, 1, 1))


def available_at(programme: ProgrammeConfig, earned_at: datetime) -> datetime | None:
    """When points earned at ``earned_at`` become spendable (None: at once)."""
    if programme.pending_days == 0:
        return None
    return earned_at.astimezone(UTC) + timedelta(days=programme.pending_days)


def period_of(programme: ProgrammeConfig, at: datetime, every: str) -> tuple[str, datetime]:
    """The key of the local period containing ``at`` (2025-04, 2025-Q2, 2025) and its first instant."""
    day = local_date(programme, at)
    if every == "month":
        return f"{day.year:04d}-{day.month:02d}", start_of(programme, date(day.year, day.month, 1))
    if every == "quarter":
        quarter = (day.month - 1) // 3
        return f"{day.year:04d}-Q{quarter + 1}", start_of(programme, date(day.year, quarter * 3 + 1, 1))
    if every == "year":
        return f"{day.year:04d}", start_of(programme, date(day.year, 1, 1))
    if every == "day":
        return day.isoformat(), start_of(programme, day)
    raise ValueError(f"unknown period {every!r}; one of day, month, quarter, year")

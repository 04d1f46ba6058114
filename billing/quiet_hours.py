"""Business hours in the customer's time zone: when a customer-facing step may happen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from billing.business_days import calendar_for, is_business_day
from billing.policy import QuietHours

# China's longest break in the table is ten days (Spring Festival 2020); a month leaves room for any other.
LONGEST_SEARCH = timedelta(days=31)


def next_business_moment(at: datetime, zone: ZoneInfo, quiet_hours: QuietHours) -> datetime:
    """The earliest moment at or after `at` inside business hours on a business day in `zone` (in UTC)."""
    if not quiet_hours.enabled:
        return at.astimezone(UTC)
    calendar = calendar_for(zone, quiet_hours.calendar) if quiet_hours.business_days_only else None
    local = at.astimezone(zone)
    for _ in range(LONGEST_SEARCH.days):
        day = local.date()
        opens = datetime.combine(day, quiet_hours.start, tzinfo=zone)
        closes = datetime.combine(day, quiet_hours.end, tzinfo=zone)
        if (calendar is not None and not is_business_day(day, calendar)) or local >= closes:
            local = datetime.combine(day + timedelta(days=1), quiet_hours.start, tzinfo=zone)
            continue
        return max(local, opens).astimezone(UTC)
    raise AssertionError(f"no business day within {LONGEST_SEARCH.days} days of {at.isoformat()}")


def is_business_moment(at: datetime, zone: ZoneInfo, quiet_hours: QuietHours) -> bool:
    return next_business_moment(at, zone, quiet_hours) == at.astimezone(UTC)

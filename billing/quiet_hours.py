"""Business hours in the customer's time zone: when a customer-facing step may happen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from billing.policy import QuietHours

SATURDAY = 5


def next_business_moment(at: datetime, zone: ZoneInfo, quiet_hours: QuietHours) -> datetime:
    """The earliest moment at or after `at` inside business hours in `zone` (returned in UTC).

    Public holidays are not known to the policy; only weekends are skipped.
    """
    if not quiet_hours.enabled:
        return at.astimezone(UTC)
    local = at.astimezone(zone)
    for _ in range(8):
        day = local.date()
        opens = datetime.combine(day, quiet_hours.start, tzinfo=zone)
        closes = datetime.combine(day, quiet_hours.end, tzinfo=zone)
        if (quiet_hours.business_days_only and day.weekday() >= SATURDAY) or local >= closes:
            local = datetime.combine(day + timedelta(days=1), quiet_hours.start, tzinfo=zone)
            continue
        return max(local, opens).astimezone(UTC)
    raise AssertionError("a business moment exists within any eight days")


def is_business_moment(at: datetime, zone: ZoneInfo, quiet_hours: QuietHours) -> bool:
    return next_business_moment(at, zone, quiet_hours) == at.astimezone(UTC)

"""The one rule for when a bill falls due, for the customer's invoices and the partner's own bills alike."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def due_moment(due_on: date, zone: ZoneInfo, due_at: datetime | None = None) -> datetime:
    """`due_at` when the bill names an exact moment; otherwise the end of `due_on` in `zone`."""
    if due_at is not None:
        return due_at
    return datetime.combine(due_on + timedelta(days=1), time(0), tzinfo=zone)

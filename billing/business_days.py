"""Which days are business days for customer-facing steps: Monday to Friday, or China's working calendar
(public holidays off, make-up working days 调休 on) as the `chinesecalendar` package publishes it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

# A static table, imported once here: asking it a question does no I/O, so the decision core stays pure and
# the workflow sandbox (which passes this module through) can call it on every replay.
import chinese_calendar  # type: ignore[import-untyped]  # no py.typed

Calendar = Literal["CN", "weekends"]
SATURDAY = 5

# The tz database's zones for mainland China (zone.tab: CN) and their `backward` links. Hong Kong, Macau and
# Taiwan have their own public holidays.
MAINLAND_CHINA_ZONES = frozenset(
    {"Asia/Shanghai", "Asia/Urumqi", "Asia/Chongqing", "Asia/Chungking", "Asia/Harbin", "Asia/Kashgar", "PRC"}
)

# The years the package's table covers; outside them `chinese_calendar` raises NotImplementedError.
KNOWN_YEARS = range(min(chinese_calendar.holidays).year, max(chinese_calendar.holidays).year + 1)


def calendar_for(zone: ZoneInfo, configured: Calendar | None) -> Calendar:
    """The calendar a customer in `zone` gets: the configured one, else China's in mainland China."""
    if configured is not None:
        return configured
    return "CN" if zone.key in MAINLAND_CHINA_ZONES else "weekends"


def is_business_day(day: date, calendar: Calendar) -> bool:
    """In a year China's calendar does not know yet, it counts Monday to Friday, as `weekends` does."""
    if calendar == "CN":
        workday = _china_workday(day)
        if workday is not None:
            return workday
    return day.weekday() < SATURDAY


@lru_cache(maxsize=4096)
def _china_workday(day: date) -> bool | None:
    # Cached: the package scans its whole table on every call, and the core asks about the same days often.
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def unknown_years(years: Iterable[int]) -> list[int]:
    """Those of `years` China's calendar does not know, in which its business days are Monday to Friday."""
    return sorted({year for year in years if year not in KNOWN_YEARS})

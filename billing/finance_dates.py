"""Dates and moments as a finance user types them on the command line (`2026-12-20`, `2026/12/20`, `today+30`,
`+2w`, `2026-12-20 18:00`), read in the customer's time zone. Pure: the caller gives the zone and "now"."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

BareDate = Literal["start", "end"]

DAY_FORMS = "YYYY-MM-DD, YYYY/MM/DD, today, tomorrow, today+30, today-3, +30d or +2w"
MOMENT_FORMS = f"a day ({DAY_FORMS}), or a date and time such as 2026-12-20T18:00 with or without an offset"

# `today`, `tomorrow`, `yesterday`, each optionally `+N`/`-N` days (or weeks with `w`); or `+N`/`-N` alone.
_RELATIVE = re.compile(
    r"^(?:(?P<anchor>today|tomorrow|yesterday)\s*)?(?:(?P<sign>[+-])\s*(?P<count>\d{1,5})\s*(?P<unit>[dw])?)?$"
)
_ANCHORS = {"today": 0, "tomorrow": 1, "yesterday": -1}
_SLASHED = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")


class TypedDateError(ValueError):
    """What the user typed is not a day or moment this module reads; the message says what would be."""


def parse_day(text: str, today: date) -> date:
    """The calendar day `text` names; relative forms count from `today` (the customer's today)."""
    value = text.strip().lower()
    relative = _RELATIVE.match(value)
    if value and relative and (relative["anchor"] or relative["sign"]):
        offset = _ANCHORS[relative["anchor"] or "today"]
        if relative["sign"]:
            count = int(relative["count"]) * (7 if relative["unit"] == "w" else 1)
            offset += count if relative["sign"] == "+" else -count
        return today + timedelta(days=offset)
    slashed = _SLASHED.match(value)
    try:
        if slashed:
            return date(int(slashed[1]), int(slashed[2]), int(slashed[3]))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return date.fromisoformat(value)
    except ValueError as error:
        raise TypedDateError(f"{text!r} is not a real day: {error}") from None
    raise TypedDateError(f"{text!r} is not a day; write {DAY_FORMS}")


def parse_moment(text: str, zone: ZoneInfo, now: datetime, bare_date: BareDate) -> datetime:
    """The moment `text` names. A day alone is its first (`start`, 00:00) or last (`end`, 23:59:59.999999)
    moment in `zone`; a date and time without an offset is in `zone`; an explicit offset is kept."""
    if now.tzinfo is None:
        raise ValueError("now must carry its time zone")
    try:
        day = parse_day(text, now.astimezone(zone).date())
    except TypedDateError:
        day = None
    if day is not None:
        return datetime.combine(day, time.min if bare_date == "start" else time.max, tzinfo=zone)
    try:
        moment = datetime.fromisoformat(text.strip().replace("/", "-"))
    except ValueError:
        raise TypedDateError(f"{text!r} is not a date or a moment; write {MOMENT_FORMS}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def check_day(text: str) -> str:
    """`text` if it could name a day (checked against an arbitrary today); for argument parsing before the
    customer's zone is known."""
    parse_day(text, date(2000, 1, 1))
    return text


def check_moment(text: str) -> str:
    """`text` if it could name a moment; for argument parsing before the customer's zone is known."""
    parse_moment(text, ZoneInfo("UTC"), datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")), "start")
    return text

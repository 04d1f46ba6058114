"""Dates and moments as finance people type them (`2026/11/24`, `2026年11月24日`, `2026-11-24 18:00`), read
one way only: forms that mean different days in different countries (`11/05/2026`) are refused, never guessed.

One parser for the invoice import and for command-line options such as `--until`, so a date means the same
wherever an operator types it. A bare day read as a moment is either its start or its end in the customer's
zone; the end is the first instant of the next day, the moment an invoice due that day falls due
(`billing.due_dates.due_moment`).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

EXAMPLE = "2026-11-24"

# Full-width forms (Chinese input methods and Excel in a Chinese locale type them) -> ASCII; nothing else is
# folded, so no other character can turn into a digit.
_FULL_WIDTH = str.maketrans(
    {
        **{chr(0xFF10 + digit): str(digit) for digit in range(10)},
        "／": "/",
        "－": "-",
        "．": ".",
        "：": ":",
        "＋": "+",
        "\u3000": " ",
        "\u00a0": " ",
    }
)


class FinanceDateError(ValueError):
    """A date or moment that cannot be read one way only; the message says how to write it."""


def fold_full_width(text: str) -> str:
    """Full-width digits and separators as their ASCII forms, blanks trimmed."""
    return text.translate(_FULL_WIDTH).strip()


_DAY = r"(?P<year>\d{4})(?P<sep>[-/.])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})"
_CHINESE_DAY = r"(?P<cyear>\d{4})\s*年\s*(?P<cmonth>\d{1,2})\s*月\s*(?P<cday>\d{1,2})\s*[日号]"
_TIME = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,6}))?)?"
_OFFSET = r"(?P<offset>Z|[+-]\d{2}:?\d{2})"
_DATE_RE = re.compile(rf"(?:{_DAY}|{_CHINESE_DAY})")
_MOMENT_RE = re.compile(rf"(?:{_DAY}|{_CHINESE_DAY})(?:(?:\s*T\s*|\s+){_TIME}\s*{_OFFSET}?)?")
# Day and month first, year last (or a two-digit year anywhere): 11/05/2026 is 5 November in the US and
# 11 May in most of Europe.
_YEAR_LAST_RE = re.compile(r"\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}(?:[\sT].*)?")


def _day(match: re.Match[str], shown: str) -> date:
    year, month, day = (
        (match["year"], match["month"], match["day"])
        if match["year"]
        else (match["cyear"], match["cmonth"], match["cday"])
    )
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise FinanceDateError("no such day in the calendar") from None


def _refuse(shown: str, what: str = "a date") -> FinanceDateError:
    if _YEAR_LAST_RE.fullmatch(shown):
        return FinanceDateError(
            f"write the year first, e.g. {EXAMPLE}: with the year last, the month comes first in some countries "
            "and the day in others"
        )
    return FinanceDateError(f"not {what}: write it as {EXAMPLE} (or 2026/11/24, 2026年11月24日)")


def parse_date(value: object) -> date:
    """A day: a `date`, a `datetime` at midnight (what a spreadsheet's date cell holds), or text such as
    `2026-11-24`, `2026/11/24`, `2026.11.24` or `2026年11月24日` (full-width digits too)."""
    if isinstance(value, datetime):
        if value.time() != time(0) or value.tzinfo is not None:
            raise FinanceDateError(f"{value:%Y-%m-%d %H:%M} has a time of day: give the day alone, e.g. {EXAMPLE}")
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise FinanceDateError(f"not a date: write it as {EXAMPLE}")
    text = fold_full_width(value)
    match = _DATE_RE.fullmatch(text)
    if match is None:
        raise _refuse(text)
    return _day(match, text)


def parse_moment(value: object, zone: ZoneInfo, *, bare_day: Literal["start", "end"]) -> datetime:
    """A moment: ISO 8601 with an offset, or a day and a time of day in `zone` (`2026-11-24 18:00`), or a bare
    day, read as its start or its end in `zone` as `bare_day` says. A local time that the zone skips or passes
    twice (a daylight-saving change) is refused: it names no single moment."""
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value
        return _local(value, zone)
    if isinstance(value, date):
        return _bare_day(value, zone, bare_day)
    if not isinstance(value, str):
        raise FinanceDateError(f"not a date and time: write it as {EXAMPLE} 18:00 or {EXAMPLE}T18:00:00+08:00")
    text = fold_full_width(value)
    match = _MOMENT_RE.fullmatch(text)
    if match is None:
        raise _refuse(text, "a date and time")
    day = _day(match, text)
    if match["hour"] is None:
        return _bare_day(day, zone, bare_day)
    try:
        micro = int((match["fraction"] or "0").ljust(6, "0"))
        clock = time(int(match["hour"]), int(match["minute"]), int(match["second"] or 0), micro)
    except ValueError:
        raise FinanceDateError("no such time of day") from None
    if match["offset"] is None:
        return _local(datetime.combine(day, clock), zone)
    offset = match["offset"]
    if offset == "Z":
        return datetime.combine(day, clock, tzinfo=UTC)
    digits = offset[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    if delta >= timedelta(hours=24):
        raise FinanceDateError("no such offset from UTC")
    return datetime.combine(day, clock, tzinfo=timezone(delta if offset[0] == "+" else -delta))


def _bare_day(day: date, zone: ZoneInfo, bare_day: Literal["start", "end"]) -> datetime:
    start = day if bare_day == "start" else day + timedelta(days=1)
    return datetime.combine(start, time(0), tzinfo=zone)


def _local(naive: datetime, zone: ZoneInfo) -> datetime:
    moment = naive.replace(tzinfo=zone)
    other = naive.replace(tzinfo=zone, fold=1)
    shown = f"{naive:%Y-%m-%d %H:%M}"
    # In a gap both folds name a time that does not exist; in an overlap both exist, an hour apart.
    if moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise FinanceDateError(f"{shown} does not happen in {zone.key} (the clocks go forward)")
    if moment.utcoffset() != other.utcoffset():
        raise FinanceDateError(
            f"{shown} happens twice in {zone.key} (the clocks go back): add the offset, "
            f"{moment:%z} for the first or {other:%z} for the second"
        )
    return moment


# --- what a finance user types on the command line -----------------------------------------------------------
# The same days as above, plus days counted from the customer's today (`today+30`, `+2w`); a bare day is its
# start or its end as the option says, the end being the first moment of the next day, as a due day's is.

BareDate = Literal["start", "end"]

DAY_FORMS = "YYYY-MM-DD, YYYY/MM/DD, 2026年12月20日, today, tomorrow, today+30, today-3, +30d or +2w"
MOMENT_FORMS = f"a day ({DAY_FORMS}), or a date and time such as 2026-12-20T18:00 with or without an offset"

# `today`, `tomorrow`, `yesterday`, each optionally `+N`/`-N` days (or weeks with `w`); or `+N`/`-N` alone.
_RELATIVE = re.compile(
    r"^(?:(?P<anchor>today|tomorrow|yesterday)\s*)?(?:(?P<sign>[+-])\s*(?P<count>\d{1,5})\s*(?P<unit>[dw])?)?$"
)
_ANCHORS = {"today": 0, "tomorrow": 1, "yesterday": -1}


class TypedDateError(FinanceDateError):
    """What the user typed is not a day or moment this module reads; the message says what would be."""


def _relative_day(text: str, today: date) -> date | None:
    value = text.strip().lower()
    relative = _RELATIVE.match(value)
    if not (value and relative and (relative["anchor"] or relative["sign"])):
        return None
    offset = _ANCHORS[relative["anchor"] or "today"]
    if relative["sign"]:
        count = int(relative["count"]) * (7 if relative["unit"] == "w" else 1)
        offset += count if relative["sign"] == "+" else -count
    return today + timedelta(days=offset)


def parse_day(text: str, today: date) -> date:
    """The calendar day `text` names; relative forms count from `today` (the customer's today)."""
    relative = _relative_day(text, today)
    if relative is not None:
        return relative
    try:
        return parse_date(text)
    except FinanceDateError as error:
        raise TypedDateError(f"{text!r}: {error}; write {DAY_FORMS}") from None


def parse_typed_moment(text: str, zone: ZoneInfo, now: datetime, bare_date: BareDate) -> datetime:
    """The moment `text` names. A day alone is its first moment (`start`) or its end (`end`: the first moment
    of the next day) in `zone`; a date and time without an offset is in `zone`; an explicit offset is kept."""
    if now.tzinfo is None:
        raise ValueError("now must carry its time zone")
    relative = _relative_day(text, now.astimezone(zone).date())
    if relative is not None:
        return _bare_day(relative, zone, bare_date)
    try:
        return parse_moment(text, zone, bare_day=bare_date)
    except FinanceDateError as error:
        raise TypedDateError(f"{text!r}: {error}; write {MOMENT_FORMS}") from None


def check_day(text: str) -> str:
    """`text` if it could name a day (checked against an arbitrary today); for argument parsing before the
    customer's zone is known."""
    parse_day(text, date(2000, 1, 1))
    return text


def check_moment(text: str) -> str:
    """`text` if it could name a moment; for argument parsing before the customer's zone is known."""
    parse_typed_moment(text, ZoneInfo("UTC"), datetime(2000, 1, 1, tzinfo=UTC), "start")
    return text

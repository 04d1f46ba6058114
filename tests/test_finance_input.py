"""The shared readers of what finance people type: dates and moments (`billing.finance_dates`) and amounts
(`billing.finance_amounts`); every form that could be read two ways is refused, never guessed."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing.finance_amounts import AmountError, read_amount
from billing.finance_dates import FinanceDateError, parse_date, parse_moment

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-24",
        "2026/11/24",
        "2026.11.24",
        "2026年11月24日",
        "２０２６年１１月２４日",
        "２０２６／１１／２４",
        " 2026-11-24 ",
    ],
)
def test_year_first_dates_in_every_common_spelling_are_one_day(text: str) -> None:
    assert parse_date(text) == date(2026, 11, 24)


def test_a_date_cell_is_its_day_and_a_single_digit_month_is_fine() -> None:
    assert parse_date(datetime(2026, 11, 24)) == date(2026, 11, 24)
    assert parse_date("2026/1/5") == date(2026, 1, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "11/24/2026",
            "write the year first, e.g. 2026-11-24: with the year last, the month comes first in some countries "
            "and the day in others",
        ),
        (
            "24/11/2026",
            "write the year first, e.g. 2026-11-24: with the year last, the month comes first in some countries "
            "and the day in others",
        ),
        (
            "24.11.2026",
            "write the year first, e.g. 2026-11-24: with the year last, the month comes first in some countries "
            "and the day in others",
        ),
        ("2026-02-30", "no such day in the calendar"),
        ("2026-11/24", "not a date: write it as 2026-11-24 (or 2026/11/24, 2026年11月24日)"),
        ("20261124", "not a date: write it as 2026-11-24 (or 2026/11/24, 2026年11月24日)"),
    ],
)
def test_dates_that_could_be_read_two_ways_or_not_at_all_are_refused(text: str, message: str) -> None:
    with pytest.raises(FinanceDateError) as refused:
        parse_date(text)
    assert str(refused.value) == message


def test_a_date_cell_with_a_time_of_day_is_not_a_day() -> None:
    with pytest.raises(FinanceDateError, match="2026-11-24 18:00 has a time of day"):
        parse_date(datetime(2026, 11, 24, 18, 0))


def test_a_bare_day_is_its_start_or_its_end_in_the_customers_zone() -> None:
    assert parse_moment("2026-12-20", SHANGHAI, bare_day="start") == datetime(2026, 12, 20, tzinfo=SHANGHAI)
    # The end of a day is the first moment of the next, as for a due date.
    assert parse_moment("2026-12-20", SHANGHAI, bare_day="end") == datetime(2026, 12, 21, tzinfo=SHANGHAI)
    assert parse_moment("2026年12月20日", BERLIN, bare_day="end") == datetime(2026, 12, 21, tzinfo=BERLIN)


def test_a_local_time_is_in_the_customers_zone_and_an_offset_is_kept() -> None:
    assert parse_moment("2026/12/20 18:00", SHANGHAI, bare_day="end") == datetime(2026, 12, 20, 18, tzinfo=SHANGHAI)
    assert parse_moment(datetime(2026, 12, 20, 18), BERLIN, bare_day="end") == datetime(2026, 12, 20, 18, tzinfo=BERLIN)
    moment = parse_moment("2026-12-20T18:00:00+08:00", BERLIN, bare_day="end")
    assert moment == datetime(2026, 12, 20, 11, tzinfo=BERLIN) and moment.utcoffset() is not None


def test_a_local_time_the_clocks_skip_or_pass_twice_is_refused() -> None:
    with pytest.raises(FinanceDateError) as skipped:
        parse_moment("2026-03-29 02:30", BERLIN, bare_day="end")
    assert str(skipped.value) == "2026-03-29 02:30 does not happen in Europe/Berlin (the clocks go forward)"
    with pytest.raises(FinanceDateError) as twice:
        parse_moment("2026-10-25 02:30", BERLIN, bare_day="end")
    assert str(twice.value) == (
        "2026-10-25 02:30 happens twice in Europe/Berlin (the clocks go back): add the offset, +0200 for the first "
        "or +0100 for the second"
    )
    assert parse_moment("2026-10-25 02:30+0100", BERLIN, bare_day="end").utcoffset() is not None


@pytest.mark.parametrize(
    ("value", "amount", "currency"),
    [
        ("8,800.00", "8800.00", None),
        ("8,800", "8800", None),
        ("1,234,567.89", "1234567.89", None),
        ("8 800.00", "8800.00", None),
        ("８，８００．００", "8800.00", None),
        ("CNY 8,800.00", "8800.00", "CNY"),
        ("8800 RMB", "8800", "CNY"),
        ("人民币8800.00", "8800.00", "CNY"),
        ("¥8,800", "8800", None),
        (8800, "8800", None),
        (1234.5600000000001, "1234.56", None),  # a formula's cached double: Excel shows 15 digits
    ],
)
def test_amounts_as_finance_files_write_them(value: object, amount: str, currency: str | None) -> None:
    written = read_amount(value)
    assert (written.amount, written.currency) == (Decimal(amount), currency)


def test_yen_or_yuan_symbols_only_agree_with_a_stated_currency() -> None:
    assert read_amount("¥880").allows("CNY") and read_amount("¥880").allows("JPY")
    assert not read_amount("¥880").allows("USD")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8.800,00", "use a dot for decimals, e.g. 8800.00"),
        ("8 800,00", "use a dot for decimals, e.g. 8800.00"),
        ("8,80", "use a dot for decimals, e.g. 8.80"),
        ("1.234.567", "use a dot for decimals only, with no dots between thousands, e.g. 8800.00"),
        ("1,23,456.00", "thousands separators go every three digits, e.g. 1,234,567.00"),
        ("8'800.00", "no apostrophes between thousands: write it as 8800.00 or 8,800.00"),
        ("¥ 1 CNY", "give the currency once, e.g. CNY 8800.00"),
        ("٨٨٠٠", "not an amount: write it as 8800.00 (commas between thousands are fine)"),
        ("8800²", "not an amount: write it as 8800.00 (commas between thousands are fine)"),
        ("1e3", "not an amount: write it as 8800.00 (commas between thousands are fine)"),
        (datetime(2026, 11, 24), "a date or time, not an amount: format the column as numbers or text"),
    ],
)
def test_amounts_that_could_be_read_two_ways_are_refused(value: object, message: str) -> None:
    with pytest.raises(AmountError) as refused:
        read_amount(value)
    assert str(refused.value) == message

"""Amounts and dates as readers of a notice expect them: `¥1,234.50`, `2026年11月24日`, `24 Nov 2026`."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.models import Locale
from billing.money import Money, minor_units

# Month names are spelled out here rather than taken from strftime("%b"), which follows the process locale.
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_amount(amount: Decimal, currency: str) -> str:
    """The digits alone, grouped by thousands, with the currency's minor units: `1,234.50`."""
    places = minor_units(currency)
    return format(abs(amount).quantize(Decimal(1).scaleb(-places)), f",.{places}f")


def format_money(money: Money, locale: Locale) -> str:
    """`¥1,234.50` for CNY in both locales (how Chinese invoices print it), `USD 1,234.50` otherwise."""
    digits = format_amount(money.amount, money.currency)
    sign = "-" if money.amount < 0 else ""
    if money.currency == "CNY":
        return f"{sign}¥{digits}"
    return f"{sign}{money.currency} {digits}"


def format_date(value: date, locale: Locale) -> str:
    """`2026年11月24日` in zh-CN, `24 Nov 2026` in en-US."""
    if locale == "zh-CN":
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value.day} {_EN_MONTHS[value.month - 1]} {value.year}"


def format_datetime(value: datetime, locale: Locale, time_zone: str) -> str:
    """A moment in the reader's time zone: `2026年11月24日 18:00 (Asia/Shanghai)`."""
    local = value.astimezone(ZoneInfo(time_zone))
    return f"{format_date(local.date(), locale)} {local:%H:%M} ({time_zone})"

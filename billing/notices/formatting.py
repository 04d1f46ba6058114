"""Amounts, dates and durations as readers expect them: `¥1,234.50`, `人民币1,234.50元`, `2026年11月24日`,
`24 Nov 2026`."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo

from billing.models import Locale
from billing.money import Money, minor_units

# Month names are spelled out here rather than taken from strftime("%b"), which follows the process locale.
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# The names Chinese contracts and bank forms write before an amount; the yuan's unit 元 also follows it.
_ZH_CURRENCY_NAMES = {
    "CNY": "人民币",
    "USD": "美元",
    "HKD": "港元",
    "EUR": "欧元",
    "JPY": "日元",
    "KRW": "韩元",
    "TWD": "新台币",
}


@cache
def _minor_unit(currency: str) -> tuple[Decimal, str]:
    """The currency's smallest unit and the format spec of its amounts (`0.01`, `,.2f`)."""
    places = minor_units(currency)
    return Decimal(1).scaleb(-places), f",.{places}f"


def format_amount(amount: Decimal, currency: str) -> str:
    """The digits alone, grouped by thousands, with the currency's minor units: `1,234.50`."""
    unit, spec = _minor_unit(currency)
    return format(abs(amount).quantize(unit), spec)


def format_money(money: Money, locale: Locale) -> str:
    """`¥1,234.50` for CNY in both locales (how Chinese invoices print it), `USD 1,234.50` otherwise."""
    return format_amount_in(money.amount, money.currency, locale)


def format_amount_in(amount: Decimal, currency: str, locale: Locale) -> str:
    """`format_money` of an amount and its currency, for a report of many amounts read off the books (a `Money`
    each would validate again what the ledger already holds valid)."""
    digits = format_amount(amount, currency)
    sign = "-" if amount < 0 else ""
    if currency == "CNY":
        return f"{sign}¥{digits}"
    return f"{sign}{currency} {digits}"


def format_formal_money(money: Money) -> str:
    """The formal Chinese form of an amount, as contracts and bank forms write it: `人民币12,345.60元`,
    `美元1,234.50`; a currency without a Chinese name here keeps its code, `SGD 1,234.50`."""
    digits = format_amount(money.amount, money.currency)
    sign = "-" if money.amount < 0 else ""
    name = _ZH_CURRENCY_NAMES.get(money.currency)
    if name is None:
        return f"{money.currency} {sign}{digits}"
    return f"{name}{sign}{digits}{'元' if money.currency == 'CNY' else ''}"


def format_date(value: date, locale: Locale) -> str:
    """`2026年11月24日` in zh-CN, `24 Nov 2026` in en-US."""
    if locale == "zh-CN":
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value.day} {_EN_MONTHS[value.month - 1]} {value.year}"


def format_datetime(value: datetime, locale: Locale, time_zone: str) -> str:
    """A moment in the reader's time zone: `2026年11月24日 18:00（Asia/Shanghai）`, `24 Nov 2026 18:00 (Asia/Shanghai)`.

    Chinese text takes full-width brackets, as the notices' other asides (`（账单 INV-…）`) do."""
    local = value.astimezone(ZoneInfo(time_zone))
    if locale == "zh-CN":
        return f"{format_date(local.date(), locale)} {local:%H:%M}（{time_zone}）"
    return f"{format_date(local.date(), locale)} {local:%H:%M} ({time_zone})"


def format_duration(value: timedelta, locale: Locale) -> str:
    """A policy offset in words, sign dropped: `3天` / `3 days`, `1天12小时` / `1 day 12 hours`, `30秒`."""
    seconds = int(abs(value).total_seconds())
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    parts = [
        (days, "天", "day"),
        (hours, "小时", "hour"),
        (minutes, "分钟", "minute"),
        (seconds, "秒", "second"),
    ]
    present = [(count, zh, en) for count, zh, en in parts if count] or [(0, "天", "day")]
    if locale == "zh-CN":
        return "".join(f"{count}{zh}" for count, zh, _ in present)
    return " ".join(f"{count} {en}{'' if count == 1 else 's'}" for count, _, en in present)

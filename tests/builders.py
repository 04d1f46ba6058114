"""What many tests build: the customers' default zone, money in CNY. Fast-tier safe (no Temporal, no SQL)."""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.money import Money

SHANGHAI = ZoneInfo("Asia/Shanghai")  # customers' default zone (CONTRACT.md)


def cny(amount: str | int | Decimal) -> Money:
    return Money.of(amount, "CNY")

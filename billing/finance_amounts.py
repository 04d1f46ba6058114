"""Amounts as finance files write them (`8,800.00`, `CNY 8,800.00`, `¥8800`, `８，８００.００`, a spreadsheet's
number cell), read one way only: a form that means one amount in China and another in Germany (`8.800,00`,
`8,80`) is refused, never guessed, so no amount is ever read a thousand times too large or too small.

The rules: a dot marks decimals; commas (or spaces) group thousands, every three digits; a currency code, `RMB`
or `人民币` beside the amount states its currency; `¥` and `元` only agree with a currency stated elsewhere
(`¥` is the yuan and the yen alike). Bounds and minor units are `billing.money.Money`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal

from billing.finance_dates import fold_full_width

# Excel keeps 15 significant digits (https://learn.microsoft.com/en-us/office/troubleshoot/excel/floating-point-
# arithmetic-inaccurate-result); a formula's cached result can carry a binary artefact in the 16th and 17th
# (1234.5600000000001), which is no part of the amount the cell shows.
EXCEL_DIGITS = 15

# What a written marker says about the currency: a set of the currencies it may stand for.
_STATING = {"RMB": "CNY", "人民币": "CNY"}
_SYMBOLS: dict[str, frozenset[str]] = {"¥": frozenset({"CNY", "JPY"}), "元": frozenset({"CNY", "HKD", "TWD"})}

_FULL_WIDTH_MONEY = str.maketrans({"，": ",", "￥": "¥", "\u2009": " ", "\u202f": " "})
_MARKER = r"[A-Za-z]{3}|人民币|¥|元"
_AMOUNT_RE = re.compile(rf"(?P<before>{_MARKER})?\s*(?P<number>[-+]?[0-9][0-9.,' ]*)\s*(?P<after>{_MARKER})?")
_GROUPED = re.compile(r"[0-9]{1,3}(?P<sep>[, ])[0-9]{3}(?:(?P=sep)[0-9]{3})*")


class AmountError(ValueError):
    """An amount that cannot be read one way only; the message says how to write it."""


@dataclass(frozen=True)
class WrittenAmount:
    """An amount as the file wrote it: the number, the currency it states (if any), the currencies a symbol
    allows, how many decimals were written, and whether it had commas between thousands but no decimal point
    (`8,800`: unambiguous in a file that writes decimals with a dot, ambiguous in one that uses commas)."""

    amount: Decimal
    currency: str | None = None
    symbol: str | None = None
    decimals: int = 0
    comma_grouped_whole: bool = False

    def allows(self, currency: str) -> bool:
        return self.symbol is None or currency in _SYMBOLS[self.symbol]


def decimal_comma(text: str) -> bool:
    """Whether the text writes decimals with a comma (`8.800,00`, `8,80`): such a file's `8,800` is ambiguous."""
    number = fold_full_width(text).translate(_FULL_WIDTH_MONEY)
    match = _AMOUNT_RE.fullmatch(number)
    return match is not None and _comma_decimals(match["number"].strip().lstrip("+-"))


def _comma_decimals(number: str) -> bool:
    if "," not in number:
        return False
    if "." in number:
        return number.rfind(",") > number.rfind(".")
    # One comma and other than three digits after it (8,80 or 1234,5): no thousands separator writes that.
    return number.count(",") == 1 and len(number.partition(",")[2]) != 3


def read_amount(value: object) -> WrittenAmount:
    """The amount a cell or a text holds; `AmountError` says why it cannot be read."""
    if isinstance(value, bool):
        raise AmountError("not an amount: write it as 8800.00")
    if isinstance(value, int):
        return WrittenAmount(Decimal(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AmountError("not an amount: write it as 8800.00")
        amount = Decimal(format(value, f".{EXCEL_DIGITS}g"))
        return WrittenAmount(amount, decimals=max(0, -int(amount.normalize().as_tuple().exponent)))
    if isinstance(value, Decimal):
        return WrittenAmount(value, decimals=max(0, -int(value.as_tuple().exponent)))
    if isinstance(value, datetime | date | time):
        raise AmountError("a date or time, not an amount: format the column as numbers or text")
    if not isinstance(value, str):
        raise AmountError("not an amount: write it as 8800.00")
    return _read_text(value)


def _read_text(text: str) -> WrittenAmount:
    folded = fold_full_width(text).translate(_FULL_WIDTH_MONEY)
    match = _AMOUNT_RE.fullmatch(folded)
    if match is None:
        raise AmountError("not an amount: write it as 8800.00 (commas between thousands are fine)")
    before, after = match["before"], match["after"]
    if before and after:
        raise AmountError("give the currency once, e.g. CNY 8800.00")
    marker = before or after
    currency = symbol = None
    if marker in _SYMBOLS:
        symbol = marker
    elif marker is not None:
        currency = _STATING.get(marker.upper(), marker.upper())
    written = match["number"].strip()
    sign = "-" if written.startswith("-") else ""
    number = written.lstrip("+-")
    if "'" in number:
        raise AmountError("no apostrophes between thousands: write it as 8800.00 or 8,800.00")
    if _comma_decimals(number):
        whole, _, fraction = number.rpartition(",")
        example = whole.replace(".", "").replace(",", "").replace(" ", "") + "." + fraction
        raise AmountError(f"use a dot for decimals, e.g. {example}")
    whole, dot, fraction = number.partition(".")
    if "." in fraction:
        raise AmountError("use a dot for decimals only, with no dots between thousands, e.g. 8800.00")
    if fraction and not fraction.isdigit():
        raise AmountError("only digits after the decimal point, e.g. 8800.00")
    grouped = "," in whole or " " in whole
    if grouped and _GROUPED.fullmatch(whole) is None:
        raise AmountError("thousands separators go every three digits, e.g. 1,234,567.00")
    digits = whole.replace(",", "").replace(" ", "")
    if not digits or (dot and not fraction):
        raise AmountError("not an amount: write it as 8800.00")
    return WrittenAmount(
        Decimal(f"{sign}{digits}.{fraction}" if fraction else f"{sign}{digits}"),
        currency=currency,
        symbol=symbol,
        decimals=len(fraction),
        comma_grouped_whole="," in whole and not dot,
    )

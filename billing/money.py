"""Money: a `Decimal` amount with its ISO 4217 currency. Never a float."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, field_serializer, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from billing.refusals import Refused

# Minor units of the currencies a partner of 21Vianet plausibly bills in. Anything else gets two.
_MINOR_UNITS: dict[str, int] = {"JPY": 0, "KRW": 0, "TWD": 2, "CNY": 2, "HKD": 2, "USD": 2, "EUR": 2}


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


# The largest amount the engine books, either side of zero: just under a trillion in any currency (999,999,999,999
# in one without minor units). No invoice or payment of a partner comes near it, and it fits the ledger's
# NUMERIC(18, 2) columns (`billing/ledger/schema.py`, `Amount`) with four digits to spare.
MAX_AMOUNT = Decimal("999999999999.99")


@cache  # every sum and difference checks the bound: the decision core asks this thousands of times a decision
def largest_amount(currency: str) -> Decimal:
    """`MAX_AMOUNT` in the currency's minor units."""
    return MAX_AMOUNT.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_DOWN)


# What the JSON schemas promise for `amount`: plain decimal notation with at most twelve digits before the point
# (leading zeros aside), as `MAX_AMOUNT` allows; the model also takes exponents.
_DECIMAL_IN = r"^[+-]?(0*\d{1,12}(\.\d*)?|\.\d+)$"
_DECIMAL_OUT = r"^-?\d{1,12}(\.\d+)?$"


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


class AmountOutOfRange(Refused):
    """A sum or difference of amounts beyond `MAX_AMOUNT`: refused, never clamped.

    A `Refused`, so a message whose arithmetic leaves the bound (a dispute on top of disputes of a whole invoice
    of the largest amount) is refused like any other impossible message instead of failing the workflow."""

    def __init__(self, what: str, amount: Decimal, currency: str) -> None:
        super().__init__(f"{what} {amount:,} {currency} {_beyond(amount, currency)}")
        self.amount = amount
        self.currency = currency


def _beyond(amount: Decimal, currency: str) -> str | None:
    """Why `amount` is more than the engine books, or None when it is within the bound."""
    largest = largest_amount(currency)
    if amount > largest:
        return f"is larger than the largest amount this engine books ({largest:,} {currency})"
    if amount < -largest:
        return f"is smaller than the smallest amount this engine books ({-largest:,} {currency})"
    return None


def _shown(amount: Decimal) -> str:
    """The amount for a refusal: as given, unless it is too long to read (ten thousand digits fit in a Decimal)."""
    text = str(amount)
    return text if len(text) <= 32 else f"{amount:.6E}"


class Money(BaseModel):
    """An amount of money, e.g. `{"amount": "1234.50", "currency": "CNY"}`.

    The amount may arrive as a decimal string or a JSON number; it is kept as `Decimal` quantized to the
    currency's minor units, and an amount with more decimals than the currency has is refused rather than
    rounded (nobody should lose a fen to rounding they did not ask for). So is an amount beyond
    999,999,999,999.99 either side of zero, the largest this engine books.
    """

    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_not_float_artefact(cls, value: Any) -> Any:
        # Every bad amount is a ValueError with a sentence (pydantic reports it as a ValidationError), never
        # `decimal.InvalidOperation` or another exception a message parser would not expect.
        if isinstance(value, bool):
            raise ValueError('amount must be a decimal string such as "1234.50"')
        if isinstance(value, float):
            # A JSON number arrives as float: its shortest repr is what the sender wrote.
            value = Decimal(repr(value))
        elif isinstance(value, str):
            try:
                value = Decimal(value.strip())
            except InvalidOperation:
                raise ValueError(f"amount {value[:40]!r} is not a decimal number") from None
        elif isinstance(value, int):
            value = Decimal(value)
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError(f'amount must be a finite number such as "1234.50", not {value}')
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        code = value.strip().upper()
        if len(code) != 3 or not code.isalpha() or not code.isascii():
            raise ValueError(f"currency {value!r} is not an ISO 4217 code such as CNY")
        return code

    @model_validator(mode="after")
    def _quantize(self) -> Money:
        # The bound first: quantizing an amount of more digits than the decimal context holds (28) would raise
        # `decimal.InvalidOperation`, which is no refusal.
        beyond = _beyond(self.amount, self.currency)
        if beyond is not None:
            raise ValueError(f"amount {_shown(self.amount)} {beyond}")
        places = minor_units(self.currency)
        exponent = Decimal(1).scaleb(-places)
        quantized = self.amount.quantize(exponent)
        if quantized != self.amount:
            raise ValueError(f"amount {_shown(self.amount)} has more than {places} decimals for {self.currency}")
        object.__setattr__(self, "amount", quantized)
        return self

    @field_serializer("amount")
    def _amount_as_string(self, amount: Decimal) -> str:
        return str(amount)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Say what the contract says: a decimal string in (a JSON number accepted), always a string out.

        Pydantic's default for `Decimal` reads as "number or any string" on input and hides the minor units."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        properties = schema["properties"]
        if handler.mode == "validation":
            properties["amount"] = {
                "title": "Amount",
                "description": 'A decimal string such as "1234.50" (a JSON number is accepted too), with no more '
                "decimals than the currency has (2 for CNY, 0 for JPY and KRW): more are refused, never rounded. "
                f"At most {MAX_AMOUNT:,} either side of zero: a larger amount is refused.",
                "anyOf": [
                    {"type": "string", "pattern": _DECIMAL_IN},
                    {"type": "number", "minimum": float(-MAX_AMOUNT), "maximum": float(MAX_AMOUNT)},
                ],
                "examples": ["1234.50"],
            }
            properties["currency"] |= {
                "description": "ISO 4217 code such as CNY (taken case-insensitively, kept upper case).",
                "pattern": "^[A-Za-z]{3}$",
                "examples": ["CNY"],
            }
        else:
            properties["amount"] |= {
                "description": 'A decimal string with exactly the currency\'s minor units, e.g. "1234.50", '
                f"at most {MAX_AMOUNT:,} either side of zero.",
                "pattern": _DECIMAL_OUT,
                "examples": ["1234.50"],
            }
            properties["currency"] |= {
                "description": "ISO 4217 code, upper case.",
                "pattern": "^[A-Z]{3}$",
                "examples": ["CNY"],
            }
        schema["examples"] = [{"amount": "1234.50", "currency": "CNY"}]
        return schema

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        return cls(amount=amount, currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        zero = _ZEROS.get(currency)
        if zero is None:
            zero = cls(amount=Decimal(0), currency=currency)
            if zero.currency == currency:  # the upper-case code: at most one per ISO 4217 code is kept
                _ZEROS[currency] = zero
        return zero

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def _within_bound(self, what: str, amount: Decimal) -> Money:
        if _beyond(amount, self.currency) is not None:
            raise AmountOutOfRange(what, amount, self.currency)
        return self._exact(amount)

    def _exact(self, amount: Decimal) -> Money:
        """A result of arithmetic on amounts of this currency, within the bound, built without validating it again:
        every validated amount has exactly the currency's minor units as its exponent, and so have their sums,
        differences and negations (twelve digits and the minor units are far inside the decimal context's 28),
        so validation would return the very same value. The decision core adds and compares amounts thousands
        of times per decision; validating each result cost most of its time."""
        return Money.model_construct(amount=amount, currency=self.currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        # Adding a zero to an amount that is not zero gives that very amount (same exponent: see `_exact`);
        # sums start from zero and most disputed amounts are zero, so this is most of the core's additions.
        if not other.amount and self.amount:
            return self
        if not self.amount and other.amount:
            return other
        return self._within_bound("the sum", self.amount + other.amount)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        if not other.amount and self.amount:
            return self
        return self._within_bound("the difference", self.amount - other.amount)

    def __neg__(self) -> Money:
        return self._exact(-self.amount)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    @property
    def is_zero(self) -> bool:
        return self.amount == 0

    @property
    def is_positive(self) -> bool:
        return self.amount > 0

    def min(self, other: Money) -> Money:
        return self if self <= other else other

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


# Money.zero's: one frozen zero per currency code, shared (nothing can change a frozen Money).
_ZEROS: dict[str, Money] = {}


def total(amounts: list[Money], currency: str) -> Money:
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result

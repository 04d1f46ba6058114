"""Money: a `Decimal` amount with its ISO 4217 currency. Never a float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, field_serializer, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Minor units of the currencies a partner of 21Vianet plausibly bills in. Anything else gets two.
_MINOR_UNITS: dict[str, int] = {"JPY": 0, "KRW": 0, "TWD": 2, "CNY": 2, "HKD": 2, "USD": 2, "EUR": 2}


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


# What the JSON schemas promise for `amount`: plain decimal notation (the model also takes exponents).
_DECIMAL_IN = r"^[+-]?(\d+(\.\d*)?|\.\d+)$"
_DECIMAL_OUT = r"^-?\d+(\.\d+)?$"


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


class Money(BaseModel):
    """An amount of money, e.g. `{"amount": "1234.50", "currency": "CNY"}`.

    The amount may arrive as a decimal string or a JSON number; it is kept as `Decimal` quantized to the
    currency's minor units, and an amount with more decimals than the currency has is refused rather than
    rounded (nobody should lose a fen to rounding they did not ask for).
    """

    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_not_float_artefact(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError('amount must be a decimal string such as "1234.50"')
        if isinstance(value, float):
            # A JSON number arrives as float: its shortest repr is what the sender wrote.
            return Decimal(repr(value))
        if isinstance(value, str):
            try:
                return Decimal(value.strip())
            except InvalidOperation:
                raise ValueError(f"amount {value!r} is not a decimal number") from None
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
        if not self.amount.is_finite():
            raise ValueError("amount must be a finite number")
        places = minor_units(self.currency)
        exponent = Decimal(1).scaleb(-places)
        quantized = self.amount.quantize(exponent)
        if quantized != self.amount:
            raise ValueError(f"amount {self.amount} has more than {places} decimals for {self.currency}")
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
                "decimals than the currency has (2 for CNY, 0 for JPY and KRW): more are refused, never rounded.",
                "anyOf": [{"type": "string", "pattern": _DECIMAL_IN}, {"type": "number"}],
                "examples": ["1234.50"],
            }
            properties["currency"] |= {
                "description": "ISO 4217 code such as CNY (taken case-insensitively, kept upper case).",
                "pattern": "^[A-Za-z]{3}$",
                "examples": ["CNY"],
            }
        else:
            properties["amount"] |= {
                "description": 'A decimal string with exactly the currency\'s minor units, e.g. "1234.50".',
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
        return cls(amount=Decimal(str(amount)), currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=Decimal(0), currency=currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __neg__(self) -> Money:
        return Money(amount=-self.amount, currency=self.currency)

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


def total(amounts: list[Money], currency: str) -> Money:
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result

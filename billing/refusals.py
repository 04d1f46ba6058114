"""How the engine says no: `Refused` (nothing was changed, and here is why), and the one way to say what is
wrong with a message: `field: what is wrong`, never the value (it may be personal data).

A rule that concerns the whole message (an invoice due before it was issued) has no field, and reads as the
sentence alone rather than behind an empty location.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import ValidationError


class Refused(ValueError):
    """The message or action is impossible in the account's current state; nothing was changed."""

    def __init__(self, message: str, reference: str | None = None) -> None:
        super().__init__(message)
        self.reference = reference  # the id the refused message carried, for the status's `rejected`


@dataclass(frozen=True)
class Unreadable:
    """A message payload that is no JSON value, or not a single one: rejected with this reason."""

    reason: str


def problems(error: ValidationError, names: Mapping[str, str] | None = None, skip: Iterable[str] = ()) -> list[str]:
    """Each problem in the operator's words; `names` renames locations (`amount.amount` -> `amount`)."""
    renamed = names or {}
    skipped = set(skip)
    found = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        if where in skipped:
            continue
        where = renamed.get(where, where)
        message = "missing" if detail["type"] == "missing" else detail["msg"].removeprefix("Value error, ")
        message = message.removeprefix(f"{where} ") if where else message  # "amount: 12.345 has ...", once
        found.append(f"{where}: {message}" if where else message)
    return found


def reason(error: ValidationError) -> str:
    """All problems in one line, for a refusal or a rejected message."""
    return "; ".join(problems(error))

"""The collections policy: the dunning ladder as data a finance team can read, loaded from TOML."""

from __future__ import annotations

import itertools
import tomllib
from datetime import time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from billing.business_days import Calendar
from billing.models import FrozenMessage
from billing.money import Money

# Partner Center operated by 21Vianet deletes a subscription's data this long after it was suspended.
DATA_DELETION_AFTER_SUSPENSION = timedelta(days=60)


class PolicyError(ValueError):
    """The policy file is unreadable or says something impossible. The message names the file and the key."""


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(PolicyModel):
    """Customer-facing steps wait for the customer's local business hours.

    With `business_days_only`, `calendar` says which days are business days: `"CN"` China's working calendar
    (public holidays off, make-up working days 调休 on) for every customer, `"weekends"` Monday to Friday for
    every customer. Without the key (the default), customers in mainland China's time zones get China's
    calendar and everyone else Monday to Friday. In a year China's calendar does not know yet, its business
    days are Monday to Friday.
    """

    enabled: bool = True
    start: time = time(9, 0)
    end: time = time(18, 0)
    business_days_only: bool = True
    calendar: Calendar | None = None

    @model_validator(mode="after")
    def _start_before_end(self) -> QuietHours:
        if self.enabled and self.start >= self.end:
            raise ValueError(f"start {self.start:%H:%M} must be before end {self.end:%H:%M}")
        return self


class DisputeRules(PolicyModel):
    grace_after_uphold: timedelta = timedelta(days=7)
    remind_desk_after: timedelta = timedelta(days=5)


class EscalationRules(PolicyModel):
    chase_after: timedelta = timedelta(days=1)


def _exact_decimal(value: Any, what: str, example: str) -> Any:
    """A TOML float is binary: refuse it, so that amounts and rates are exactly what was written."""
    if isinstance(value, float):
        raise ValueError(f'write the {what} as a string, e.g. "{example}", so it is exact')
    return value


LateChargeBasis = Literal["invoice_amount", "outstanding"]


class PartnerPayableRules(PolicyModel):
    """When the partner's finance team hears about a bill 21Vianet issued to the partner (`PartnerPayable`),
    and how the engine estimates what paying it late costs.

    `reminders` count from `remind_at` on the due date in the partner's time zone (negative or zero: on or
    before it); once overdue, a reminder follows every `overdue_every` until the bill is paid.

    The late charge defaults to 21Vianet's published term: "a finance charge of 1.5% of the invoice amount per
    month or the legal maximum, whichever is less" (https://msdn.microsoft.com/en-us/partner-china/billing,
    "Payment terms"). The engine cannot know the legal maximum: where it is lower, set it as the rate or as a
    cap. `late_charge_basis` "outstanding" charges what is still unpaid each day instead of the invoice amount;
    the caps bound the whole charge of an invoice, as a share of its amount or as an amount (which applies to
    invoices in its own currency only). No cap by default. It is an estimate: 21Vianet's statement is what is
    owed.
    """

    reminders: tuple[timedelta, ...] = (timedelta(days=-7), timedelta(days=-1))
    overdue_every: timedelta = timedelta(days=7)
    remind_at: time = time(9, 0)
    late_charge_percent_per_month: Decimal = Decimal("1.5")
    late_charge_basis: LateChargeBasis = "invoice_amount"
    late_charge_cap_percent: Decimal | None = None  # of the invoice amount
    late_charge_cap_amount: Money | None = None

    @property
    def late_charge_rate_per_month(self) -> Decimal:
        """The rate as a fraction: 0.015 for 1.5%."""
        return self.late_charge_percent_per_month / 100

    @field_validator("late_charge_percent_per_month", "late_charge_cap_percent", mode="before")
    @classmethod
    def _no_float_percent(cls, value: Any) -> Any:
        return _exact_decimal(value, "percentage", "1.5")

    @field_validator("late_charge_percent_per_month")
    @classmethod
    def _a_percentage(cls, value: Decimal) -> Decimal:
        if not Decimal(0) <= value <= Decimal(100):
            raise ValueError('must be a percentage between "0" and "100", such as "1.5" for 1.5% a month')
        return value

    @field_validator("late_charge_cap_percent")
    @classmethod
    def _cap_percent_positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise ValueError('must be a positive percentage of the invoice amount, such as "10"')
        return value

    @field_validator("late_charge_cap_amount")
    @classmethod
    def _cap_amount_positive(cls, value: Money | None) -> Money | None:
        if value is not None and not value.is_positive:
            raise ValueError("must be a positive amount")
        return value

    @field_validator("reminders")
    @classmethod
    def _reminders_before_due(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        if list(value) != sorted(set(value)):
            raise ValueError("reminders must be distinct and in ascending order")
        if any(offset > timedelta(0) for offset in value):
            raise ValueError("reminders come on or before the due date (e.g. -P7D); overdue_every covers the rest")
        return value

    @field_validator("overdue_every")
    @classmethod
    def _overdue_every_positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration such as P7D")
        return value


class CollectionsPolicy(PolicyModel):
    """Offsets count from the moment the oldest unpaid invoice fell due (negative: before it)."""

    currency: str = "CNY"
    minimum_amount_to_suspend: Decimal = Decimal("100.00")
    reminders: tuple[timedelta, ...] = (timedelta(days=-3), timedelta(days=1), timedelta(days=7))
    final_notice: timedelta = timedelta(days=14)
    suspend_after: timedelta = timedelta(days=21)
    data_deletion_warnings: tuple[timedelta, ...] = (timedelta(days=30), timedelta(days=50))
    # The least time between two dunning notices (reminders, final notice, data deletion warnings), so that a
    # catch-up after an outage or a late start does not send them in one burst. Not set: half the shortest
    # distance between two rungs of the ladder (2 days for the default ladder, seconds for a test ladder).
    minimum_notice_gap: timedelta | None = None
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    dispute: DisputeRules = Field(default_factory=DisputeRules)
    escalation: EscalationRules = Field(default_factory=EscalationRules)
    partner_payable: PartnerPayableRules = Field(default_factory=PartnerPayableRules)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return Money.zero(value).currency

    @field_validator("minimum_amount_to_suspend", mode="before")
    @classmethod
    def _no_float_minimum(cls, value: Any) -> Any:
        return _exact_decimal(value, "amount", "100.00")

    @field_validator("minimum_amount_to_suspend")
    @classmethod
    def _minimum_not_negative(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("reminders")
    @classmethod
    def _reminders_ascending(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        if list(value) != sorted(set(value)):
            raise ValueError("reminders must be distinct and in ascending order")
        return value

    @field_validator("data_deletion_warnings")
    @classmethod
    def _warnings_before_deletion(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        if list(value) != sorted(set(value)):
            raise ValueError("data_deletion_warnings must be distinct and in ascending order")
        for offset in value:
            if not timedelta(0) < offset < DATA_DELETION_AFTER_SUSPENSION:
                raise ValueError(f"{_iso(offset)} is not between suspension and the data deletion 60 days after it")
        return value

    @model_validator(mode="after")
    def _ladder_in_order(self) -> CollectionsPolicy:
        # Model-level problems carry their key in the message: pydantic gives them no location.
        if self.final_notice <= timedelta(0):
            raise ValueError(f"final_notice: {_iso(self.final_notice)} must come after the due moment")
        if self.reminders and self.reminders[-1] >= self.final_notice:
            raise ValueError(
                f"final_notice: {_iso(self.final_notice)} must come after the last reminder "
                f"({_iso(self.reminders[-1])})"
            )
        if self.minimum_notice_gap is not None and self.minimum_notice_gap < timedelta(0):
            raise ValueError(f"minimum_notice_gap: {_iso(self.minimum_notice_gap)} must not be negative")
        if self.final_notice >= self.suspend_after:
            raise ValueError(
                f"suspend_after: {_iso(self.suspend_after)} must come after final_notice ({_iso(self.final_notice)})"
            )
        return self

    def with_business_day_calendar(self, calendar: Calendar) -> CollectionsPolicy:
        return self.model_copy(update={"quiet_hours": self.quiet_hours.model_copy(update={"calendar": calendar})})

    @property
    def minimum_to_suspend(self) -> Money:
        return Money(amount=self.minimum_amount_to_suspend, currency=self.currency)

    @property
    def notice_gap(self) -> timedelta:
        """`minimum_notice_gap`, or half the shortest distance between two rungs of the ladder."""
        if self.minimum_notice_gap is not None:
            return self.minimum_notice_gap
        rungs = [*self.reminders, self.final_notice]
        distances = [later - earlier for earlier, later in itertools.pairwise(rungs)]
        return min(distances, default=self.final_notice) / 2

    @property
    def final_notice_warning(self) -> timedelta:
        """How long a customer has between the final notice and suspension."""
        return self.suspend_after - self.final_notice


def _iso(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else ""
    offset = abs(offset)
    days, seconds = offset.days, offset.seconds
    text = f"{sign}P{days}D" if days else f"{sign}P"
    if seconds or not days:
        text += f"T{seconds}S"
    return text


def load_policy(path: str | Path) -> CollectionsPolicy:
    """Load a policy file; every error names the file, the key and what is wrong with it."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{path}: collections policy file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{path}: not valid TOML: {error}") from None
    return parse_policy(raw, source=str(path))


def parse_policy(raw: dict[str, Any], source: str = "<policy>") -> CollectionsPolicy:
    try:
        return CollectionsPolicy.model_validate(raw)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            key = ".".join(str(part) for part in detail["loc"])
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] == "extra_forbidden":
                message = "unknown key (check the spelling against the contract)"
            elif detail["type"].startswith("time_delta"):
                message = f"{message}; write an ISO 8601 duration such as P14D, PT30S or -P3D"
            problems.append(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        raise PolicyError("\n".join(problems)) from None


DEMO_POLICY_TOML = """\
# A compressed ladder for demos and integration tests: the whole lifecycle in about a minute.
currency = "CNY"
minimum_amount_to_suspend = "100.00"
reminders = ["-PT5S", "PT5S", "PT10S"]
final_notice = "PT15S"
suspend_after = "PT25S"
data_deletion_warnings = ["PT40S", "PT50S"]
[quiet_hours]
enabled = false
[dispute]
grace_after_uphold = "PT20S"
remind_desk_after = "PT30S"
[escalation]
chase_after = "PT20S"
"""


class LifecycleSettings(FrozenMessage):
    """Read once per run, so a changed policy file applies from the next run (or continue-as-new) on."""

    policy: CollectionsPolicy
    history_event_limit: int = 10_000  # continue-as-new past this many events even if not yet suggested
    # The task queue of Partner Center activities (rate-limited there for every worker); None in runs recorded
    # before it existed: those call Partner Center on their own task queue, as then.
    partner_center_task_queue: str | None = None

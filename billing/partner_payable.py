"""The partner's own bill from 21Vianet: when it falls due, what lateness costs, and when finance is reminded.

Pure functions of a `PayableState`, like the collections core: the `PartnerPayable` workflow asks `decide()`,
sleeps until the step is due (or a payment is recorded), sends the reminder and records it with `mark_done()`.

21Vianet's terms, as its billing page for Partner Center operated by 21Vianet publishes them
(https://msdn.microsoft.com/en-us/partner-china/billing, "Payment terms", last updated 2016-10-20): net 30 days,
payment due by the invoice due date 30 days after the billing date, "a finance charge of 1.5% of the invoice
amount per month or the legal maximum, whichever is less", and a delinquent account suspended from creating new
customers or orders until it is brought current. The page calls itself highlights, subject to change; 21Vianet's
China CSP reseller agreement is what binds, so the late charge here is an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from billing.due_dates import due_moment
from billing.models import DEFAULT_TIME_ZONE, BillingStage, Locale, Message, NoticeKind, NoticeRecord, RejectedMessage
from billing.money import Money, minor_units
from billing.policy import LateChargeBasis, PartnerPayableRules
from billing.refusals import Refused

PAYMENT_TERM = timedelta(days=30)
# The late charge is pro-rated per day over 30-day months: a day late costs the monthly rate / 30.
DAYS_PER_MONTH = 30


def workflow_id(invoice_id: str) -> str:
    """The contract's id of the payable for 21Vianet's invoice `invoice_id`."""
    return f"partner-payable-{invoice_id}"


class PartnerInvoice(Message):
    """An invoice 21Vianet issued to the partner, as Partner Center's `GET /v1/invoices` lists it.

    `amount` is its `totalCharges` and `paid` what Partner Center already shows as paid, both in the invoice's
    own `currencyCode`: the currency is read from the invoice, never assumed.
    """

    invoice_id: str
    invoice_date: date
    amount: Money
    paid: Money
    billing_period_start: date | None = None
    billing_period_end: date | None = None
    invoice_type: str | None = None  # "Recurring" or "OneTime" in Partner Center's words
    description: str | None = None

    @field_validator("invoice_id")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "invoice_id")

    @model_validator(mode="after")
    def _amounts_agree(self) -> PartnerInvoice:
        if not self.amount.is_positive:
            raise ValueError(f"invoice {self.invoice_id}: a payable amount must be greater than zero")
        if self.paid.currency != self.amount.currency:
            raise ValueError(
                f"invoice {self.invoice_id}: paid is in {self.paid.currency}, the invoice in {self.amount.currency}"
            )
        if self.paid.amount < 0 or self.paid > self.amount:
            raise ValueError(f"invoice {self.invoice_id}: paid {self.paid} is not between zero and {self.amount}")
        return self

    @property
    def currency(self) -> str:
        return self.amount.currency

    @property
    def due_on(self) -> date:
        """Net 30: the last day to pay is 30 days after the invoice date."""
        return self.invoice_date + PAYMENT_TERM


class PartnerPayment(Message):
    """Update `record_partner_payment`: money the partner paid 21Vianet against this invoice."""

    payment_id: str
    amount: Money
    paid_on: date
    reference: str | None = None  # the bank's or 21Vianet's reference of the transfer

    @field_validator("payment_id")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "payment_id")

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Money) -> Money:
        if not value.is_positive:
            raise ValueError("a payment amount must be greater than zero")
        return value

    @field_validator("reference")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return (value or "").strip() or None


class PartnerCenterPaid(Message):
    """Signal `partner_center_paid`: what Partner Center shows as paid on the invoice, as of `as_of`.

    Sent by the daily sweep when 21Vianet registered more than the payable knows of. `paid` is the total paid
    (Partner Center's `paidAmount`, made positive) in the invoice's currency, not the latest payment alone.
    """

    invoice_id: str
    paid: Money
    as_of: datetime  # when Partner Center was read; with an offset

    @field_validator("paid")
    @classmethod
    def _not_negative(cls, value: Money) -> Money:
        if value.amount < 0:
            raise ValueError("the paid total must not be negative")
        return value

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("as_of needs an offset, such as 2026-11-24T06:00:00+08:00")
        return value


class PartnerCenterVoided(Message):
    """Signal `partner_center_voided`: Partner Center now lists the invoice as a void note, as of `as_of`.

    Sent by the daily sweep. Partner Center lists a voided invoice under its own id with `documentType`
    "void_note" (the response example of https://learn.microsoft.com/partner-center/developer/
    get-a-collection-of-invoices); a voided invoice is not a bill, so nothing is owed on it any more.
    """

    invoice_id: str
    as_of: datetime  # when Partner Center was read; with an offset

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("as_of needs an offset, such as 2026-11-24T06:00:00+08:00")
        return value


# The payments the engine books for 21Vianet: `paid_on` is the day Partner Center was seen to show them (the
# transfer itself may be earlier; the late charge estimate errs on the high side), and the id names the
# invoice and Partner Center's paid total, so the same statement read twice books once.
REGISTERED_BY_21VIANET = "registered by 21Vianet in Partner Center"
_REGISTERED_PREFIX = "21vianet-"


def registered_payment_id(invoice_id: str, paid: Money) -> str:
    return f"{_REGISTERED_PREFIX}{invoice_id}-paid-{paid.amount}-{paid.currency}"


def registered_by_21vianet(payment: PartnerPayment) -> bool:
    return payment.payment_id.startswith(_REGISTERED_PREFIX) and payment.reference == REGISTERED_BY_21VIANET


def behind_partner_center(invoice: PartnerInvoice, published_amount_due: float | None) -> bool:
    """Whether a payable that published `published_amount_due` (its `AmountDue` search attribute) believes
    more is owed than Partner Center's `invoice` shows. A float, so it counts from half a minor unit: a
    payable that published nothing yet read its figures from Partner Center moments ago."""
    if published_amount_due is None or not math.isfinite(published_amount_due):
        return False
    half_unit = Decimal(1).scaleb(-minor_units(invoice.currency)) / 2
    return Decimal(repr(published_amount_due)) - (invoice.amount - invoice.paid).amount >= half_unit


class PayableRefused(Refused):
    """The payment cannot be recorded against this payable as it stands; nothing was changed."""


class ReminderKind(StrEnum):
    BEFORE_DUE = "before_due"
    OVERDUE = "overdue"
    PAID = "paid"  # a closing notice: paid in full, the reminders stop
    VOIDED = "voided"  # a closing notice: 21Vianet voided the invoice, nothing is owed, the reminders stop

    @property
    def closes(self) -> bool:
        return self in (ReminderKind.PAID, ReminderKind.VOIDED)


@dataclass(frozen=True)
class Reminder:
    """One notice to finance: `key` is unique within the payable and never sent twice."""

    key: str
    kind: ReminderKind
    at: datetime


@dataclass(frozen=True)
class Decision:
    step: Reminder | None  # the next notice; `step.at` is its moment on the ladder
    wake_at: datetime | None  # when to send it (later than `step.at` after a failed attempt)
    finished: bool  # paid in full or voided, and the closing notice sent (or given up on)


class StepFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    attempts: int
    retry_at: datetime
    error: str


class PayableState(BaseModel):
    """Everything the workflow knows about one payable; carried whole across continue-as-new."""

    invoice: PartnerInvoice
    time_zone: str = DEFAULT_TIME_ZONE
    locale: Locale = "zh-CN"
    payments: list[PartnerPayment] = Field(default_factory=list)
    notices: list[NoticeRecord] = Field(default_factory=list)
    # The ladder moment of the last reminder sent: it and every earlier one are done (or passed over).
    reminded_through: datetime | None = None
    closing_sent: bool = False
    # The day (in the partner's zone) the sweep found Partner Center listing the invoice as a void note.
    voided_on: date | None = None
    failures: dict[str, StepFailure] = Field(default_factory=dict)
    rejected: list[RejectedMessage] = Field(default_factory=list)  # signals that changed nothing, and why

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def paid(self) -> Money:
        paid = self.invoice.paid
        for payment in self.payments:
            paid = paid + payment.amount
        return paid

    @property
    def outstanding(self) -> Money:
        """What is still owed on the invoice: nothing once 21Vianet voided it."""
        if self.voided_on is not None:
            return Money.zero(self.invoice.currency)
        return self.invoice.amount - self.paid

    @property
    def due_at(self) -> datetime:
        """The moment the bill is late: the end of the due date in the partner's time zone."""
        return due_moment(self.invoice.due_on, self.zone)

    def today(self, now: datetime) -> date:
        return now.astimezone(self.zone).date()

    def payment(self, payment_id: str) -> PartnerPayment | None:
        return next((p for p in self.payments if p.payment_id == payment_id), None)


class PartnerPayableInput(BaseModel):
    """The input of `PartnerPayable`: 21Vianet's invoice, and how finance reads its notices. One model, so that
    fields can be added compatibly; `carried_over` is what a continued-as-new run takes over."""

    invoice: PartnerInvoice
    locale: Locale = "zh-CN"
    time_zone: str = DEFAULT_TIME_ZONE
    carried_over: PayableState | None = None

    def new_state(self) -> PayableState:
        return self.carried_over or PayableState(invoice=self.invoice, locale=self.locale, time_zone=self.time_zone)


# --- money ----------------------------------------------------------------------------------------------


def late_charge(state: PayableState, rules: PartnerPayableRules, on: date) -> Money:
    """The late charge accrued by the end of `on`: the engine's estimate, on the policy's terms.

    Each day after the due date, up to and including `on`, while anything is outstanding, accrues the policy's
    monthly rate / 30 of the basis: the invoice amount (21Vianet's term), or with `late_charge_basis`
    "outstanding" what was still unpaid that day, so that a payment stops the accrual on its part from the day
    it was paid (`paid_on`). Either way a payment in full stops it. What Partner Center already showed as paid
    when the invoice was found counts as paid from the invoice date. Simple interest, never compounded; the sum
    is rounded once, half up, to the currency's minor unit, and is never more than the policy's cap.

    21Vianet's own statement of the late charge is what is owed. A voided invoice is no bill, and carries none.
    """
    invoice = state.invoice
    if state.voided_on is not None:
        return Money.zero(invoice.currency)
    outstanding = invoice.amount.amount - invoice.paid.amount
    payments = sorted(state.payments, key=lambda p: p.paid_on)
    day_amounts = Decimal(0)  # the sum over the late days of the basis that day
    day = invoice.due_on + timedelta(days=1)
    end = on + timedelta(days=1)
    index = 0
    while day < end and outstanding > 0:
        while index < len(payments) and payments[index].paid_on <= day:
            outstanding -= payments[index].amount.amount
            index += 1
        # Nothing changes until the next payment (or the end): count those days at once.
        until = min(payments[index].paid_on, end) if index < len(payments) else end
        day_amounts += _basis(invoice.amount.amount, outstanding, rules.late_charge_basis) * (until - day).days
        day = until
    charge = _to_minor_unit(day_amounts * rules.late_charge_rate_per_month / DAYS_PER_MONTH, invoice.currency)
    return _capped(charge, late_charge_cap(invoice, rules))


def monthly_late_charge(state: PayableState, rules: PartnerPayableRules, on: date) -> Money:
    """What a further whole month late costs as of `on`: the monthly rate of the basis (the invoice amount, or
    what is outstanding now), no more than the cap leaves, and nothing once nothing is owed."""
    invoice = state.invoice
    outstanding = state.outstanding.amount
    if outstanding <= 0:
        return Money.zero(invoice.currency)
    basis = _basis(invoice.amount.amount, outstanding, rules.late_charge_basis)
    month = _to_minor_unit(basis * rules.late_charge_rate_per_month, invoice.currency)
    cap = late_charge_cap(invoice, rules)
    if cap is None:
        return month
    left = cap - late_charge(state, rules, on)
    return min(month, left, key=lambda money: money.amount) if left.is_positive else Money.zero(invoice.currency)


def late_charge_cap(invoice: PartnerInvoice, rules: PartnerPayableRules) -> Money | None:
    """The most the late charge of `invoice` comes to under the policy, or None (no cap, the default): the
    lower of `late_charge_cap_percent` of the invoice amount (rounded down) and `late_charge_cap_amount` when
    that is in the invoice's currency (an amount in another currency says nothing about this invoice)."""
    caps = []
    if rules.late_charge_cap_percent is not None:
        share = invoice.amount.amount * rules.late_charge_cap_percent / 100
        caps.append(_to_minor_unit(share, invoice.currency, ROUND_DOWN))
    if rules.late_charge_cap_amount is not None and rules.late_charge_cap_amount.currency == invoice.currency:
        caps.append(rules.late_charge_cap_amount)
    return min(caps, key=lambda money: money.amount) if caps else None


def _basis(amount: Decimal, outstanding: Decimal, basis: LateChargeBasis) -> Decimal:
    """What a late day is charged on: nothing once paid, else the invoice amount or what is outstanding."""
    if outstanding <= 0:
        return Decimal(0)
    return amount if basis == "invoice_amount" else outstanding


def _to_minor_unit(amount: Decimal, currency: str, rounding: str = ROUND_HALF_UP) -> Money:
    exponent = Decimal(1).scaleb(-minor_units(currency))
    return Money(amount=amount.quantize(exponent, rounding=rounding), currency=currency)


def _capped(charge: Money, cap: Money | None) -> Money:
    return charge if cap is None or charge <= cap else cap


def days_overdue(state: PayableState, on: date) -> int:
    return max((on - state.invoice.due_on).days, 0)


# --- the ladder -----------------------------------------------------------------------------------------


def stage(state: PayableState, now: datetime) -> BillingStage:
    """The contract's stage names: `Current` before the due moment, `Overdue` after it, `Resolved` once paid
    (or voided by 21Vianet)."""
    if not state.outstanding.is_positive:
        return BillingStage.RESOLVED
    return BillingStage.OVERDUE if now >= state.due_at else BillingStage.CURRENT


def _anchor(state: PayableState, rules: PartnerPayableRules) -> datetime:
    return datetime.combine(state.invoice.due_on, rules.remind_at, tzinfo=state.zone)


def _before_due(state: PayableState, rules: PartnerPayableRules) -> list[Reminder]:
    anchor = _anchor(state, rules)
    prefix = workflow_id(state.invoice.invoice_id)
    return [
        Reminder(f"{prefix}/before/{_offset_label(offset)}", ReminderKind.BEFORE_DUE, anchor + offset)
        for offset in rules.reminders
    ]


def _overdue(state: PayableState, rules: PartnerPayableRules, rung: int) -> Reminder:
    """The overdue reminders fall every `overdue_every` after `remind_at` on the due date, once it is late."""
    at = _anchor(state, rules) + rules.overdue_every * rung
    return Reminder(f"{workflow_id(state.invoice.invoice_id)}/overdue/{rung}", ReminderKind.OVERDUE, at)


def _first_overdue_rung(state: PayableState, rules: PartnerPayableRules) -> int:
    late_after = state.due_at - _anchor(state, rules)
    return max(1, -(-late_after // rules.overdue_every))  # the first rung at or after the due moment


def latest_due(state: PayableState, rules: PartnerPayableRules, now: datetime) -> Reminder | None:
    """The latest reminder of the ladder whose moment is `now` or earlier."""
    first = _first_overdue_rung(state, rules)
    if _overdue(state, rules, first).at <= now:
        rung = (now - _anchor(state, rules)) // rules.overdue_every
        return _overdue(state, rules, max(rung, first))
    due = [reminder for reminder in _before_due(state, rules) if reminder.at <= now]
    return due[-1] if due else None


def next_after(state: PayableState, rules: PartnerPayableRules, moment: datetime) -> Reminder:
    """The first reminder of the ladder strictly after `moment` (the overdue ones never run out)."""
    later = [reminder for reminder in _before_due(state, rules) if reminder.at > moment]
    if later:
        return later[0]
    rung = (moment - _anchor(state, rules)) // rules.overdue_every + 1
    return _overdue(state, rules, max(rung, _first_overdue_rung(state, rules)))


def decide(state: PayableState, rules: PartnerPayableRules, now: datetime) -> Decision:
    """The next notice to send, and when to look again.

    Unpaid: the latest reminder already due and not yet sent goes now, and those it passed over are never sent
    (an invoice found late gets one reminder, not a burst); otherwise the next one on the ladder. Paid in
    full or voided by 21Vianet: the closing notice once, then the payable is finished.
    """
    if not state.outstanding.is_positive:
        if state.closing_sent:
            return Decision(step=None, wake_at=None, finished=True)
        kind = ReminderKind.VOIDED if state.voided_on is not None else ReminderKind.PAID
        closing = Reminder(f"{workflow_id(state.invoice.invoice_id)}/{kind.value}", kind, now)
        return _with_retry(state, closing)
    through = state.reminded_through
    due = latest_due(state, rules, now)
    if due is not None and (through is None or due.at > through):
        return _with_retry(state, due)
    return _with_retry(state, next_after(state, rules, max(now, through or now)))


def _with_retry(state: PayableState, step: Reminder) -> Decision:
    failure = state.failures.get(step.key)
    return Decision(step=step, wake_at=max(step.at, failure.retry_at) if failure else step.at, finished=False)


# A reminder whose mail failed for good is tried again later: 15 minutes, doubling, at most every 6 hours.
REMINDER_RETRY_BASE = timedelta(minutes=15)
REMINDER_RETRY_MAX = timedelta(hours=6)


def reminder_failed(state: PayableState, step: Reminder, error: str, at: datetime) -> StepFailure:
    """The mailer gave up on `step`: the core offers it again after a backoff that grows with each failure."""
    previous = state.failures.get(step.key)
    attempts = (previous.attempts if previous else 0) + 1
    retry_at = at + min(REMINDER_RETRY_BASE * 2 ** (attempts - 1), REMINDER_RETRY_MAX)
    failure = StepFailure(key=step.key, attempts=attempts, retry_at=retry_at, error=error)
    state.failures = {**state.failures, step.key: failure}
    return failure


def reminder_sent(state: PayableState, step: Reminder, at: datetime) -> None:
    """Finance was told: the notice is on record and the step done."""
    record = NoticeRecord(kind=NoticeKind.PARTNER_PAYABLE, at=at, invoice_id=state.invoice.invoice_id, key=step.key)
    state.notices = [*state.notices, record]
    mark_done(state, step)


def mark_done(state: PayableState, step: Reminder) -> None:
    """Record `step` as sent: it and every reminder of the ladder before it are done."""
    if step.kind.closes:
        state.closing_sent = True
    else:
        state.reminded_through = max(step.at, state.reminded_through or step.at)
    state.failures = {key: failure for key, failure in state.failures.items() if key != step.key}


# --- what finance and operators see ------------------------------------------------------------------


class PartnerPayableStatus(Message):
    """Query `status` and the result of `record_partner_payment`."""

    invoice_id: str
    stage: BillingStage
    invoice_date: date
    due_on: date
    amount: Money
    paid: Money
    amount_due: Money  # what is still outstanding on the invoice
    days_overdue: int = 0
    late_charge: Money  # accrued by today on the policy's terms: the engine's estimate; 21Vianet bills it
    late_charge_as_of: date
    late_charge_rate_per_month: Decimal  # a fraction: 0.015 is 1.5% a month
    late_charge_basis: LateChargeBasis = "invoice_amount"
    late_charge_cap: Money | None = None  # the most it comes to, when the policy caps it
    next_reminder_at: datetime | None = None
    voided_on: date | None = None  # the day Partner Center was seen listing the invoice as a void note
    payments: list[PartnerPayment] = Field(default_factory=list)
    notices_sent: list[NoticeRecord] = Field(default_factory=list)
    description: str | None = None
    rejected: list[RejectedMessage] = Field(default_factory=list)  # signals that changed nothing, and why

    @property
    def late_charge_terms(self) -> str:
        """The terms the estimate was made on, e.g. "1.5% a month of the invoice amount, at most 500.00 CNY"."""
        percent = format((self.late_charge_rate_per_month * 100).normalize(), "f")
        of = "the invoice amount" if self.late_charge_basis == "invoice_amount" else "what is outstanding"
        return f"{percent}% a month of {of}" + (f", at most {self.late_charge_cap}" if self.late_charge_cap else "")


def build_status(state: PayableState, rules: PartnerPayableRules, now: datetime) -> PartnerPayableStatus:
    today = state.today(now)
    decision = decide(state, rules, now)
    reminding = decision.step is not None and not decision.step.kind.closes
    return PartnerPayableStatus(
        invoice_id=state.invoice.invoice_id,
        stage=stage(state, now),
        invoice_date=state.invoice.invoice_date,
        due_on=state.invoice.due_on,
        amount=state.invoice.amount,
        paid=state.paid,
        amount_due=state.outstanding,
        days_overdue=days_overdue(state, today) if state.outstanding.is_positive else 0,
        late_charge=late_charge(state, rules, today),
        late_charge_as_of=today,
        late_charge_rate_per_month=rules.late_charge_rate_per_month,
        late_charge_basis=rules.late_charge_basis,
        late_charge_cap=late_charge_cap(state.invoice, rules),
        next_reminder_at=decision.wake_at if reminding else None,
        voided_on=state.voided_on,
        payments=list(state.payments),
        notices_sent=list(state.notices),
        description=state.invoice.description,
        rejected=list(state.rejected),
    )


def current_details(status: PartnerPayableStatus) -> str:
    """Markdown for the Temporal UI: the bill at a glance. Ids and amounts only."""
    lines = [
        f"**Stage:** {status.stage.value}",
        f"**21Vianet invoice:** {status.invoice_id} of {status.invoice_date} ({status.amount})",
        f"**Outstanding:** {status.amount_due} of {status.amount}, due {status.due_on}",
    ]
    if status.voided_on is not None:
        lines.append(f"**Voided by 21Vianet:** Partner Center lists it as a void note (seen {status.voided_on})")
    if status.late_charge.is_positive:
        lines.append(
            f"**Late charge accrued (estimate):** {status.late_charge} by {status.late_charge_as_of} "
            f"({status.days_overdue} days overdue, {status.late_charge_terms})"
        )
    if status.next_reminder_at is not None:
        lines.append(f"**Next reminder to finance:** {status.next_reminder_at.isoformat(timespec='minutes')} (UTC)")
    if status.payments:
        lines.append("")
        lines.append("**Payments recorded:**")
        lines.extend(_payment_line(p) for p in status.payments)
    if status.rejected:
        lines.append("")
        lines.append("**Signals rejected:**")
        lines.extend(f"- {r.name} at {r.at.isoformat(timespec='minutes')}: {r.reason}" for r in status.rejected)
    return "\n".join(lines)


def _payment_line(payment: PartnerPayment) -> str:
    if registered_by_21vianet(payment):
        return f"- {payment.amount} {REGISTERED_BY_21VIANET}, seen there on {payment.paid_on}"
    reference = f" (ref {payment.reference})" if payment.reference else ""
    return f"- {payment.payment_id}: {payment.amount} on {payment.paid_on}{reference}"


# --- recording a payment --------------------------------------------------------------------------------


def check_payment(state: PayableState, payment: PartnerPayment, today: date) -> bool:
    """Raise `PayableRefused` with a sentence finance understands, or say whether the payment is new.

    A repeated `payment_id` with the same amount and date counts once (False: nothing to record again).
    """
    invoice = state.invoice
    known = state.payment(payment.payment_id)
    if known is not None:
        if known.amount != payment.amount or known.paid_on != payment.paid_on:
            raise PayableRefused(
                f"payment {payment.payment_id} is already recorded as {known.amount} paid on {known.paid_on}; "
                "a different payment needs its own payment_id"
            )
        return False
    if state.voided_on is not None:
        raise PayableRefused(
            f"21Vianet voided invoice {invoice.invoice_id}: Partner Center lists it as a void note (seen "
            f"{state.voided_on}), so there is nothing to pay on it; ask 21Vianet where money already sent belongs"
        )
    if payment.amount.currency != invoice.currency:
        raise PayableRefused(
            f"the payment is in {payment.amount.currency}, but 21Vianet's invoice {invoice.invoice_id} is in "
            f"{invoice.currency}: record the amount in {invoice.currency}, as it was credited against the invoice"
        )
    outstanding = state.outstanding
    if not outstanding.is_positive:
        raise PayableRefused(
            f"invoice {invoice.invoice_id} is already paid in full; there is nothing left to pay"
            + _registered_note(state)
        )
    if payment.amount > outstanding:
        raise PayableRefused(
            f"cannot record {payment.amount}: only {outstanding} is outstanding on 21Vianet's invoice "
            f"{invoice.invoice_id} (a late charge is billed by 21Vianet separately, not against this invoice)"
            + _registered_note(state)
        )
    if payment.paid_on > today:
        raise PayableRefused(f"paid_on {payment.paid_on} is in the future (today is {today}); record it once paid")
    if payment.paid_on < invoice.invoice_date:
        raise PayableRefused(
            f"paid_on {payment.paid_on} is before the invoice date {invoice.invoice_date}; check the date"
        )
    return True


def _registered_note(state: PayableState) -> str:
    registered = [p for p in state.payments if registered_by_21vianet(p)]
    if not registered:
        return ""
    total = registered[0].amount
    for payment in registered[1:]:
        total = total + payment.amount
    return (
        f"; 21Vianet already registered payments of {total} in Partner Center, "
        "so this payment may be among them and need not be recorded"
    )


def payment_registered_by_21vianet(
    state: PayableState, report: PartnerCenterPaid, today: date
) -> PartnerPayment | None:
    """The payment to book when Partner Center shows more paid than the payable knows of, or None.

    Partner Center is 21Vianet's own statement, so it wins: the difference (at most what is outstanding) is
    booked as paid on the day Partner Center was read, in the partner's zone (never after today, never before
    the invoice date). A report of less than the payable knows never lowers what is paid. Raises
    `PayableRefused` for a report about another invoice or in another currency.
    """
    invoice = state.invoice
    if report.invoice_id != invoice.invoice_id:
        raise PayableRefused(f"it is about invoice {report.invoice_id}, not 21Vianet's invoice {invoice.invoice_id}")
    if report.paid.currency != invoice.currency:
        raise PayableRefused(
            f"Partner Center's paid total is in {report.paid.currency}, but invoice {invoice.invoice_id} is in "
            f"{invoice.currency}"
        )
    outstanding = state.outstanding
    if report.paid <= state.paid or not outstanding.is_positive:
        return None
    difference = report.paid - state.paid
    seen_on = report.as_of.astimezone(state.zone).date()
    return PartnerPayment(
        payment_id=registered_payment_id(invoice.invoice_id, report.paid),
        amount=min(difference, outstanding, key=lambda money: money.amount),
        paid_on=max(invoice.invoice_date, min(seen_on, today)),
        reference=REGISTERED_BY_21VIANET,
    )


def record_void(state: PayableState, report: PartnerCenterVoided, today: date) -> bool:
    """Take in that Partner Center lists the invoice as a void note; False when the payable already knew.

    Nothing is owed from then on: the reminders stop, the late charge goes, and finance is told once. The day
    recorded is the day Partner Center was read, in the partner's zone (never after today). Raises
    `PayableRefused` for a report about another invoice.
    """
    if report.invoice_id != state.invoice.invoice_id:
        raise PayableRefused(
            f"it is about invoice {report.invoice_id}, not 21Vianet's invoice {state.invoice.invoice_id}"
        )
    if state.voided_on is not None:
        return False
    state.voided_on = min(report.as_of.astimezone(state.zone).date(), today)
    return True


def _required_text(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


def _offset_label(offset: timedelta) -> str:
    """A stable key part for an offset, e.g. -P7D or -PT3600S."""
    sign = "-" if offset < timedelta(0) else ""
    offset = abs(offset)
    if not offset.seconds and not offset.microseconds:
        return f"{sign}P{offset.days}D"
    return f"{sign}P{offset.days}DT{offset.seconds}S" if offset.days else f"{sign}PT{offset.seconds}S"

"""The messages of the engine's public contract (`shared/CONTRACT.md`): what other services send and read."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from billing.money import Money

DEFAULT_TIME_ZONE = "Asia/Shanghai"
Locale = Literal["zh-CN", "en-US"]


def _non_blank(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


# Who acted, as operators name themselves: a name or a login, on one line, short enough for every screen.
MAX_OPERATOR_LENGTH = 100


def _operator(value: str | None) -> str | None:
    """`operator`, trimmed; blank is no operator. Refused when it is not a name or login on one line."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_OPERATOR_LENGTH:
        raise ValueError(f"operator must be a name or login of at most {MAX_OPERATOR_LENGTH} characters")
    if any(unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp") for character in value):
        raise ValueError("operator must be a name or login on one line, without control characters")
    return value


def _operator_field() -> Any:
    return Field(
        default=None,
        description="Who acted: a name or login, kept with the reason in the audit trail and the status's timeline.",
        json_schema_extra={"maxLength": MAX_OPERATOR_LENGTH},
    )


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be an ISO 8601 datetime with an offset, e.g. 2026-11-24T18:00:00+08:00")
    return value


class Message(BaseModel):
    """Base of every contract message: unknown fields are tolerated (senders may be newer than us)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class FrozenMessage(BaseModel):
    """Base of what the workflows exchange with their activities (the ledger, the mailer, Partner Center):
    immutable once built, one model per input and result, so fields can be added compatibly."""

    model_config = ConfigDict(frozen=True)


class CustomerAccount(Message):
    """The input of `CustomerBilling`: who the customer is and how to talk to them."""

    customer_id: str
    name: str
    email: str
    locale: Locale = "zh-CN"
    time_zone: str = DEFAULT_TIME_ZONE
    tenant_id: str = ""

    @field_validator("customer_id", "name")
    @classmethod
    def _required(cls, value: str) -> str:
        return _non_blank(value, "customer_id and name")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip()
        local, _, domain = value.partition("@")
        if not local or "." not in domain or " " in value:
            raise ValueError("email must be an address such as billing@example.cn")
        return value

    @field_validator("time_zone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time_zone {value!r} is not an IANA time zone such as Asia/Shanghai") from None
        return value

    @model_validator(mode="after")
    def _tenant_defaults_to_customer(self) -> CustomerAccount:
        if not self.tenant_id.strip():
            object.__setattr__(self, "tenant_id", self.customer_id)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class Invoice(Message):
    """Signal `invoice_issued`: an invoice the partner issued to the customer."""

    invoice_id: str
    customer_id: str
    amount: Money
    issued_on: date
    due_on: date
    due_at: datetime | None = None
    description: str | None = None

    @field_validator("invoice_id", "customer_id")
    @classmethod
    def _required(cls, value: str) -> str:
        return _non_blank(value, "invoice_id and customer_id")

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Money) -> Money:
        if not value.is_positive:
            raise ValueError("an invoice amount must be greater than zero")
        return value

    @field_validator("due_at")
    @classmethod
    def _due_at_aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware(value, "due_at")

    @model_validator(mode="after")
    def _due_after_issue(self) -> Invoice:
        if self.due_on < self.issued_on:
            raise ValueError(f"due_on {self.due_on} is before issued_on {self.issued_on}")
        return self


class Payment(Message):
    """Signal `payment_received` and update `record_payment`: money the customer paid. `operator` says who
    recorded it with `record_payment` (the audit trail keeps it); a bank feed's signal need not carry one."""

    payment_id: str
    customer_id: str
    amount: Money
    received_at: datetime
    invoice_id: str | None = None
    operator: str | None = _operator_field()

    @field_validator("operator")
    @classmethod
    def _operator_name(cls, value: str | None) -> str | None:
        return _operator(value)

    @field_validator("payment_id", "customer_id")
    @classmethod
    def _required(cls, value: str) -> str:
        return _non_blank(value, "payment_id and customer_id")

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Money) -> Money:
        if not value.is_positive:
            raise ValueError("a payment amount must be greater than zero")
        return value

    @field_validator("received_at")
    @classmethod
    def _received_at_aware(cls, value: datetime) -> datetime:
        return _aware(value, "received_at")


class Dispute(Message):
    """Signal `dispute_opened`: the customer contests (part of) an invoice."""

    dispute_id: str
    customer_id: str
    invoice_id: str
    reason: str
    amount: Money | None = None

    @field_validator("dispute_id", "customer_id", "invoice_id", "reason")
    @classmethod
    def _required(cls, value: str) -> str:
        return _non_blank(value, "dispute_id, customer_id, invoice_id and reason")

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Money | None) -> Money | None:
        if value is not None and not value.is_positive:
            raise ValueError("a disputed amount must be greater than zero")
        return value


class LedgerChanged(Message):
    """Signal `ledger_changed`: the daily sweep found the books differ from what the lifecycle last saw (a
    payment, credit or invoice booked while a signal was lost, or by another tool). The lifecycle re-reads
    its balance from the ledger, which is the truth, and carries on from there."""

    customer_id: str
    amount_due: Money  # what the books say is owed
    open_invoice_ids: list[str] = Field(default_factory=list)  # the invoices with money owed on the books
    checked_at: datetime

    @field_validator("customer_id")
    @classmethod
    def _required(cls, value: str) -> str:
        return _non_blank(value, "customer_id")

    @field_validator("checked_at")
    @classmethod
    def _checked_at_aware(cls, value: datetime) -> datetime:
        return _aware(value, "checked_at")


class BillingStage(StrEnum):
    """The `BillingStage` search attribute. `STAGE_PRECEDENCE` says which wins when several hold."""

    CURRENT = "Current"
    OVERDUE = "Overdue"
    FINAL_NOTICE = "FinalNotice"
    SUSPENDED = "Suspended"
    PAUSED = "Paused"
    DISPUTED = "Disputed"
    ESCALATED = "Escalated"
    RESOLVED = "Resolved"


STAGE_PRECEDENCE: tuple[BillingStage, ...] = (
    BillingStage.SUSPENDED,
    BillingStage.ESCALATED,
    BillingStage.DISPUTED,
    BillingStage.PAUSED,
    BillingStage.FINAL_NOTICE,
    BillingStage.OVERDUE,
    BillingStage.CURRENT,
    BillingStage.RESOLVED,
)


class NoticeKind(StrEnum):
    INVOICE = "invoice"
    REMINDER = "reminder"
    FINAL_NOTICE = "final_notice"
    SUSPENSION = "suspension"
    DATA_DELETION_WARNING = "data_deletion_warning"
    DISPUTE_RECEIVED = "dispute_received"
    DISPUTE_RESOLVED = "dispute_resolved"
    CLOSE_THE_LOOP = "close_the_loop"
    ESCALATION_CASE = "escalation_case"
    PARTNER_PAYABLE = "partner_payable"


CUSTOMER_NOTICE_KINDS = frozenset(NoticeKind) - {NoticeKind.ESCALATION_CASE, NoticeKind.PARTNER_PAYABLE}


class InvoiceState(StrEnum):
    OPEN = "open"  # not yet due
    OVERDUE = "overdue"
    PAID = "paid"  # settled by payments and credits
    WRITTEN_OFF = "written_off"  # settled, at least partly by a write-off
    DISPUTED = "disputed"


class InvoiceStatus(Message):
    invoice_id: str
    amount: Money
    paid: Money
    outstanding: Money
    due_on: date
    due_at: datetime
    state: InvoiceState


class DisputeState(StrEnum):
    OPEN = "open"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


class DisputeStatus(Message):
    dispute_id: str
    invoice_id: str
    amount: Money
    state: DisputeState
    escalation_reference: str | None = None
    reason: str | None = None
    opened_at: datetime | None = None
    outcome: str | None = None
    pending: str | None = None  # what the dispute waits for, in words


class NextActionKind(StrEnum):
    INVOICE = "invoice"
    REMINDER = "reminder"
    FINAL_NOTICE = "final_notice"
    SUSPENSION = "suspension"
    DATA_DELETION_WARNING = "data_deletion_warning"
    REINSTATEMENT = "reinstatement"
    CLOSE_THE_LOOP = "close_the_loop"
    DISPUTE_RECEIVED = "dispute_received"
    DISPUTE_RESOLVED = "dispute_resolved"
    ESCALATION_CASE = "escalation_case"
    ESCALATION_CHASE = "escalation_chase"
    DESK_REMINDER = "desk_reminder"


class NextAction(Message):
    kind: NextActionKind
    at: datetime
    invoice_id: str | None = None


class NoticeRecord(Message):
    kind: NoticeKind
    at: datetime
    invoice_id: str | None = None
    key: str = ""


class RejectedMessage(Message):
    name: str
    reason: str
    at: datetime
    reference: str | None = None  # the id the message carried (invoice, payment or dispute id), if any


class BillingStatus(Message):
    """Query `status` and the result of every update."""

    customer_id: str
    stage: BillingStage
    amount_due: Money
    overdue_amount: Money | None = None
    unapplied_credit: Money | None = None
    oldest_due_on: date | None = None
    invoices: list[InvoiceStatus] = Field(default_factory=list)
    disputes: list[DisputeStatus] = Field(default_factory=list)
    suspended_subscription_ids: list[str] = Field(default_factory=list)
    # The same subscriptions as the customer knows them (offer and friendly name), where Partner Center named them.
    suspended_subscriptions: list[str] = Field(default_factory=list)
    paused: bool = False
    next_action: NextAction | None = None
    notices_sent: list[NoticeRecord] = Field(default_factory=list)
    rejected: list[RejectedMessage] = Field(default_factory=list)
    paused_until: datetime | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)  # what the account waits for, in words


# --- operator actions (updates) ---------------------------------------------------------------------------

DisputeOutcome = Literal["credit", "uphold"]
SuspensionReasonName = Literal["non_payment", "fraud_review"]


class OperatorAction(Message):
    """Base of every update payload: an operator's action, refused with a clear message when impossible.
    `operator` is who acted (a name or login): the audit trail and the status's timeline keep it with the reason."""

    operator: str | None = _operator_field()

    @field_validator("operator")
    @classmethod
    def _operator_name(cls, value: str | None) -> str | None:
        return _operator(value)


def _required_text(value: str, what: str) -> str:
    return _non_blank(value, what)


class ResolveDispute(OperatorAction):
    """`resolve_dispute` and `resolve_escalation`: the partner's (or 21Vianet's) answer to a dispute."""

    dispute_id: str
    outcome: DisputeOutcome
    credit: Money | None = None
    note: str

    @field_validator("dispute_id", "note")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "dispute_id and note")

    @model_validator(mode="after")
    def _credit_matches_outcome(self) -> ResolveDispute:
        if self.outcome == "credit" and (self.credit is None or not self.credit.is_positive):
            raise ValueError('outcome "credit" needs a positive credit, e.g. {"amount": "100.00", "currency": "CNY"}')
        if self.outcome == "uphold" and self.credit is not None:
            raise ValueError('outcome "uphold" takes no credit: the charge stands')
        return self


class EscalateDispute(OperatorAction):
    dispute_id: str
    note: str

    @field_validator("dispute_id", "note")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "dispute_id and note")


class RecordEscalation(OperatorAction):
    dispute_id: str
    reference: str
    note: str | None = None

    @field_validator("dispute_id", "reference")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "dispute_id and reference")


class DunningPause(OperatorAction):
    """`pause_dunning` and `resume_dunning`."""

    reason: str
    until: datetime | None = None

    @field_validator("reason")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "reason")

    @field_validator("until")
    @classmethod
    def _until_aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware(value, "until")


class ExtendDueDate(OperatorAction):
    invoice_id: str
    due_on: date
    reason: str

    @field_validator("invoice_id", "reason")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "invoice_id and reason")


class WriteOff(OperatorAction):
    invoice_id: str
    amount: Money | None = None
    reason: str

    @field_validator("invoice_id", "reason")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "invoice_id and reason")

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Money | None) -> Money | None:
        if value is not None and not value.is_positive:
            raise ValueError("a write-off amount must be greater than zero")
        return value


class SuspendNow(OperatorAction):
    reason: SuspensionReasonName
    note: str

    @field_validator("note")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "note")


class Reinstate(OperatorAction):
    note: str

    @field_validator("note")
    @classmethod
    def _required(cls, value: str) -> str:
        return _required_text(value, "note")


class TimelineEntry(Message):
    """One accepted operator action or lifecycle event, as the status's timeline shows it."""

    at: datetime
    action: str
    detail: str
    reference: str | None = None
    operator: str | None = None  # who acted, for an operator's action that named one


# BillingStatus names TimelineEntry, defined after it: completed here, at import, instead of by pydantic at its
# first validation, which looks the name up in the module it finds from where it is called and fails when that
# is a workflow module the sandbox shares (`PydanticUserError: BillingStatus is not fully defined`).
BillingStatus.model_rebuild()

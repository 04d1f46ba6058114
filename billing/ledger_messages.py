"""What goes to and comes from the ledger: the books as it keeps them (balances), and the requests that book
invoices, payments, credits, write-offs, due-date changes, disputes and escalations, the audit trail, the notice
log and the partner's payments to 21Vianet. One frozen model per activity input and result."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Protocol

from pydantic import Field

from billing.models import CustomerAccount, FrozenMessage, Invoice, NoticeKind, Payment
from billing.money import Money
from billing.partner_payable import (
    PartnerPayment,
)


class InvoiceBalance(FrozenMessage):
    """One invoice as the books see it. `outstanding = amount - paid - credited - written_off`."""

    invoice_id: str
    amount: Money
    paid: Money  # payments and unapplied credit allocated to it
    credited: Money  # credit notes posted against it
    written_off: Money
    outstanding: Money
    issued_on: date
    due_on: date
    due_at: datetime  # the exact moment payment is due (aware)
    description: str | None = None


class AccountBalance(FrozenMessage):
    """A customer's account as the books see it. The workflow takes its amounts from here, never adds up."""

    customer_id: str
    currency: str
    invoices: list[InvoiceBalance] = Field(default_factory=list)  # open ones, plus any asked for by id
    unapplied_credit: Money  # overpayments and credits not yet allocated to an invoice
    amount_due: Money  # sum of outstanding over all open invoices


class Allocation(FrozenMessage):
    invoice_id: str
    amount: Money


class RecordInvoiceRequest(FrozenMessage):
    account: CustomerAccount
    invoice: Invoice
    due_at: datetime  # `invoice.due_at`, or the end of `due_on` in the customer's time zone
    known_invoice_ids: list[str] = Field(default_factory=list)


class RecordPaymentRequest(FrozenMessage):
    payment: Payment
    known_invoice_ids: list[str] = Field(default_factory=list)


class PaymentRecorded(FrozenMessage):
    balance: AccountBalance
    duplicate: bool  # the payment id was already on the books; nothing changed
    allocations: list[Allocation] = Field(default_factory=list)
    unapplied: Money  # the part of this payment kept as credit for the next invoice


class BookCreditRequest(FrozenMessage):
    """Money that arrived while nothing is open: the customer's unapplied credit, or flagged for refund.
    Idempotent by the payment's id."""

    payment: Payment  # no `invoice_id`: there is no open invoice it could name
    refund: bool = False  # to be paid back to the customer, never applied to an invoice
    reason: str  # the operator's note, for the audit trail
    operator: str | None = None
    at: datetime  # when the operator booked it


class CreditBooked(FrozenMessage):
    balance: AccountBalance
    duplicate: bool  # the payment id was already on the books; nothing changed
    credit: Money  # what of this payment the books keep as credit (or, flagged, to refund)
    refund: bool


class BalanceRequest(FrozenMessage):
    customer_id: str
    currency: str
    known_invoice_ids: list[str] = Field(default_factory=list)


class CreditNoteRequest(FrozenMessage):
    credit_id: str  # natural key: posting the same credit id twice posts once
    customer_id: str
    invoice_id: str
    amount: Money
    reason: str
    known_invoice_ids: list[str] = Field(default_factory=list)
    dispute_id: str | None = None  # the dispute it settles: all its credits together stay within the dispute


class WriteOffRequest(FrozenMessage):
    write_off_id: str  # natural key
    customer_id: str
    invoice_id: str
    amount: Money | None = None  # absent: everything still outstanding on the invoice
    reason: str
    known_invoice_ids: list[str] = Field(default_factory=list)


class AuditEntry(FrozenMessage):
    """An accepted operator action, written to the ledger's audit trail (idempotent by `action_id`)."""

    action_id: str  # natural key: workflow id + the update's id
    customer_id: str
    action: str  # the update's name, e.g. "write_off"
    reason: str  # the operator's reason or note
    details: dict[str, str] = Field(default_factory=dict)
    at: datetime
    operator: str | None = None  # who acted (a name or login), when the action named one


class RescheduleInvoiceRequest(FrozenMessage):
    """`extend_due_date`: the invoice falls due later. Idempotent by `change_id`."""

    change_id: str
    customer_id: str
    invoice_id: str
    due_on: date
    due_at: datetime
    reason: str
    known_invoice_ids: list[str] = Field(default_factory=list)


class DisputeRecordRequest(FrozenMessage):
    """A dispute as the books keep it (idempotent by `dispute_id`)."""

    dispute_id: str
    customer_id: str
    invoice_id: str
    amount: Money
    reason: str
    opened_at: datetime


EscalationStatus = Literal["case_sent", "filed", "resolved"]


class EscalationChange(FrozenMessage):
    """A step in an escalation's life: the case sent to the desk, 21Vianet's reference, the answer.

    Idempotent by `change_id`; every change is kept as history."""

    change_id: str
    customer_id: str
    dispute_id: str
    status: EscalationStatus
    reference: str | None = None
    note: str | None = None
    at: datetime
    case: EscalationCase | None = None  # with "case_sent": the case as sent


class EscalationCaseRequest(FrozenMessage):
    customer_id: str
    dispute_id: str
    invoice_id: str


class PaymentView(FrozenMessage):
    payment_id: str
    amount: Money
    received_at: datetime
    allocations: list[Allocation] = Field(default_factory=list)


class CreditView(FrozenMessage):
    credit_id: str
    invoice_id: str
    amount: Money
    reason: str
    posted_at: datetime
    dispute_id: str | None = None  # credit notes: the dispute the credit settled, if any


class EscalationCase(FrozenMessage):
    """Everything 21Vianet's support needs to review a billing dispute, from the books."""

    customer: CustomerAccount
    invoice: InvoiceBalance
    invoice_lines: list[str] = Field(default_factory=list)  # the invoice's description lines, as issued
    payments: list[PaymentView] = Field(default_factory=list)
    credits: list[CreditView] = Field(default_factory=list)
    write_offs: list[CreditView] = Field(default_factory=list)
    dispute_id: str
    dispute_reason: str
    disputed_amount: Money
    dispute_opened_at: datetime
    notices: list[NoticeLogEntry] = Field(default_factory=list)  # every notice sent to the customer


class EscalationHistoryEntry(FrozenMessage):
    change_id: str
    status: EscalationStatus
    reference: str | None = None
    note: str | None = None
    at: datetime


class EscalationRecord(FrozenMessage):
    """An escalation as the books keep it: where it stands, the case as sent, and every change, oldest first."""

    dispute_id: str
    customer_id: str
    status: EscalationStatus
    reference: str | None = None  # 21Vianet's reference, once recorded
    case: EscalationCase
    opened_at: datetime  # when the case was sent
    updated_at: datetime  # the latest change
    history: list[EscalationHistoryEntry] = Field(default_factory=list)


class OwedAccount(FrozenMessage):
    """A customer who owes something, as the books see them: one unit of the daily sweep's work.

    `account` is None when the details stored for the customer do not make a valid `CustomerAccount`
    (`account_problem` says why): the sweep reports such a customer instead of starting a lifecycle."""

    customer_id: str
    account: CustomerAccount | None
    account_problem: str | None = None
    balance: AccountBalance  # the open invoices, oldest due first


class PartnerPaymentBooking(FrozenMessage):
    """A payment the partner made to 21Vianet, for the books. Idempotent by `payment.payment_id`."""

    invoice_id: str  # 21Vianet's invoice id
    payment: PartnerPayment
    recorded_by: str  # the payable's workflow id


class PartnerPaymentBooked(FrozenMessage):
    duplicate: bool  # the payment id was already on the books with the same content; nothing changed
    paid: Money  # every payment on the books against the invoice, this one included


class NoticeLogEntry(FrozenMessage):
    customer_id: str
    key: str  # unique per customer
    kind: NoticeKind
    message_id: str
    sent_at: datetime
    invoice_id: str | None = None


class NoticeLog(Protocol):
    """Where the mailer records what it sent, so that a notice already logged is never sent again."""

    def find_notice(self, customer_id: str, key: str) -> NoticeLogEntry | None: ...

    def log_notice(self, entry: NoticeLogEntry) -> NoticeLogEntry:
        """Store the entry unless one with the same (customer_id, key) exists; return the stored one."""
        ...

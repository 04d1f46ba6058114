"""What the workflow asks of the outside world: the input and result of every activity.

One model per activity input and result, so fields can be added compatibly. The activities themselves live in
`activities/` (one module per outside system); these models are shared by both sides.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from billing.models import CustomerAccount, Invoice, NextActionKind, NoticeKind, NoticeRecord, Payment
from billing.money import Money
from billing.partner_payable import (
    PartnerPayment,
    PayableState,
    days_overdue,
    late_charge,
    late_charge_cap,
    monthly_late_charge,
)
from billing.policy import CollectionsPolicy, LateChargeBasis, PartnerPayableRules


class PortModel(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- ledger ---------------------------------------------------------------------------------------------


class InvoiceBalance(PortModel):
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


class AccountBalance(PortModel):
    """A customer's account as the books see it. The workflow takes its amounts from here, never adds up."""

    customer_id: str
    currency: str
    invoices: list[InvoiceBalance] = Field(default_factory=list)  # open ones, plus any asked for by id
    unapplied_credit: Money  # overpayments and credits not yet allocated to an invoice
    amount_due: Money  # sum of outstanding over all open invoices


class Allocation(PortModel):
    invoice_id: str
    amount: Money


class RecordInvoiceRequest(PortModel):
    account: CustomerAccount
    invoice: Invoice
    due_at: datetime  # `invoice.due_at`, or the end of `due_on` in the customer's time zone
    known_invoice_ids: list[str] = Field(default_factory=list)


class RecordPaymentRequest(PortModel):
    payment: Payment
    known_invoice_ids: list[str] = Field(default_factory=list)


class PaymentRecorded(PortModel):
    balance: AccountBalance
    duplicate: bool  # the payment id was already on the books; nothing changed
    allocations: list[Allocation] = Field(default_factory=list)
    unapplied: Money  # the part of this payment kept as credit for the next invoice


class BalanceRequest(PortModel):
    customer_id: str
    currency: str
    known_invoice_ids: list[str] = Field(default_factory=list)


class CreditNoteRequest(PortModel):
    credit_id: str  # natural key: posting the same credit id twice posts once
    customer_id: str
    invoice_id: str
    amount: Money
    reason: str
    known_invoice_ids: list[str] = Field(default_factory=list)
    dispute_id: str | None = None  # the dispute it settles: all its credits together stay within the dispute


class WriteOffRequest(PortModel):
    write_off_id: str  # natural key
    customer_id: str
    invoice_id: str
    amount: Money | None = None  # absent: everything still outstanding on the invoice
    reason: str
    known_invoice_ids: list[str] = Field(default_factory=list)


class AuditEntry(PortModel):
    """An accepted operator action, written to the ledger's audit trail (idempotent by `action_id`)."""

    action_id: str  # natural key: workflow id + the update's id
    customer_id: str
    action: str  # the update's name, e.g. "write_off"
    reason: str  # the operator's reason or note
    details: dict[str, str] = Field(default_factory=dict)
    at: datetime


class RescheduleInvoiceRequest(PortModel):
    """`extend_due_date`: the invoice falls due later. Idempotent by `change_id`."""

    change_id: str
    customer_id: str
    invoice_id: str
    due_on: date
    due_at: datetime
    reason: str
    known_invoice_ids: list[str] = Field(default_factory=list)


class DisputeRecordRequest(PortModel):
    """A dispute as the books keep it (idempotent by `dispute_id`)."""

    dispute_id: str
    customer_id: str
    invoice_id: str
    amount: Money
    reason: str
    opened_at: datetime


EscalationStatus = Literal["case_sent", "filed", "resolved"]


class EscalationChange(PortModel):
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


class EscalationCaseRequest(PortModel):
    customer_id: str
    dispute_id: str
    invoice_id: str


class PaymentView(PortModel):
    payment_id: str
    amount: Money
    received_at: datetime
    allocations: list[Allocation] = Field(default_factory=list)


class CreditView(PortModel):
    credit_id: str
    invoice_id: str
    amount: Money
    reason: str
    posted_at: datetime
    dispute_id: str | None = None  # credit notes: the dispute the credit settled, if any


class EscalationCase(PortModel):
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


class EscalationHistoryEntry(PortModel):
    change_id: str
    status: EscalationStatus
    reference: str | None = None
    note: str | None = None
    at: datetime


class EscalationRecord(PortModel):
    """An escalation as the books keep it: where it stands, the case as sent, and every change, oldest first."""

    dispute_id: str
    customer_id: str
    status: EscalationStatus
    reference: str | None = None  # 21Vianet's reference, once recorded
    case: EscalationCase
    opened_at: datetime  # when the case was sent
    updated_at: datetime  # the latest change
    history: list[EscalationHistoryEntry] = Field(default_factory=list)


class OwedAccount(PortModel):
    """A customer who owes something, as the books see them: one unit of the daily sweep's work.

    `account` is None when the details stored for the customer do not make a valid `CustomerAccount`
    (`account_problem` says why): the sweep reports such a customer instead of starting a lifecycle."""

    customer_id: str
    account: CustomerAccount | None
    account_problem: str | None = None
    balance: AccountBalance  # the open invoices, oldest due first


# --- mailer ---------------------------------------------------------------------------------------------


class NoticeNextStep(PortModel):
    """What happens next if nothing changes, and on which date (from the decision core)."""

    kind: NextActionKind
    on: date


class NoticeDispute(PortModel):
    """The dispute a dispute notice or an escalation case is about."""

    dispute_id: str
    invoice_id: str
    reason: str
    amount: Money  # the disputed amount: the whole invoice when the customer named none
    outcome: Literal["credit", "uphold"] | None = None  # set once the partner or 21Vianet decided
    credit: Money | None = None  # outcome "credit": what was credited to the invoice
    note: str | None = None  # the latest decision's note: for the desk if escalated, the customer if resolved
    escalation_reference: str | None = None  # the reference 21Vianet gave, once recorded


class NoticePayable(PortModel):
    """partner_payable: the partner's bill from 21Vianet, and what paying it late costs and risks."""

    invoice_id: str  # 21Vianet's invoice id
    invoice_date: date
    due_on: date
    billing_period_start: date | None = None
    billing_period_end: date | None = None
    amount: Money  # in the invoice's own currency
    paid: Money
    outstanding: Money
    days_overdue: int = 0
    # The engine's estimate, on the policy's terms: accrued by `late_charge_as_of` at `late_charge_rate_per_month`
    # (a fraction) of the `late_charge_basis`, pro-rated per day, never more than `late_charge_cap`.
    late_charge: Money
    late_charge_as_of: date
    late_charge_rate_per_month: Decimal
    late_charge_basis: LateChargeBasis = "invoice_amount"
    late_charge_cap: Money | None = None
    late_charge_per_month: Money  # what a further month late costs, as of `late_charge_as_of`
    settled: bool = False  # paid in full or voided: the closing notice
    voided_on: date | None = None  # 21Vianet voided the invoice: Partner Center listed it as a void note then
    payments: list[PartnerPayment] = Field(default_factory=list)

    @classmethod
    def of(cls, bill: PayableState, today: date, rules: PartnerPayableRules, *, settled: bool = False) -> NoticePayable:
        """The bill as its notice states it on `today` (in the partner's zone), late charge on `rules`' terms."""
        invoice = bill.invoice
        return cls(
            invoice_id=invoice.invoice_id,
            invoice_date=invoice.invoice_date,
            due_on=invoice.due_on,
            billing_period_start=invoice.billing_period_start,
            billing_period_end=invoice.billing_period_end,
            amount=invoice.amount,
            paid=bill.paid,
            outstanding=bill.outstanding,
            days_overdue=days_overdue(bill, today),
            late_charge=late_charge(bill, rules, today),
            late_charge_as_of=today,
            late_charge_rate_per_month=rules.late_charge_rate_per_month,
            late_charge_basis=rules.late_charge_basis,
            late_charge_cap=late_charge_cap(bill.invoice, rules),
            late_charge_per_month=monthly_late_charge(bill, rules, today),
            settled=settled,
            voided_on=bill.voided_on,
            payments=list(bill.payments),
        )


class SubscriptionProblem(PortModel):
    """A subscription Partner Center would not change as asked: why, in Partner Center's words."""

    subscription_id: str
    name: str | None = None  # as the customer knows it (offer and friendly name), when Partner Center gave one
    status: str | None = None  # what Partner Center reports it is now, e.g. "active", "deleted", "expired"
    error_code: str | None = None
    error_text: str | None = None


class NoticeRequest(PortModel):
    """One notice to send. `key` is unique per customer: the same key is never sent twice."""

    key: str
    kind: NoticeKind
    account: CustomerAccount
    workflow_id: str
    invoices: list[InvoiceBalance] = Field(default_factory=list)  # the invoices the notice is about
    amount_due: Money
    overdue_amount: Money | None = None
    next_step: NoticeNextStep | None = None
    suspended_on: date | None = None
    data_deletion_on: date | None = None
    subscription_ids: list[str] = Field(default_factory=list)
    # How the customer knows each subscription (offer name, friendly name), as Partner Center listed it.
    subscription_names: dict[str, str] = Field(default_factory=dict)
    # close_the_loop: suspended subscriptions Partner Center did not reactivate; escalation_case with
    # desk_purpose "subscriptions": those Partner Center refused to change, for the desk to take up.
    subscription_problems: list[SubscriptionProblem] = Field(default_factory=list)
    late_reinstatement: bool = False  # escalation_case: reinstated more than 60 days after suspension
    resolution: str | None = None  # close_the_loop: what resolved the issue ("payment", "credit", ...)
    suspension_reason: Literal["non_payment", "fraud_review"] | None = None  # suspension
    dispute: NoticeDispute | None = None  # dispute_received, dispute_resolved, escalation_case
    payments: list[Payment] = Field(default_factory=list)  # escalation_case: what the customer paid
    notices_sent: list[NoticeRecord] = Field(default_factory=list)  # escalation_case: notices so far
    # escalation_case only: why the desk hears from us, and the case from the books to file with 21Vianet
    desk_purpose: Literal["case", "chase", "desk_reminder", "fraud_review", "subscriptions"] | None = None
    escalation_case: EscalationCase | None = None
    partner_payable: NoticePayable | None = None  # partner_payable: the bill, late charge and risk


class NoticeReceipt(PortModel):
    key: str
    kind: NoticeKind
    message_id: str
    sent_at: datetime
    already_sent: bool  # the notice log already had it; nothing was sent this time


# --- Partner Center -------------------------------------------------------------------------------------

SubscriptionStatusTarget = Literal["suspended", "active"]


class SubscriptionQuery(PortModel):
    tenant_id: str
    correlation_id: str  # the workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)


class SubscriptionSummary(PortModel):
    """One subscription as a notice names it, from Partner Center's Subscription resource."""

    subscription_id: str
    offer_name: str | None = None  # `offerName`: what was bought, e.g. "Office 365 E3 operated by 21Vianet"
    friendly_name: str | None = None  # `friendlyName`: the partner's own name for it, to tell like ones apart


class ActiveSubscriptions(PortModel):
    subscription_ids: list[str]
    subscriptions: list[SubscriptionSummary] = Field(default_factory=list)  # the same ones, in order, with names


class SubscriptionStatusChange(PortModel):
    tenant_id: str
    subscription_id: str
    target: SubscriptionStatusTarget
    request_key: str  # stable across retries: becomes the MS-RequestId
    correlation_id: str  # the workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)


class SubscriptionStatusChanged(PortModel):
    subscription_id: str
    # The status Partner Center reports after the call: the target once changed; otherwise the status it kept
    # (a deleted or expired subscription stays so); empty when Partner Center did not know the subscription.
    status: str
    changed: bool  # False when it already had the target status, could not be changed, or was refused
    # Partner Center refused to change this one subscription (a permanent answer about it, not an outage): reported,
    # not retried. `error_code` is Partner Center's code (a string, e.g. "800096"), `error_text` its own words.
    refused: bool = False
    error_code: str | None = None
    error_text: str | None = None


# --- the partner's own bills from 21Vianet -------------------------------------------------------------


class PartnerPaymentBooking(PortModel):
    """A payment the partner made to 21Vianet, for the books. Idempotent by `payment.payment_id`."""

    invoice_id: str  # 21Vianet's invoice id
    payment: PartnerPayment
    recorded_by: str  # the payable's workflow id


class PartnerPaymentBooked(PortModel):
    duplicate: bool  # the payment id was already on the books with the same content; nothing changed
    paid: Money  # every payment on the books against the invoice, this one included


class TrackPartnerInvoicesRequest(PortModel):
    """`track_partner_invoices`: start a `PartnerPayable` for each 21Vianet invoice with money owed."""

    correlation_id: str  # the caller's workflow id, logged beside each call's own MS-CorrelationId (a fresh GUID)
    checked_at: datetime | None = None  # the caller's now, the `as_of` of what it reads; absent: the clock's


class PartnerInvoicesTracked(PortModel):
    """What `track_partner_invoices` found; ids are 21Vianet's invoice ids."""

    seen: int  # invoices Partner Center listed
    started: list[str] = Field(default_factory=list)  # a PartnerPayable was started for each
    already_tracked: list[str] = Field(default_factory=list)  # a PartnerPayable exists or existed
    settled: list[str] = Field(default_factory=list)  # nothing owed (paid, or for nothing): never started
    # "id: what it is" for a void note, adjustment note, credit note or amendment: not a bill, never started
    not_bills: list[str] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list)  # "id: why", left for a person to look at
    # A running payable knew of less paid than Partner Center shows: sent `partner_center_paid`.
    told_paid: list[str] = Field(default_factory=list)
    # A running payable's invoice is now listed as a void note: sent `partner_center_voided`.
    told_voided: list[str] = Field(default_factory=list)


# --- the notice log (kept in the ledger, read by the mailer) --------------------------------------------


class NoticeLogEntry(PortModel):
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


# --- the policy the worker enforces ---------------------------------------------------------------------


class LifecycleSettings(PortModel):
    """Read once per run, so a changed policy file applies from the next run (or continue-as-new) on."""

    policy: CollectionsPolicy
    history_event_limit: int = 10_000  # continue-as-new past this many events even if not yet suggested

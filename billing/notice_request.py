"""What the mailer is asked to send and what it answers: one notice, with everything its text needs."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from billing.ledger_messages import EscalationCase, InvoiceBalance
from billing.models import CustomerAccount, FrozenMessage, NextActionKind, NoticeKind, NoticeRecord, Payment
from billing.money import Money
from billing.partner_center_messages import SubscriptionProblem
from billing.partner_payable import (
    PartnerPayment,
    PayableState,
    days_overdue,
    late_charge,
    late_charge_cap,
    monthly_late_charge,
)
from billing.policy import LateChargeBasis, PartnerPayableRules


class NoticeNextStep(FrozenMessage):
    """What happens next if nothing changes, and on which date (from the decision core)."""

    kind: NextActionKind
    on: date


class NoticeDispute(FrozenMessage):
    """The dispute a dispute notice or an escalation case is about."""

    dispute_id: str
    invoice_id: str
    reason: str
    amount: Money  # the disputed amount: the whole invoice when the customer named none
    outcome: Literal["credit", "uphold"] | None = None  # set once the partner or 21Vianet decided
    credit: Money | None = None  # outcome "credit": what was credited to the invoice
    note: str | None = None  # the latest decision's note: for the desk if escalated, the customer if resolved
    escalation_reference: str | None = None  # the reference 21Vianet gave, once recorded


class NoticePayable(FrozenMessage):
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


class NoticeRequest(FrozenMessage):
    """One notice to send. `key` is unique per customer: the same key is never sent twice."""

    key: str
    kind: NoticeKind
    account: CustomerAccount
    workflow_id: str
    # Workflow time when the lifecycle asked for the notice: what the notice counts from (a link's expiry), so
    # every attempt at it renders the same text. Absent in requests made before it existed: no links then.
    at: datetime | None = None
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


class NoticeReceipt(FrozenMessage):
    key: str
    kind: NoticeKind
    message_id: str
    sent_at: datetime
    already_sent: bool  # the notice log already had it; nothing was sent this time

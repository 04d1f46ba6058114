"""One customer's billing lifecycle as a single serialisable value: what the workflow knows and carries over.

The books (amounts, what is paid) come from the ledger's `AccountBalance`; this state adds what only the
lifecycle knows: which notices went out, what this engine suspended, what was refused.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from billing.ledger_messages import AccountBalance, InvoiceBalance
from billing.models import (
    CustomerAccount,
    DisputeState,
    NoticeRecord,
    RejectedMessage,
    TimelineEntry,
)
from billing.money import Money
from billing.partner_center_messages import SubscriptionProblem
from billing.policy import LifecycleSettings

# Keep the status readable and the state small: older entries are dropped from these lists.
MAX_REJECTED = 50
MAX_NOTICES_SHOWN = 100
MAX_TIMELINE = 100


def is_overdue(due_at: datetime, now: datetime) -> bool:
    """An invoice with money outstanding is overdue from its due moment on: one due at 24:00 is overdue at 24:00."""
    return due_at <= now


def rung_key(rung: str, invoice_id: str, restarts: int = 0) -> str:
    """The key of a rung of `invoice_id`'s ladder (`reminder-2`, `final-notice`) after `restarts` restarts of it;
    the notice log keeps the notice a rung sends under this key."""
    return f"{rung}-{invoice_id}" + (f"-restart-{restarts}" if restarts else "")


class SuspensionReason(StrEnum):
    NON_PAYMENT = "non_payment"
    FRAUD_REVIEW = "fraud_review"


class Suspension(BaseModel):
    """Subscriptions this engine suspended. Reinstatement touches exactly these."""

    key: str
    reason: SuspensionReason
    suspended_at: datetime
    subscription_ids: list[str] = Field(default_factory=list)  # active when listed; the ones we act on
    confirmed: bool = False  # Partner Center answered for every one; until then the suspension is retried
    invoice_id: str | None = None  # the invoice whose ladder led here
    held_for_operator: bool = False  # a payment alone does not reinstate (fraud review, manual suspension)
    names: dict[str, str] = Field(default_factory=dict)  # subscription id -> how the customer knows it
    refused: list[SubscriptionProblem] = Field(default_factory=list)  # Partner Center kept these active

    @property
    def suspended_ids(self) -> list[str]:
        """What really is suspended: the subscriptions acted on, less those Partner Center refused."""
        refused = {problem.subscription_id for problem in self.refused}
        return [subscription_id for subscription_id in self.subscription_ids if subscription_id not in refused]


class DeskReport(BaseModel):
    """Subscriptions Partner Center would not suspend or reactivate, for the escalation desk to take up."""

    key: str
    at: datetime
    problems: list[SubscriptionProblem]
    late_reinstatement: bool = False  # reinstated more than 60 days after suspension: the data may be gone


class CollectionsIssue(BaseModel):
    """A stretch of time in which the account was overdue: it ends with the close-the-loop notice."""

    key: str
    opened_at: datetime
    customer_told: bool = False  # a dunning notice went out, so the customer must hear it is resolved
    reinstated_subscription_ids: list[str] = Field(default_factory=list)
    not_restored: list[SubscriptionProblem] = Field(default_factory=list)  # reinstatement did not take for these
    subscription_names: dict[str, str] = Field(default_factory=dict)  # of those suspended, for the notice
    resolutions: list[str] = Field(default_factory=list)  # how it was resolved: payment, credit, 21vianet_review


class DisputeRecord(BaseModel):
    """A customer's dispute over (part of) an invoice, from opening to the partner's or 21Vianet's answer."""

    dispute_id: str
    invoice_id: str
    amount: Money
    reason: str
    opened_at: datetime
    state: DisputeState = DisputeState.OPEN
    escalated_at: datetime | None = None
    escalation_note: str | None = None
    reference: str | None = None
    reference_recorded_at: datetime | None = None
    outcome: str | None = None  # "credit" or "uphold"
    credit: Money | None = None
    resolution_note: str | None = None
    resolved_at: datetime | None = None
    resolved_by_21vianet: bool = False

    @property
    def is_open(self) -> bool:
        return self.state is not DisputeState.RESOLVED


class StepFailure(BaseModel):
    """A step whose activity failed for good; the core retries it no sooner than `retry_at`."""

    key: str
    attempts: int
    retry_at: datetime
    error: str


class BillingState(BaseModel):
    model_config = ConfigDict(validate_assignment=False)

    account: CustomerAccount
    currency: str
    balance: AccountBalance
    invoice_ids: list[str] = Field(default_factory=list)  # every invoice of this run, in order of arrival
    invoice_recorded_at: dict[str, datetime] = Field(default_factory=dict)
    payment_ids: list[str] = Field(default_factory=list)
    notices: list[NoticeRecord] = Field(default_factory=list)
    done_keys: list[str] = Field(default_factory=list)  # steps done or superseded by a later one
    suspension: Suspension | None = None
    suspension_count: int = 0
    issue: CollectionsIssue | None = None
    issue_count: int = 0
    dunning_paused: bool = False
    paused_until: datetime | None = None
    failures: dict[str, StepFailure] = Field(default_factory=dict)
    rejected: list[RejectedMessage] = Field(default_factory=list)
    disputes: list[DisputeRecord] = Field(default_factory=list)
    dunning_not_before: datetime | None = None  # grace after an upheld dispute: no dunning step sooner
    suspension_waived_for: list[str] = Field(default_factory=list)  # anchors an operator reinstated
    # How often each invoice's ladder started again (a new due date, or dunning resumed after its final notice):
    # its rungs are new steps then, so the customer is warned again before any suspension.
    ladder_restarts: dict[str, int] = Field(default_factory=dict)
    desk_reports: list[DeskReport] = Field(default_factory=list)  # each goes to the desk once
    # Runs recorded before ladders could restart keep their rung keys (see CustomerBilling's patch).
    restarts_ladders: bool = False
    # Runs recorded before dunning notices kept a minimum gap send them as they fall due (CustomerBilling's patch).
    paces_notices: bool = False
    # Runs recorded before Partner Center answered per subscription keep claiming what they asked for, tell the
    # desk nothing and accept suspend_now with nothing overdue (CustomerBilling's patch).
    answers_per_subscription: bool = False
    timeline: list[TimelineEntry] = Field(default_factory=list)

    @classmethod
    def new(
        cls,
        account: CustomerAccount,
        currency: str,
        *,
        restarts_ladders: bool = True,
        paces_notices: bool = True,
        answers_per_subscription: bool = True,
    ) -> BillingState:
        zero = Money.zero(currency)
        balance = AccountBalance(
            customer_id=account.customer_id, currency=currency, unapplied_credit=zero, amount_due=zero
        )
        return cls(
            account=account,
            currency=currency,
            balance=balance,
            restarts_ladders=restarts_ladders,
            paces_notices=paces_notices,
            answers_per_subscription=answers_per_subscription,
        )

    # --- reading the books -----------------------------------------------------------------------------

    def open_invoices(self) -> list[InvoiceBalance]:
        """Invoices with money outstanding, oldest due first."""
        return sorted(
            (invoice for invoice in self.balance.invoices if invoice.outstanding.is_positive),
            key=lambda invoice: (invoice.due_at, invoice.issued_on, invoice.invoice_id),
        )

    def overdue_invoices(self, now: datetime) -> list[InvoiceBalance]:
        return [invoice for invoice in self.open_invoices() if is_overdue(invoice.due_at, now)]

    def overdue_amount(self, now: datetime) -> Money:
        result = Money.zero(self.currency)
        for invoice in self.overdue_invoices(now):
            result = result + invoice.outstanding
        return result

    # --- what the ladder may chase: open disputes are out of it ---------------------------------------

    def disputed_amount(self, invoice_id: str) -> Money:
        result = Money.zero(self.currency)
        for dispute in self.disputes:
            if dispute.is_open and dispute.invoice_id == invoice_id:
                result = result + dispute.amount
        return result

    def amount_to_dispute(self, invoice: InvoiceBalance, amount: Money | None) -> Money:
        """What a new dispute takes out of the ladder: its amount, or all of the invoice not yet disputed."""
        return amount or invoice.outstanding - self.disputed_amount(invoice.invoice_id)

    def dunnable_outstanding(self, invoice: InvoiceBalance) -> Money:
        remaining = invoice.outstanding - self.disputed_amount(invoice.invoice_id)
        return remaining if remaining.is_positive else Money.zero(self.currency)

    def dunnable_invoices(self) -> list[InvoiceBalance]:
        """Open invoices with money the ladder may chase, oldest due first."""
        return [invoice for invoice in self.open_invoices() if self.dunnable_outstanding(invoice).is_positive]

    def dunnable_overdue_amount(self, now: datetime) -> Money:
        result = Money.zero(self.currency)
        for invoice in self.dunnable_invoices():
            if is_overdue(invoice.due_at, now):
                result = result + self.dunnable_outstanding(invoice)
        return result

    def open_disputes(self) -> list[DisputeRecord]:
        return [dispute for dispute in self.disputes if dispute.is_open]

    def dispute(self, dispute_id: str) -> DisputeRecord | None:
        return next((dispute for dispute in self.disputes if dispute.dispute_id == dispute_id), None)

    def invoice(self, invoice_id: str) -> InvoiceBalance | None:
        return next((inv for inv in self.balance.invoices if inv.invoice_id == invoice_id), None)

    def rung_key(self, rung: str, invoice_id: str) -> str:
        """The key of a rung of `invoice_id`'s ladder (`reminder-2`, `final-notice`): new after each restart."""
        return rung_key(rung, invoice_id, self.ladder_restarts.get(invoice_id, 0))

    def is_done(self, key: str) -> bool:
        return key in self.done_keys

    # --- recording -------------------------------------------------------------------------------------

    def reject(self, rejection: RejectedMessage) -> None:
        self.rejected = [*self.rejected, rejection][-MAX_REJECTED:]

    def record_notice(self, notice: NoticeRecord) -> None:
        self.notices = [*self.notices, notice][-MAX_NOTICES_SHOWN:]

    def note(self, entry: TimelineEntry) -> None:
        self.timeline = [*self.timeline, entry][-MAX_TIMELINE:]


class CarriedState(BaseModel):
    """What a continued-as-new run takes over from its predecessor."""

    state: BillingState
    settings: LifecycleSettings


class CustomerBillingInput(CustomerAccount):
    """The workflow input: the contract's `CustomerAccount` (all other services send just that), plus what a
    continued-as-new run takes over. One model, because the SDK only applies type hints when the number of
    arguments matches."""

    carried_over: CarriedState | None = None

    def customer_account(self) -> CustomerAccount:
        return CustomerAccount.model_validate(self.model_dump(exclude={"carried_over"}))

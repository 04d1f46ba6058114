"""One customer's billing lifecycle as a single serialisable value: what the workflow knows and carries over.

The books (amounts, what is paid) come from the ledger's `AccountBalance`; this state adds what only the
lifecycle knows: which notices went out, what this engine suspended, what was refused.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from billing.models import CustomerAccount, NoticeRecord, RejectedMessage
from billing.money import Money
from billing.ports import AccountBalance, InvoiceBalance

# Keep the status readable and the state small: older entries are dropped from these lists.
MAX_REJECTED = 50
MAX_NOTICES_SHOWN = 100


class SuspensionReason(StrEnum):
    NON_PAYMENT = "non_payment"
    FRAUD_REVIEW = "fraud_review"


class Suspension(BaseModel):
    """Subscriptions this engine suspended. Reinstatement touches exactly these."""

    key: str
    reason: SuspensionReason
    suspended_at: datetime
    subscription_ids: list[str] = Field(default_factory=list)  # active when listed; the ones we act on
    confirmed: bool = False  # Partner Center confirmed every change; until then the suspension is retried
    invoice_id: str | None = None  # the invoice whose ladder led here
    held_for_operator: bool = False  # a payment alone does not reinstate (fraud review, manual suspension)


class CollectionsIssue(BaseModel):
    """A stretch of time in which the account was overdue: it ends with the close-the-loop notice."""

    key: str
    opened_at: datetime
    customer_told: bool = False  # a dunning notice went out, so the customer must hear it is resolved
    reinstated_subscription_ids: list[str] = Field(default_factory=list)


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
    resolved: bool = False  # nothing owed, nothing open: the run may complete

    @classmethod
    def new(cls, account: CustomerAccount, currency: str) -> BillingState:
        zero = Money.zero(currency)
        balance = AccountBalance(
            customer_id=account.customer_id, currency=currency, unapplied_credit=zero, amount_due=zero
        )
        return cls(account=account, currency=currency, balance=balance)

    # --- reading the books -----------------------------------------------------------------------------

    def open_invoices(self) -> list[InvoiceBalance]:
        """Invoices with money outstanding, oldest due first."""
        return sorted(
            (invoice for invoice in self.balance.invoices if invoice.outstanding.is_positive),
            key=lambda invoice: (invoice.due_at, invoice.issued_on, invoice.invoice_id),
        )

    def overdue_invoices(self, now: datetime) -> list[InvoiceBalance]:
        return [invoice for invoice in self.open_invoices() if invoice.due_at <= now]

    def overdue_amount(self, now: datetime) -> Money:
        result = Money.zero(self.currency)
        for invoice in self.overdue_invoices(now):
            result = result + invoice.outstanding
        return result

    def invoice(self, invoice_id: str) -> InvoiceBalance | None:
        return next((inv for inv in self.balance.invoices if inv.invoice_id == invoice_id), None)

    def is_done(self, key: str) -> bool:
        return key in self.done_keys

    # --- recording -------------------------------------------------------------------------------------

    def reject(self, rejection: RejectedMessage) -> None:
        self.rejected = [*self.rejected, rejection][-MAX_REJECTED:]

    def record_notice(self, notice: NoticeRecord) -> None:
        self.notices = [*self.notices, notice][-MAX_NOTICES_SHOWN:]

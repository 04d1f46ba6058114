"""One invoice's collections ladder as dates in the customer's time zone: the decision core's `forecast()` run
on an account holding only that invoice, for texts that quote future dates (the policy document, samples)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from billing.due_dates import due_moment
from billing.ledger_messages import AccountBalance, InvoiceBalance
from billing.lifecycle.forecast import forecast
from billing.lifecycle.state import BillingState
from billing.lifecycle.steps import StepKind
from billing.models import CustomerAccount
from billing.money import Money
from billing.policy import DATA_DELETION_AFTER_SUSPENSION, CollectionsPolicy


def unpaid_invoice(
    invoice_id: str,
    amount: Money,
    issued_on: date,
    due_on: date,
    zone: ZoneInfo,
    description: str | None = None,
) -> InvoiceBalance:
    """An invoice as the books show it the day it is issued: nothing paid, due at the end of `due_on`."""
    zero = Money.zero(amount.currency)
    return InvoiceBalance(
        invoice_id=invoice_id,
        amount=amount,
        paid=zero,
        credited=zero,
        written_off=zero,
        outstanding=amount,
        issued_on=issued_on,
        due_on=due_on,
        due_at=due_moment(due_on, zone),
        description=description,
    )


def single_invoice_state(account: CustomerAccount, invoice: InvoiceBalance, recorded_at: datetime) -> BillingState:
    """A lifecycle that knows one invoice, recorded at `recorded_at`, and nothing else yet."""
    state = BillingState.new(account, invoice.amount.currency)
    state.balance = AccountBalance(
        customer_id=account.customer_id,
        currency=invoice.amount.currency,
        invoices=[invoice],
        unapplied_credit=Money.zero(invoice.amount.currency),
        amount_due=invoice.outstanding,
    )
    state.invoice_ids = [invoice.invoice_id]
    state.invoice_recorded_at = {invoice.invoice_id: recorded_at}
    return state


@dataclass(frozen=True)
class ScheduledStep:
    kind: StepKind
    at: datetime
    on: date  # `at` in the customer's time zone


@dataclass(frozen=True)
class InvoiceSchedule:
    """What the engine will do about one invoice if it stays unpaid, step by step, with dates."""

    invoice: InvoiceBalance
    time_zone: str
    steps: tuple[ScheduledStep, ...]  # after the invoice notice, in order

    def of_kind(self, kind: StepKind) -> list[ScheduledStep]:
        return [step for step in self.steps if step.kind is kind]

    @property
    def suspension(self) -> ScheduledStep | None:
        return next(iter(self.of_kind(StepKind.SUSPEND)), None)

    @property
    def data_deletion_on(self) -> date | None:
        """21Vianet deletes the data 60 days after suspension (the core's `data_deletion_date`)."""
        suspension = self.suspension
        if suspension is None:
            return None
        return (suspension.at + DATA_DELETION_AFTER_SUSPENSION).astimezone(ZoneInfo(self.time_zone)).date()


def invoice_schedule(
    policy: CollectionsPolicy, account: CustomerAccount, invoice: InvoiceBalance, recorded_at: datetime
) -> InvoiceSchedule:
    """What `forecast()` predicts for `invoice` if nothing is paid, disputed or decided by an operator."""
    zone = account.zone
    steps = tuple(
        ScheduledStep(kind=step.kind, at=step.at, on=step.at.astimezone(zone).date())
        for step in forecast(single_invoice_state(account, invoice, recorded_at), policy, recorded_at)
        if step.kind is not StepKind.SEND_INVOICE
    )
    return InvoiceSchedule(invoice=invoice, time_zone=account.time_zone, steps=steps)

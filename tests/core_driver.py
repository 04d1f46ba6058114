"""Drives the decision core through time without Temporal, the way the workflow does, for core tests.

Every change to the state goes through `billing.lifecycle.transitions`, the functions the workflow calls after
each activity, so a property that fails here fails for the engine. Balances are built the way the ledger builds
them (oldest-first allocation), so the core sees realistic books.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from billing.ledger_messages import AccountBalance, Allocation, InvoiceBalance, PaymentRecorded
from billing.lifecycle import transitions
from billing.lifecycle.next_step import decide
from billing.lifecycle.state import BillingState
from billing.lifecycle.steps import Step, StepKind
from billing.models import CustomerAccount
from billing.money import Money
from billing.partner_center_messages import ActiveSubscriptions, SubscriptionStatusChanged
from billing.policy import CollectionsPolicy
from tests.builders import cny


@dataclass
class CoreDriver:
    policy: CollectionsPolicy
    account: CustomerAccount
    now: datetime
    state: BillingState = field(init=False)
    performed: list[tuple[datetime, Step]] = field(default_factory=list)
    overdue_when_performed: list[Money] = field(default_factory=list)
    _amounts: dict[str, Money] = field(default_factory=dict)
    _paid: dict[str, Money] = field(default_factory=dict)
    _due: dict[str, datetime] = field(default_factory=dict)
    _payments: int = 0

    def __post_init__(self) -> None:
        self.state = BillingState.new(self.account, self.policy.currency)

    def issue(self, invoice_id: str, amount: Money, due_at: datetime) -> None:
        self._amounts[invoice_id] = amount
        self._paid[invoice_id] = cny(0)
        self._due[invoice_id] = due_at
        transitions.invoice_booked(self.state, invoice_id, self._balance(), self.now)

    def pay(self, amount: Money) -> None:
        """Oldest due first, like the ledger; the rest would be credit."""
        left = amount
        allocations = []
        for invoice_id in sorted(self._amounts, key=lambda i: self._due[i]):
            open_amount = self._amounts[invoice_id] - self._paid[invoice_id]
            take = left.min(open_amount)
            if take.is_positive:
                allocations.append(Allocation(invoice_id=invoice_id, amount=take))
            self._paid[invoice_id] = self._paid[invoice_id] + take
            left = left - take
        self._payments += 1
        recorded = PaymentRecorded(balance=self._balance(), duplicate=False, allocations=allocations, unapplied=left)
        transitions.payment_booked(self.state, f"PAY-{self._payments}", recorded)

    def extend(self, invoice_id: str, due_at: datetime) -> None:
        """An operator's `extend_due_date`, as the ledger books it."""
        self._due[invoice_id] = due_at
        transitions.due_date_moved(self.state, invoice_id, self._balance())

    def pay_everything(self) -> None:
        self.pay(self.state.balance.amount_due)

    def _balance(self) -> AccountBalance:
        invoices = [
            InvoiceBalance(
                invoice_id=invoice_id,
                amount=amount,
                paid=self._paid[invoice_id],
                credited=cny(0),
                written_off=cny(0),
                outstanding=amount - self._paid[invoice_id],
                issued_on=date(2026, 1, 1),
                due_on=self._due[invoice_id].date(),
                due_at=self._due[invoice_id],
            )
            for invoice_id, amount in self._amounts.items()
        ]
        due = cny(0)
        for invoice in invoices:
            due = due + invoice.outstanding
        return AccountBalance(
            customer_id=self.account.customer_id,
            currency="CNY",
            invoices=invoices,
            unapplied_credit=cny(0),
            amount_due=due,
        )

    def run_until(self, until: datetime, max_steps: int = 200) -> None:
        """Perform every step due up to `until`, advancing the clock like the workflow's timers."""
        for _ in range(max_steps):
            transitions.time_passed(self.state, self.now)
            decision = decide(self.state, self.policy, self.now)
            if decision.step is not None and decision.step.at <= self.now:
                self.perform(decision.step)
                continue
            if decision.wake_at is None or decision.wake_at > until:
                self.now = max(self.now, until)
                transitions.time_passed(self.state, self.now)
                return
            self.now = decision.wake_at
        raise AssertionError("the core did not settle within max_steps")

    def perform(self, step: Step) -> None:
        """What the workflow's `_perform` does, with Partner Center and the mailer succeeding."""
        self.performed.append((self.now, step))
        self.overdue_when_performed.append(self.state.overdue_amount(self.now))
        if step.kind is StepKind.SUSPEND:
            if self.state.suspension is None:
                transitions.suspension_started(
                    self.state, step, ActiveSubscriptions(subscription_ids=["sub-1"]), self.now
                )
            ids = self.state.suspension.subscription_ids if self.state.suspension else []
            transitions.suspension_confirmed(self.state, [self.partner_center(i, "suspended") for i in ids], self.now)
        elif step.kind is StepKind.REINSTATE:
            assert self.state.suspension is not None
            ids = self.state.suspension.suspended_ids
            transitions.reinstated(self.state, [self.partner_center(i, "active") for i in ids], self.now)
        transitions.step_performed(self.state, step, self.now)

    def partner_center(self, subscription_id: str, target: str) -> SubscriptionStatusChanged:
        """Partner Center's answer: the change made (the driver's Partner Center always succeeds)."""
        return SubscriptionStatusChanged(subscription_id=subscription_id, status=target, changed=True)

    def kinds(self) -> list[StepKind]:
        return [step.kind for _, step in self.performed]

    def keys(self) -> list[str]:
        return [step.key for _, step in self.performed]


def days(n: float) -> timedelta:
    return timedelta(days=n)

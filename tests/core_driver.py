"""Drives the decision core through time without Temporal, the way the workflow does, for core tests.

Balances are built the way the ledger builds them (oldest-first allocation), so the core sees realistic books.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from billing.account_state import BillingState, Suspension, SuspensionReason
from billing.collections import Step, StepKind, decide, mark_done, observe
from billing.models import CustomerAccount, NoticeRecord
from billing.money import Money
from billing.policy import CollectionsPolicy
from billing.ports import AccountBalance, InvoiceBalance


def cny(amount: str | int | Decimal) -> Money:
    return Money.of(amount, "CNY")


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

    def __post_init__(self) -> None:
        self.state = BillingState.new(self.account, self.policy.currency)

    def issue(self, invoice_id: str, amount: Money, due_at: datetime) -> None:
        self._amounts[invoice_id] = amount
        self._paid[invoice_id] = cny(0)
        self._due[invoice_id] = due_at
        self.state.invoice_ids = [*self.state.invoice_ids, invoice_id]
        self.state.invoice_recorded_at[invoice_id] = self.now
        self._rebalance()

    def pay(self, amount: Money) -> None:
        """Oldest due first, like the ledger; the rest would be credit."""
        left = amount
        for invoice_id in sorted(self._amounts, key=lambda i: self._due[i]):
            open_amount = self._amounts[invoice_id] - self._paid[invoice_id]
            take = left.min(open_amount)
            self._paid[invoice_id] = self._paid[invoice_id] + take
            left = left - take
        self._rebalance()

    def pay_everything(self) -> None:
        self.pay(self.state.balance.amount_due)

    def _rebalance(self) -> None:
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
        self.state.balance = AccountBalance(
            customer_id=self.account.customer_id,
            currency="CNY",
            invoices=invoices,
            unapplied_credit=cny(0),
            amount_due=due,
        )

    def run_until(self, until: datetime, max_steps: int = 200) -> None:
        """Perform every step due up to `until`, advancing the clock like the workflow's timers."""
        for _ in range(max_steps):
            observe(self.state, self.now)
            decision = decide(self.state, self.policy, self.now)
            if decision.step is not None and decision.step.at <= self.now:
                self.perform(decision.step)
                continue
            if decision.wake_at is None or decision.wake_at > until:
                self.now = max(self.now, until)
                observe(self.state, self.now)
                return
            self.now = decision.wake_at
        raise AssertionError("the core did not settle within max_steps")

    def perform(self, step: Step) -> None:
        self.performed.append((self.now, step))
        self.overdue_when_performed.append(self.state.overdue_amount(self.now))
        if step.kind is StepKind.SUSPEND:
            self.state.suspension = Suspension(
                key=step.key,
                reason=SuspensionReason.NON_PAYMENT,
                suspended_at=self.now,
                subscription_ids=["sub-1"],
                confirmed=True,
                invoice_id=step.invoice_id,
            )
            self.state.suspension_count += 1
        elif step.kind is StepKind.REINSTATE:
            assert self.state.issue is not None
            self.state.issue.reinstated_subscription_ids = ["sub-1"]
            self.state.suspension = None
        if step.notice_kind is not None:
            self.state.record_notice(
                NoticeRecord(kind=step.notice_kind, at=self.now, invoice_id=step.invoice_id, key=step.key)
            )
        mark_done(self.state, step)

    def kinds(self) -> list[StepKind]:
        return [step.kind for _, step in self.performed]

    def keys(self) -> list[str]:
        return [step.key for _, step in self.performed]


def days(n: float) -> timedelta:
    return timedelta(days=n)

"""What an operator may do to a customer's lifecycle right now, and why not: the update validators' rules.

Pure functions of the state: each returns nothing when the action is allowed and raises `Refused` with a
sentence an operator understands when it is not. The same checks run again when the action is applied.
"""

from __future__ import annotations

from datetime import datetime

from billing.ledger_messages import InvoiceBalance
from billing.lifecycle.state import BillingState, DisputeRecord
from billing.models import (
    Dispute,
    DisputeState,
    DunningPause,
    EscalateDispute,
    ExtendDueDate,
    Payment,
    RecordEscalation,
    Reinstate,
    ResolveDispute,
    SuspendNow,
    WriteOff,
)
from billing.money import Money
from billing.refusals import Refused


def _invoice(state: BillingState, invoice_id: str) -> InvoiceBalance:
    invoice = state.invoice(invoice_id)
    if invoice is None:
        known = ", ".join(state.invoice_ids) or "none"
        raise Refused(f"invoice {invoice_id} is not one of this customer's invoices in this lifecycle ({known})")
    return invoice


def _same_currency(state: BillingState, amount: Money, what: str) -> None:
    if amount.currency != state.currency:
        raise Refused(f"{what} is in {amount.currency}; this account is billed in {state.currency}")


def _dispute(state: BillingState, dispute_id: str) -> DisputeRecord:
    dispute = state.dispute(dispute_id)
    if dispute is None:
        known = ", ".join(d.dispute_id for d in state.disputes) or "none"
        raise Refused(f"there is no dispute {dispute_id} on this account (disputes: {known})")
    return dispute


def check_payment(state: BillingState, payment: Payment) -> None:
    check_owner(state, payment.customer_id, payment.amount.currency)
    if payment.invoice_id is not None:
        _invoice(state, payment.invoice_id)


def check_write_off(state: BillingState, action: WriteOff) -> None:
    invoice = _invoice(state, action.invoice_id)
    if not invoice.outstanding.is_positive:
        raise Refused(f"invoice {action.invoice_id} has nothing outstanding to write off")
    if action.amount is not None:
        _same_currency(state, action.amount, "the write-off")
        if action.amount > invoice.outstanding:
            raise Refused(
                f"cannot write off {action.amount}: only {invoice.outstanding} is outstanding on {action.invoice_id}"
            )


def check_extend_due_date(state: BillingState, action: ExtendDueDate, now: datetime) -> None:
    invoice = _invoice(state, action.invoice_id)
    if not invoice.outstanding.is_positive:
        raise Refused(f"invoice {action.invoice_id} is already settled; there is no due date to move")
    today = now.astimezone(state.account.zone).date()
    if action.due_on < today:
        raise Refused(f"{action.due_on} is in the past (today is {today} in {state.account.time_zone})")
    if action.due_on <= invoice.due_on:
        raise Refused(f"{action.due_on} is not later than the current due date {invoice.due_on}")


def check_pause(state: BillingState, action: DunningPause, now: datetime) -> None:
    if action.until is not None and action.until <= now:
        raise Refused(f"until {action.until.isoformat()} is in the past")


def check_resume(state: BillingState, now: datetime) -> None:
    if not (state.dunning_paused and (state.paused_until is None or now < state.paused_until)):
        raise Refused("dunning is not paused, so there is nothing to resume")


def check_suspend_now(state: BillingState, action: SuspendNow, now: datetime) -> None:
    if state.suspension is not None:
        raise Refused(
            f"the account is already suspended ({state.suspension.reason.value} since "
            f"{state.suspension.suspended_at.isoformat(timespec='minutes')})"
        )
    if action.reason == "non_payment" and state.answers_per_subscription and not state.overdue_amount(now).is_positive:
        # The engine reinstates an account with nothing overdue at once, so this suspension would be undone
        # before Partner Center heard of it.
        raise Refused(
            f"nothing is overdue on this account ({state.balance.amount_due} due, none of it past its due date), "
            "so there is no non-payment to suspend for; use fraud_review to hold the account for review"
        )


def check_reinstate(state: BillingState, action: Reinstate) -> None:
    if state.suspension is None:
        raise Refused("nothing is suspended, so there is nothing to reinstate")


def _check_resolution(state: BillingState, dispute: DisputeRecord, action: ResolveDispute) -> None:
    if action.credit is not None:
        _same_currency(state, action.credit, "the credit")
        if action.credit > dispute.amount:
            raise Refused(f"cannot credit {action.credit}: the dispute is about {dispute.amount}")
        invoice = state.invoice(dispute.invoice_id)
        if invoice is not None and action.credit > invoice.outstanding:
            raise Refused(
                f"cannot credit {action.credit}: only {invoice.outstanding} is outstanding on {dispute.invoice_id}"
            )


def check_resolve_dispute(state: BillingState, action: ResolveDispute) -> None:
    dispute = _dispute(state, action.dispute_id)
    if dispute.state is DisputeState.RESOLVED:
        raise Refused(f"dispute {action.dispute_id} was already resolved ({dispute.outcome})")
    if dispute.state is DisputeState.ESCALATED:
        raise Refused(
            f"dispute {action.dispute_id} is escalated to 21Vianet: record its answer with resolve_escalation"
        )
    _check_resolution(state, dispute, action)


def check_escalate_dispute(state: BillingState, action: EscalateDispute) -> None:
    dispute = _dispute(state, action.dispute_id)
    if dispute.state is DisputeState.RESOLVED:
        raise Refused(f"dispute {action.dispute_id} is already resolved; there is nothing to escalate")
    if dispute.state is DisputeState.ESCALATED:
        raise Refused(f"dispute {action.dispute_id} is already escalated (since {dispute.escalated_at})")


def check_record_escalation(state: BillingState, action: RecordEscalation) -> None:
    dispute = _dispute(state, action.dispute_id)
    if dispute.escalated_at is None:
        raise Refused(f"dispute {action.dispute_id} was never escalated: escalate_dispute it first")
    if dispute.state is DisputeState.RESOLVED:
        raise Refused(f"dispute {action.dispute_id} is already resolved")


def check_resolve_escalation(state: BillingState, action: ResolveDispute) -> None:
    dispute = _dispute(state, action.dispute_id)
    if dispute.state is DisputeState.RESOLVED:
        raise Refused(f"dispute {action.dispute_id} was already resolved ({dispute.outcome})")
    if dispute.escalated_at is None:
        raise Refused(f"dispute {action.dispute_id} was never escalated: use resolve_dispute")
    _check_resolution(state, dispute, action)


def check_owner(state: BillingState, customer_id: str, currency: str) -> None:
    """A message other services send is about this customer, in this account's currency."""
    if customer_id != state.account.customer_id:
        raise Refused(f"belongs to customer {customer_id}, not {state.account.customer_id}")
    if currency != state.currency:
        raise Refused(f"amount is in {currency}; this account is billed in {state.currency}")


def check_dispute(state: BillingState, dispute: Dispute) -> None:
    """A dispute signal other services send: checked like an operator action, refused into `rejected`."""
    if dispute.customer_id != state.account.customer_id:
        raise Refused(f"belongs to customer {dispute.customer_id}, not {state.account.customer_id}")
    invoice = _invoice(state, dispute.invoice_id)
    if dispute.amount is not None:
        _same_currency(state, dispute.amount, "the disputed amount")
    if not invoice.outstanding.is_positive:
        raise Refused(f"invoice {dispute.invoice_id} is settled; there is nothing outstanding to dispute")
    already = state.disputed_amount(dispute.invoice_id)
    amount = state.amount_to_dispute(invoice, dispute.amount)
    if not amount.is_positive or amount + already > invoice.outstanding:
        raise Refused(
            f"cannot dispute {amount} of {dispute.invoice_id}: {invoice.outstanding} is outstanding and "
            f"{already} already disputed"
        )

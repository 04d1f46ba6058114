"""The `status` query's answer and the operator's Markdown summary, both read off the lifecycle state."""

from __future__ import annotations

from datetime import datetime

from billing.account_state import BillingState
from billing.collections import Decision, next_action, stage
from billing.models import BillingStatus, InvoiceState, InvoiceStatus
from billing.ports import InvoiceBalance


def _invoice_state(invoice: InvoiceBalance, now: datetime) -> InvoiceState:
    if not invoice.outstanding.is_positive:
        return InvoiceState.WRITTEN_OFF if invoice.written_off.is_positive else InvoiceState.PAID
    return InvoiceState.OVERDUE if invoice.due_at <= now else InvoiceState.OPEN


def build_status(state: BillingState, decision: Decision, now: datetime) -> BillingStatus:
    open_invoices = state.open_invoices()
    return BillingStatus(
        customer_id=state.account.customer_id,
        stage=stage(state, now),
        amount_due=state.balance.amount_due,
        overdue_amount=state.overdue_amount(now),
        unapplied_credit=state.balance.unapplied_credit,
        oldest_due_on=open_invoices[0].due_on if open_invoices else None,
        invoices=[
            InvoiceStatus(
                invoice_id=invoice.invoice_id,
                amount=invoice.amount,
                paid=invoice.paid,
                outstanding=invoice.outstanding,
                due_on=invoice.due_on,
                due_at=invoice.due_at,
                state=_invoice_state(invoice, now),
            )
            for invoice in sorted(state.balance.invoices, key=lambda i: (i.due_at, i.invoice_id))
        ],
        suspended_subscription_ids=list(state.suspension.subscription_ids) if state.suspension else [],
        paused=state.dunning_paused,
        next_action=next_action(decision),
        notices_sent=list(state.notices),
        rejected=list(state.rejected),
    )


def current_details(status: BillingStatus, time_zone: str) -> str:
    """Markdown for the Temporal UI: what an operator needs at a glance. Ids and amounts, no personal data."""
    lines = [
        f"**Stage:** {status.stage.value}",
        f"**Amount due:** {status.amount_due}"
        + (
            f" (overdue {status.overdue_amount})"
            if status.overdue_amount and status.overdue_amount.is_positive
            else ""
        ),
        f"**Oldest due date:** {status.oldest_due_on or '—'}",
    ]
    if status.next_action is not None:
        lines.append(
            f"**Next action:** {status.next_action.kind.value}"
            + (f" for {status.next_action.invoice_id}" if status.next_action.invoice_id else "")
            + f" at {status.next_action.at.isoformat(timespec='minutes')}"
            + f" (UTC; customer time zone {time_zone})"
        )
    if status.notices_sent:
        last = status.notices_sent[-1]
        lines.append(f"**Last notice:** {last.kind.value} at {last.at.isoformat(timespec='minutes')}")
    if status.suspended_subscription_ids:
        lines.append("**Suspended subscriptions:** " + ", ".join(status.suspended_subscription_ids))
    if status.paused:
        lines.append("**Dunning paused**")
    open_invoices = [invoice for invoice in status.invoices if invoice.outstanding.is_positive]
    if open_invoices:
        lines.append("")
        lines.append("| Invoice | Amount | Outstanding | Due | State |")
        lines.append("| --- | --- | --- | --- | --- |")
        lines.extend(
            f"| {invoice.invoice_id} | {invoice.amount} | {invoice.outstanding} | {invoice.due_on} "
            f"| {invoice.state.value} |"
            for invoice in open_invoices
        )
    if status.rejected:
        lines.append("")
        lines.append(
            f"**Rejected messages:** {len(status.rejected)} (last: {status.rejected[-1].name}: "
            f"{status.rejected[-1].reason})"
        )
    return "\n".join(lines)

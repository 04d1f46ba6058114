"""The `status` query's answer and the operator's Markdown summary, both read off the lifecycle state."""

from __future__ import annotations

from datetime import datetime

from billing.ledger_messages import InvoiceBalance
from billing.lifecycle.next_step import is_paused, next_action, stage
from billing.lifecycle.state import BillingState, DisputeRecord
from billing.lifecycle.steps import Decision
from billing.models import BillingStatus, DisputeState, DisputeStatus, InvoiceState, InvoiceStatus


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
        disputes=[_dispute_status(dispute) for dispute in state.disputes],
        suspended_subscription_ids=state.suspension.suspended_ids if state.suspension else [],
        suspended_subscriptions=(
            [state.suspension.names.get(i, i) for i in state.suspension.suspended_ids] if state.suspension else []
        ),
        paused=is_paused(state, now),
        paused_until=state.paused_until if is_paused(state, now) else None,
        next_action=next_action(decision),
        notices_sent=list(state.notices),
        rejected=list(state.rejected),
        timeline=list(state.timeline),
        pending=pending_in_words(state, now),
    )


def _dispute_status(dispute: DisputeRecord) -> DisputeStatus:
    pending = None
    if dispute.state is DisputeState.OPEN:
        pending = "the partner resolves it (resolve_dispute) or escalates it to 21Vianet (escalate_dispute)"
    elif dispute.state is DisputeState.ESCALATED and dispute.reference is None:
        pending = "the desk files the case in the Partner Center portal and records 21Vianet's reference"
    elif dispute.state is DisputeState.ESCALATED:
        pending = f"21Vianet's answer on case {dispute.reference} (resolve_escalation)"
    return DisputeStatus(
        dispute_id=dispute.dispute_id,
        invoice_id=dispute.invoice_id,
        amount=dispute.amount,
        state=dispute.state,
        escalation_reference=dispute.reference,
        reason=dispute.reason,
        opened_at=dispute.opened_at,
        outcome=dispute.outcome,
        pending=pending,
    )


def pending_in_words(state: BillingState, now: datetime) -> list[str]:
    """What the account waits for, as an operator would say it."""
    waiting = []
    suspension = state.suspension
    if suspension is not None:
        if suspension.held_for_operator:
            waiting.append(f"suspended for {suspension.reason.value}: reinstatement waits for an operator (reinstate)")
        elif state.open_disputes() and not state.dunnable_overdue_amount(now).is_positive:
            waiting.append("suspended: reinstatement waits for the open dispute to be resolved or the amount paid")
        else:
            waiting.append("suspended: reinstatement follows payment of everything overdue")
    for dispute in state.open_disputes():
        status = _dispute_status(dispute)
        waiting.append(f"dispute {dispute.dispute_id} on {dispute.invoice_id}: {status.pending}")
    if is_paused(state, now):
        until = state.paused_until.isoformat(timespec="minutes") if state.paused_until else "resume_dunning"
        waiting.append(f"dunning paused until {until}")
    if state.dunning_not_before is not None and state.dunning_not_before > now:
        waiting.append(f"grace after an upheld dispute until {state.dunning_not_before.isoformat(timespec='minutes')}")
    return waiting


def current_details(status: BillingStatus, time_zone: str) -> str:
    """Markdown for the Temporal UI: what an operator needs at a glance. Ids and amounts, no personal data."""
    lines = [
        f"**Stage:** {status.stage.value}",
        f"**Amount due:** {status.amount_due}"
        + (
            f" (overdue {status.overdue_amount})" if status.overdue_amount and status.overdue_amount.is_positive else ""
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
        lines.append(
            "**Suspended subscriptions:** "
            + ", ".join(status.suspended_subscriptions or status.suspended_subscription_ids)
        )
    if status.paused:
        lines.append(f"**Dunning paused** until {status.paused_until or 'resumed'}")
    open_disputes = [dispute for dispute in status.disputes if dispute.state is not DisputeState.RESOLVED]
    if open_disputes:
        lines.append(
            "**Open disputes:** "
            + "; ".join(
                f"{d.dispute_id} ({d.invoice_id}, {d.amount}, {d.state.value}"
                + (f", 21Vianet ref {d.escalation_reference}" if d.escalation_reference else "")
                + ")"
                for d in open_disputes
            )
        )
    if status.pending:
        lines.append("**Waiting for:** " + "; ".join(status.pending))
    open_invoices = [invoice for invoice in status.invoices if invoice.outstanding.is_positive]
    if open_invoices:
        lines.append("")
        lines.append("**Open invoices:**")
        lines.extend(
            f"- {invoice.invoice_id}: {invoice.outstanding} outstanding of {invoice.amount}, due {invoice.due_on} "
            f"({invoice.state.value})"
            for invoice in open_invoices
        )
    if status.rejected:
        lines.append("")
        lines.append(
            f"**Rejected messages:** {len(status.rejected)} (last: {status.rejected[-1].name}: "
            f"{status.rejected[-1].reason})"
        )
    return "\n".join(lines)

"""The `status` query's answer and the operator's Markdown summary, both read off the lifecycle state."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from billing import message_catalog as catalog
from billing.ledger_messages import InvoiceBalance
from billing.lifecycle.next_step import is_paused, next_action, stage
from billing.lifecycle.state import BillingState, DisputeRecord
from billing.lifecycle.steps import Decision
from billing.models import (
    BillingStatus,
    CustomerAccount,
    DisputeState,
    DisputeStatus,
    InvoiceState,
    InvoiceStatus,
    TimelineEntry,
)
from billing.policy import DATA_DELETION_AFTER_SUSPENSION


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
        until = _in_zone(state, state.paused_until) if state.paused_until else "resume_dunning"
        waiting.append(f"dunning paused until {until}")
    if state.dunning_not_before is not None and state.dunning_not_before > now:
        waiting.append(f"grace after an upheld dispute until {_in_zone(state, state.dunning_not_before)}")
    return waiting


def _in_zone(state: BillingState, moment: datetime) -> str:
    """ISO 8601 with the customer's offset, as the customer's clock reads it."""
    return moment.astimezone(state.account.zone).isoformat(timespec="minutes")


# The operator actions (the workflow's updates) among the timeline's entries; the rest are lifecycle events.
OPERATOR_ACTIONS = frozenset(
    message.name
    for workflow in catalog.CATALOG
    if workflow.workflow_type == "CustomerBilling"
    for message in workflow.messages
    if message.kind == "update"
)


def static_summary(account: CustomerAccount) -> str:
    """The Summary a starter gives a lifecycle (`static_summary`): the UI shows it for the run's whole life."""
    return f"Billing lifecycle of customer {account.customer_id}"


def static_details(account: CustomerAccount) -> str:
    """The Details a starter gives a lifecycle (`static_details`): what does not change in the run, and how to act
    on it. What changes is under Current Details. Ids only, like the summary: no personal data."""
    return "\n".join(
        [
            f"**Customer id:** {account.customer_id} · **Partner Center tenant:** {account.tenant_id} · "
            f"**Time zone:** {account.time_zone} · **Locale:** {account.locale}",
            "",
            "**Now:** Current Details (stage, amounts, next step, suspension, last operator action; press R to "
            "refresh).",
            "**Everything:** the `status` query (Queries tab): invoices, disputes, notices sent, rejected "
            "messages and the timeline, as JSON.",
            "**To act:** More Actions → Send an Update; each update says what JSON it takes. Add "
            '`"operator": "your name or login"`: the audit trail and the timeline name who acted. A refused '
            "update shows the reason and changes nothing.",
        ]
    )


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """A moment as the customer's clock reads it, with the zone named: `2026-12-24 18:00 (Asia/Shanghai)`."""
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M} ({zone.key})"


def last_operator_action(status: BillingStatus) -> TimelineEntry | None:
    return next((entry for entry in reversed(status.timeline) if entry.action in OPERATOR_ACTIONS), None)


def current_details(state: BillingState, status: BillingStatus) -> str:
    """Markdown for the Temporal UI's Current Details: what an operator needs at a glance, times in the customer's
    time zone. It names the customer: with encryption on, the data converter encrypts it like every payload
    (the UI reads it through the codec server); it never goes into a search attribute or a log."""
    account = state.account
    zone = account.zone
    lines = [
        f"**Customer:** {account.name} ({account.customer_id}), times in {zone.key}",
        f"**Stage:** {status.stage.value}",
        f"**Amount due:** {status.amount_due}"
        + (
            f" (overdue {status.overdue_amount})" if status.overdue_amount and status.overdue_amount.is_positive else ""
        ),
        f"**Oldest due date:** {status.oldest_due_on or '—'}",
    ]
    if status.next_action is not None:
        lines.append(
            f"**Next action:** {status.next_action.kind.value.replace('_', ' ')}"
            + (f" for {status.next_action.invoice_id}" if status.next_action.invoice_id else "")
            + f" at {local_time(status.next_action.at, zone)}"
        )
    if status.notices_sent:
        last = status.notices_sent[-1]
        lines.append(f"**Last notice:** {last.kind.value} at {local_time(last.at, zone)}")
    suspension = state.suspension
    if status.suspended_subscription_ids and suspension is not None:
        lines.append(
            "**Suspended subscriptions:** "
            + ", ".join(status.suspended_subscriptions or status.suspended_subscription_ids)
        )
        deletion = (suspension.suspended_at + DATA_DELETION_AFTER_SUSPENSION).astimezone(zone).date()
        lines.append(
            f"**Suspended since:** {local_time(suspension.suspended_at, zone)} ({suspension.reason.value}); "
            f"21Vianet deletes their data on {deletion} unless they are reinstated before"
        )
    if status.paused:
        until = local_time(status.paused_until, zone) if status.paused_until else "resume_dunning"
        lines.append(f"**Dunning paused** until {until}")
    action = last_operator_action(status)
    if action is not None:
        lines.append(
            f"**Last operator action:** {action.action}"
            + (f" ({action.reference})" if action.reference else "")
            + f" by {action.operator or 'an operator who gave no name'} at {local_time(action.at, zone)}"
            + (f": {action.detail}" if action.detail else "")
        )
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

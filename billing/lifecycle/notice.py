"""The notice a step sends, built from the lifecycle's state: which invoices it names, the amounts, what comes
next, what was suspended or restored, how the issue was resolved. Pure: the mailer renders and sends it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from billing.ledger_messages import EscalationCase, InvoiceBalance
from billing.lifecycle.forecast import forecast_steps
from billing.lifecycle.next_step import data_deletion_date
from billing.lifecycle.state import BillingState, DeskReport
from billing.lifecycle.steps import Step, StepKind
from billing.models import NextActionKind, NoticeKind, NoticeRecord, Payment
from billing.notice_request import NoticeDispute, NoticeNextStep, NoticeRequest
from billing.partner_center_messages import SubscriptionProblem
from billing.policy import CollectionsPolicy

DESK_PURPOSE: dict[StepKind, Literal["case", "chase", "desk_reminder", "fraud_review", "subscriptions"]] = {
    StepKind.SEND_ESCALATION_CASE: "case",
    StepKind.CHASE_ESCALATION_DESK: "chase",
    StepKind.REMIND_DESK: "desk_reminder",
    StepKind.SEND_FRAUD_REVIEW_CASE: "fraud_review",
    StepKind.REPORT_SUBSCRIPTIONS_TO_DESK: "subscriptions",
}


def notice_request(
    state: BillingState,
    policy: CollectionsPolicy,
    step: Step,
    now: datetime,
    workflow_id: str,
    case: EscalationCase | None = None,
) -> NoticeRequest:
    """What the mailer needs to send `step`'s notice now; `case` is the escalation case built for the desk."""
    kind = step.notice_kind
    if kind is None:
        raise ValueError(f"step {step.kind} sends no notice")
    suspension = state.suspension
    return NoticeRequest(
        key=step.key,
        kind=kind,
        account=state.account,
        workflow_id=workflow_id,
        at=now,
        invoices=_invoices_named(state, step, kind, now),
        amount_due=state.balance.amount_due,
        overdue_amount=state.overdue_amount(now),
        next_step=(
            suspension_outlook(state, policy, now)
            if kind in (NoticeKind.INVOICE, NoticeKind.REMINDER, NoticeKind.FINAL_NOTICE)
            else step.then
        ),
        suspended_on=suspension.suspended_at.astimezone(state.account.zone).date() if suspension else None,
        data_deletion_on=data_deletion_date(state),
        subscription_ids=(
            suspension.suspended_ids
            if suspension
            else list(state.issue.reinstated_subscription_ids)
            if state.issue
            else []
        ),
        subscription_names=dict(
            suspension.names if suspension else state.issue.subscription_names if state.issue else {}
        ),
        subscription_problems=_subscription_problems(state, step, kind),
        late_reinstatement=report.late_reinstatement if (report := _desk_report(state, step)) else False,
        resolution=resolution(state) if kind is NoticeKind.CLOSE_THE_LOOP else None,
        suspension_reason=suspension.reason.value if suspension else None,
        dispute=_notice_dispute(state, step.dispute_id),
        desk_purpose=DESK_PURPOSE.get(step.kind),
        escalation_case=case,
        payments=_case_payments(case, state.account.customer_id),
        notices_sent=_desk_notices(case, state) if kind is NoticeKind.ESCALATION_CASE else [],
    )


def _desk_report(state: BillingState, step: Step) -> DeskReport | None:
    if step.kind is not StepKind.REPORT_SUBSCRIPTIONS_TO_DESK:
        return None
    return next((report for report in state.desk_reports if report.key == step.key), None)


def _subscription_problems(state: BillingState, step: Step, kind: NoticeKind) -> list[SubscriptionProblem]:
    """For the desk, what Partner Center would not change; for the customer's close-the-loop notice, what
    was not restored."""
    report = _desk_report(state, step)
    if report is not None:
        return list(report.problems)
    if kind is NoticeKind.CLOSE_THE_LOOP and state.issue is not None:
        return list(state.issue.not_restored)
    return []


def _invoices_named(state: BillingState, step: Step, kind: NoticeKind, now: datetime) -> list[InvoiceBalance]:
    if kind is NoticeKind.INVOICE:
        return [invoice for invoice in state.balance.invoices if invoice.invoice_id == step.invoice_id]
    if kind in (NoticeKind.CLOSE_THE_LOOP, NoticeKind.DATA_DELETION_WARNING):
        return state.overdue_invoices(now) or []
    return state.overdue_invoices(now) or state.open_invoices()


def suspension_outlook(state: BillingState, policy: CollectionsPolicy, now: datetime) -> NoticeNextStep | None:
    """For a notice of the ladder sent now: the day the engine will suspend if nothing is paid, as `forecast`
    finds it with this notice sent (each later notice paced after it, a final notice superseding a reminder due
    the same morning), so the date quoted is the date that comes."""
    suspension = next((step for step in forecast_steps(state, policy, now) if step.kind is StepKind.SUSPEND), None)
    if suspension is None:
        return None
    return NoticeNextStep(kind=NextActionKind.SUSPENSION, on=suspension.at.astimezone(state.account.zone).date())


def resolution(state: BillingState) -> str:
    """How the issue was resolved, for the close-the-loop notice, e.g. "credit,21vianet_review" or "extension";
    empty when no way was recorded, and the notice then says so neutrally (never "thank you for your payment"
    when nothing was paid)."""
    ways = [way for way in (state.issue.resolutions if state.issue else []) if way != "uphold"]
    return ",".join(ways)


def _notice_dispute(state: BillingState, dispute_id: str | None) -> NoticeDispute | None:
    dispute = state.dispute(dispute_id) if dispute_id else None
    if dispute is None:
        return None
    return NoticeDispute(
        dispute_id=dispute.dispute_id,
        invoice_id=dispute.invoice_id,
        reason=dispute.reason,
        amount=dispute.amount,
        outcome=dispute.outcome,  # type: ignore[arg-type]
        credit=dispute.credit,
        note=dispute.resolution_note or dispute.escalation_note,
        escalation_reference=dispute.reference,
    )


def _desk_notices(case: EscalationCase | None, state: BillingState) -> list[NoticeRecord]:
    """Every notice the customer got: from the ledger's notice log when there is a case (all runs), else
    what this run sent."""
    if case is None:
        return list(state.notices)
    return [
        NoticeRecord(kind=entry.kind, at=entry.sent_at, invoice_id=entry.invoice_id, key=entry.key)
        for entry in case.notices
    ]


def _case_payments(case: EscalationCase | None, customer_id: str) -> list[Payment]:
    if case is None:
        return []
    return [
        Payment(
            payment_id=view.payment_id,
            customer_id=customer_id,
            amount=view.amount,
            received_at=view.received_at,
            invoice_id=view.allocations[0].invoice_id if len(view.allocations) == 1 else None,
        )
        for view in case.payments
    ]


def notice_summary(step: Step) -> str:
    """The activity's summary in the UI: which notice, for which invoice or dispute."""
    target = f" for {step.invoice_id}" if step.invoice_id else ""
    labels = {
        StepKind.SEND_INVOICE: "Invoice notice",
        StepKind.SEND_REMINDER: f"Reminder {step.rung}",
        StepKind.SEND_FINAL_NOTICE: "Final notice",
        StepKind.SEND_SUSPENSION_NOTICE: "Suspension notice",
        StepKind.SEND_DATA_DELETION_WARNING: f"Data deletion warning {step.rung}",
        StepKind.CLOSE_THE_LOOP: "Close-the-loop notice",
        StepKind.SEND_DISPUTE_RECEIVED: f"Dispute {step.dispute_id} received",
        StepKind.SEND_DISPUTE_RESOLVED: f"Dispute {step.dispute_id} resolved",
        StepKind.SEND_ESCALATION_CASE: f"Escalation case for dispute {step.dispute_id} to the desk",
        StepKind.CHASE_ESCALATION_DESK: f"Chase the desk on dispute {step.dispute_id} ({step.rung})",
        StepKind.REMIND_DESK: f"Remind the desk to resolve or escalate dispute {step.dispute_id}",
        StepKind.SEND_FRAUD_REVIEW_CASE: "Fraud review case to the desk",
        StepKind.REPORT_SUBSCRIPTIONS_TO_DESK: "Subscriptions Partner Center did not change, to the desk",
    }
    return labels.get(step.kind, step.kind.value) + target

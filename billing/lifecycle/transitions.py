"""How each fact and each outcome changes a lifecycle's state: one function per event, nothing else.

The workflow calls one of these right after the activity that caused it; the forecast and the tests call the
same ones, so what they check is what the engine does. Pure: no Temporal, no I/O, no clock (times are passed in).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from billing.ledger_messages import AccountBalance, PaymentRecorded
from billing.lifecycle.next_step import ladder_anchor
from billing.lifecycle.state import (
    BillingState,
    CollectionsIssue,
    DeskReport,
    DisputeRecord,
    StepFailure,
    Suspension,
    SuspensionReason,
)
from billing.lifecycle.steps import DUNNING_NOTICES, Step, StepKind
from billing.models import (
    Dispute,
    DisputeState,
    DunningPause,
    EscalateDispute,
    NoticeRecord,
    RecordEscalation,
    RejectedMessage,
    ResolveDispute,
    SuspendNow,
    TimelineEntry,
)
from billing.money import Money
from billing.partner_center_messages import ActiveSubscriptions, SubscriptionProblem, SubscriptionStatusChanged
from billing.policy import DATA_DELETION_AFTER_SUSPENSION

# A step whose activity failed for good is tried again later: 15 minutes, doubling, at most every 6 hours.
STEP_RETRY_BASE = timedelta(minutes=15)
STEP_RETRY_MAX = timedelta(hours=6)


# --- time passing ------------------------------------------------------------------------------------------


def time_passed(state: BillingState, now: datetime) -> None:
    """Open a collections issue the moment money is overdue or disputed; end it silently if the customer never
    heard of it. A pause with an end date ends by itself."""
    if state.dunning_paused and state.paused_until is not None and now >= state.paused_until:
        state.dunning_paused = False
        state.note(TimelineEntry(at=state.paused_until, action="dunning_resumed", detail="the pause ended"))
        state.paused_until = None
        _restart_if_warned(state, ladder_anchor(state))
    overdue = state.overdue_amount(now).is_positive or bool(state.open_disputes())
    if overdue and state.issue is None:
        key = f"{ladder_anchor(state) or 'dispute'}-{state.issue_count + 1}"
        state.issue = CollectionsIssue(key=key, opened_at=now)
        state.issue_count += 1
    elif not overdue and state.issue is not None and not state.issue.customer_told and state.suspension is None:
        state.issue = None


# --- facts other services report -------------------------------------------------------------------------


def invoice_booked(state: BillingState, invoice_id: str, balance: AccountBalance, at: datetime) -> None:
    """The ledger booked an invoice (again, on a repeated signal): it joins the run; the books are as returned."""
    if invoice_id not in state.invoice_ids:
        state.invoice_ids = [*state.invoice_ids, invoice_id]
        state.invoice_recorded_at = {**state.invoice_recorded_at, invoice_id: at}
    state.balance = balance


def payment_booked(state: BillingState, payment_id: str, recorded: PaymentRecorded) -> None:
    """The ledger booked a payment: invoices it paid join the run, and the open issue counts it."""
    state.payment_ids = [*state.payment_ids, payment_id]
    for allocation in recorded.allocations:
        if allocation.invoice_id not in state.invoice_ids:
            state.invoice_ids = [*state.invoice_ids, allocation.invoice_id]
    state.balance = recorded.balance
    _resolved_by(state, "payment")


def dispute_opened(state: BillingState, dispute: Dispute, amount: Money, at: datetime) -> None:
    """The ledger recorded the customer's dispute: the amount leaves the ladder until it is resolved."""
    state.disputes = [
        *state.disputes,
        DisputeRecord(
            dispute_id=dispute.dispute_id,
            invoice_id=dispute.invoice_id,
            amount=amount,
            reason=dispute.reason,
            opened_at=at,
        ),
    ]
    state.note(
        TimelineEntry(
            at=at, action="dispute_opened", detail=f"{amount} of {dispute.invoice_id}", reference=dispute.dispute_id
        )
    )


def books_changed(state: BillingState, balance: AccountBalance, at: datetime) -> None:
    """The books as the ledger has them now: invoices booked without reaching the run join it (their invoice
    notice follows), and what was paid, credited or written off meanwhile counts towards the open issue."""
    before = {invoice.invoice_id: invoice for invoice in state.balance.invoices}
    for invoice in balance.invoices:
        if invoice.invoice_id not in state.invoice_ids:
            state.invoice_ids = [*state.invoice_ids, invoice.invoice_id]
            state.invoice_recorded_at = {**state.invoice_recorded_at, invoice.invoice_id: at}
        earlier = before.get(invoice.invoice_id)
        if earlier is not None and invoice.due_at > earlier.due_at:
            # Given more time in the books themselves: as if an operator had extended the due date.
            if state.restarts_ladders:
                _restart(state, invoice.invoice_id)
            _resolved_by(state, "extension")
        if earlier is not None:
            for how, now_settled, was_settled in (
                ("payment", invoice.paid, earlier.paid),
                ("credit", invoice.credited, earlier.credited),
                ("write_off", invoice.written_off, earlier.written_off),
            ):
                if now_settled > was_settled:
                    _resolved_by(state, how)
    if balance != state.balance:
        state.note(
            TimelineEntry(
                at=at,
                action="ledger_changed",
                detail=f"amount due {state.balance.amount_due} -> {balance.amount_due} (from the ledger)",
            )
        )
    state.balance = balance


def message_rejected(state: BillingState, rejection: RejectedMessage) -> None:
    state.reject(rejection)


# --- operator decisions ----------------------------------------------------------------------------------


def dunning_paused(state: BillingState, pause: DunningPause) -> None:
    state.dunning_paused = True
    state.paused_until = pause.until


def dunning_resumed(state: BillingState) -> None:
    """An operator resumed dunning: a ladder that had reached its final notice warns again before suspending."""
    state.dunning_paused = False
    state.paused_until = None
    _restart_if_warned(state, ladder_anchor(state))


def due_date_moved(state: BillingState, invoice_id: str, balance: AccountBalance) -> None:
    """The ledger moved an invoice's due date: its ladder starts again from the new due moment, so reminders
    and the final notice go out again at the right distance before any suspension."""
    state.balance = balance
    if state.restarts_ladders:
        _restart(state, invoice_id)
    _resolved_by(state, "extension")


def written_off(state: BillingState, balance: AccountBalance) -> None:
    state.balance = balance
    _resolved_by(state, "write_off")


def suspended_by_operator(state: BillingState, action: SuspendNow, active: ActiveSubscriptions, at: datetime) -> None:
    """An operator suspends at once: the subscriptions active now are the ones acted on; fraud review holds
    the account suspended until an operator reinstates it."""
    reason = SuspensionReason(action.reason)
    state.suspension = Suspension(
        key=f"operator-suspension-{state.suspension_count + 1}",
        reason=reason,
        suspended_at=at,
        subscription_ids=active.subscription_ids,
        invoice_id=ladder_anchor(state),
        held_for_operator=reason is SuspensionReason.FRAUD_REVIEW,
        names=_names(active),
    )
    state.suspension_count += 1
    if state.issue is None:
        state.issue = CollectionsIssue(key=f"operator-{state.issue_count + 1}", opened_at=at)
        state.issue_count += 1


def reinstated_by_operator(state: BillingState, results: list[SubscriptionStatusChanged], at: datetime) -> None:
    """An operator reinstated: the ladder does not suspend again over the same invoice by itself."""
    suspension = state.suspension
    if suspension is None:
        raise ValueError("nothing is suspended")
    if suspension.invoice_id and suspension.invoice_id not in state.suspension_waived_for:
        state.suspension_waived_for = [*state.suspension_waived_for, suspension.invoice_id]
    reinstated(state, results, at)


def dispute_resolved(
    state: BillingState,
    resolution: ResolveDispute,
    at: datetime,
    *,
    by_21vianet: bool,
    balance: AccountBalance | None,
    grace_after_uphold: timedelta,
) -> None:
    """The partner (or 21Vianet) answered a dispute: a credit lowers the books (`balance` after the credit
    note); an upheld dispute returns to the ladder after a grace period."""
    dispute = _dispute(state, resolution.dispute_id)
    if balance is not None:
        state.balance = balance
    else:
        grace_ends = at + grace_after_uphold
        state.dunning_not_before = max(grace_ends, state.dunning_not_before or grace_ends)
        _restart_if_warned(state, dispute.invoice_id)
    dispute.state = DisputeState.RESOLVED
    dispute.outcome = resolution.outcome
    dispute.credit = resolution.credit
    dispute.resolution_note = resolution.note
    dispute.resolved_at = at
    dispute.resolved_by_21vianet = by_21vianet
    _resolved_by(state, "credit" if resolution.credit is not None else "uphold")
    if by_21vianet:
        _resolved_by(state, "21vianet_review")


def dispute_escalated(state: BillingState, escalation: EscalateDispute, at: datetime) -> None:
    dispute = _dispute(state, escalation.dispute_id)
    dispute.state = DisputeState.ESCALATED
    dispute.escalated_at = at
    dispute.escalation_note = escalation.note


def escalation_filed(state: BillingState, record: RecordEscalation, at: datetime) -> None:
    """21Vianet's reference for the case the desk filed."""
    dispute = _dispute(state, record.dispute_id)
    dispute.reference = record.reference
    dispute.reference_recorded_at = at


def operator_action_recorded(
    state: BillingState, action: str, reason: str, reference: str | None, at: datetime, operator: str | None = None
) -> None:
    """An accepted operator action and who acted, on the status's timeline (the ledger's audit trail has it too)."""
    state.note(TimelineEntry(at=at, action=action, detail=reason, reference=reference, operator=operator))


# --- outcomes of the lifecycle's own steps ---------------------------------------------------------------


def suspension_started(state: BillingState, step: Step, active: ActiveSubscriptions, at: datetime) -> None:
    """Recorded before Partner Center is asked, so a retry acts on exactly these subscriptions and
    reinstatement finds them all."""
    state.suspension = Suspension(
        key=step.key,
        reason=SuspensionReason.NON_PAYMENT,
        suspended_at=at,
        subscription_ids=active.subscription_ids,
        invoice_id=step.invoice_id,
        names=_names(active),
    )
    state.suspension_count += 1


def suspension_confirmed(state: BillingState, results: list[SubscriptionStatusChanged], at: datetime) -> None:
    """Partner Center answered for every subscription. Those it did not suspend (it refused, or they were no
    longer active) stay out of the suspension: the notice does not name them, reinstatement does not touch
    them, and the escalation desk is told which stayed active and why."""
    suspension = state.suspension
    if suspension is None:
        raise ValueError("nothing is suspended")
    suspension.confirmed = True
    if not state.answers_per_subscription:
        return  # a run recorded before: it claims what it asked for, as it did then
    problems = [_problem(result, suspension) for result in results if result.status != "suspended"]
    suspension.refused = problems
    if problems:
        _report_to_desk(state, DeskReport(key=f"desk-report-{suspension.key}", at=at, problems=problems))
    if suspension.subscription_ids and not suspension.suspended_ids:
        # Partner Center suspended none of them: nothing is suspended, and the customer is not told it was. The
        # ladder does not try again over this invoice by itself; the desk has the case.
        if suspension.invoice_id and suspension.invoice_id not in state.suspension_waived_for:
            state.suspension_waived_for = [*state.suspension_waived_for, suspension.invoice_id]
        state.suspension = None


def reinstated(state: BillingState, results: list[SubscriptionStatusChanged], at: datetime) -> None:
    """Partner Center answered the reactivation of what this engine suspended. Only what it reactivated is
    claimed as restored; the rest, and a reinstatement so late that 21Vianet may have deleted the data,
    go to the escalation desk."""
    suspension = state.suspension
    if suspension is None:
        raise ValueError("nothing is suspended")
    if not state.answers_per_subscription:
        # A run recorded before: it claims what it suspended as restored and tells the desk nothing, as then.
        if state.issue is not None:
            state.issue.reinstated_subscription_ids = list(suspension.subscription_ids)
        state.suspension = None
        return
    restored = [result.subscription_id for result in results if result.status == "active"]
    problems = [_problem(result, suspension) for result in results if result.status != "active"]
    late = at - suspension.suspended_at > DATA_DELETION_AFTER_SUSPENSION
    if state.issue is not None:
        state.issue.reinstated_subscription_ids = restored
        state.issue.not_restored = problems
        state.issue.subscription_names = dict(suspension.names)
    if problems or late:
        report = DeskReport(
            key=f"desk-report-reinstatement-{suspension.key}", at=at, problems=problems, late_reinstatement=late
        )
        _report_to_desk(state, report)
    state.suspension = None


def step_performed(state: BillingState, step: Step, at: datetime) -> None:
    """A step is done (a notice sent at `at`, or Partner Center's change made); the rungs it supersedes too."""
    if step.notice_kind is not None:
        state.record_notice(NoticeRecord(kind=step.notice_kind, at=at, invoice_id=step.invoice_id, key=step.key))
    state.done_keys = [*state.done_keys, *step.superseded_keys, step.key]
    state.failures.pop(step.key, None)
    # An issue exists only while money is overdue, so a pre-due reminder never counts as telling.
    if step.kind in DUNNING_NOTICES and state.issue is not None:
        state.issue.customer_told = True
    if step.kind is StepKind.CLOSE_THE_LOOP:
        state.issue = None


def step_failed(state: BillingState, step: Step, error: str, at: datetime) -> StepFailure:
    """A step's activity gave up: the core tries it again after a backoff that grows with each failure."""
    previous = state.failures.get(step.key)
    attempts = (previous.attempts if previous else 0) + 1
    delay = min(STEP_RETRY_BASE * (2 ** (attempts - 1)), STEP_RETRY_MAX)
    failure = StepFailure(key=step.key, attempts=attempts, retry_at=at + delay, error=error)
    state.failures = {**state.failures, step.key: failure}
    return failure


def _names(active: ActiveSubscriptions) -> dict[str, str]:
    """How the customer knows each subscription: "offer name (friendly name)", or the one Partner Center gave."""
    names = {}
    for summary in active.subscriptions:
        parts = [part for part in (summary.offer_name, summary.friendly_name) if part]
        if len(parts) == 2 and parts[0] != parts[1]:
            names[summary.subscription_id] = f"{parts[0]} ({parts[1]})"
        elif parts:
            names[summary.subscription_id] = parts[0]
    return names


def _problem(result: SubscriptionStatusChanged, suspension: Suspension) -> SubscriptionProblem:
    return SubscriptionProblem(
        subscription_id=result.subscription_id,
        name=suspension.names.get(result.subscription_id),
        status=result.status or None,
        error_code=result.error_code,
        error_text=result.error_text,
    )


def _report_to_desk(state: BillingState, report: DeskReport) -> None:
    if all(existing.key != report.key for existing in state.desk_reports):
        state.desk_reports = [*state.desk_reports, report]


def _restart(state: BillingState, invoice_id: str) -> None:
    state.ladder_restarts = {**state.ladder_restarts, invoice_id: state.ladder_restarts.get(invoice_id, 0) + 1}


def _restart_if_warned(state: BillingState, invoice_id: str | None) -> None:
    """After an interruption (a pause, an upheld dispute's grace), a ladder whose final notice already went out
    starts again, so the next suspension is announced afresh instead of following at once."""
    if state.suspension is not None:
        return  # suspended already: the ladder's warnings are behind it, reinstatement is what comes next
    if state.restarts_ladders and invoice_id is not None and state.is_done(state.rung_key("final-notice", invoice_id)):
        _restart(state, invoice_id)


def _resolved_by(state: BillingState, how: str) -> None:
    if state.issue is not None and how not in state.issue.resolutions:
        state.issue.resolutions = [*state.issue.resolutions, how]


def _dispute(state: BillingState, dispute_id: str) -> DisputeRecord:
    dispute = state.dispute(dispute_id)
    if dispute is None:
        raise ValueError(f"there is no dispute {dispute_id}")
    return dispute

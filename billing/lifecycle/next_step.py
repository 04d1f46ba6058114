"""The decision core: given the account, the policy and the time, which collections step is next and when.

Pure functions, no Temporal, no I/O. The workflow asks `decide()`, sleeps until the step is due (or a message
arrives), performs it through an activity and records the outcome with a function of `transitions`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from billing.lifecycle.state import BillingState, SuspensionReason
from billing.lifecycle.steps import (
    CUSTOMER_FACING_STEPS,
    NEXT_ACTION_OF_STEP,
    PACED_STEPS,
    STEP_ORDER,
    Decision,
    Step,
    StepKind,
)
from billing.models import STAGE_PRECEDENCE, BillingStage, NextAction, NextActionKind, NoticeKind
from billing.notice_request import NoticeNextStep
from billing.policy import DATA_DELETION_AFTER_SUSPENSION, CollectionsPolicy
from billing.quiet_hours import next_business_moment

DESK_NOTICE_KINDS = frozenset({NoticeKind.ESCALATION_CASE, NoticeKind.PARTNER_PAYABLE})


def ladder_anchor(state: BillingState) -> str | None:
    """The invoice the ladder counts from: the oldest one with money outstanding that is not disputed."""
    dunnable = state.dunnable_invoices()
    return dunnable[0].invoice_id if dunnable else None


def _adjust(kind: StepKind, at: datetime, state: BillingState, policy: CollectionsPolicy) -> datetime:
    if kind in CUSTOMER_FACING_STEPS:
        return next_business_moment(at, state.account.zone, policy.quiet_hours)
    return at


def _retry_floor(state: BillingState, key: str, at: datetime) -> datetime:
    failure = state.failures.get(key)
    return max(at, failure.retry_at) if failure else at


def _step(
    kind: StepKind,
    key: str,
    planned: datetime,
    state: BillingState,
    policy: CollectionsPolicy,
    now: datetime,
    **extra: object,
) -> Step:
    earliest = max(planned, now)
    if kind in PACED_STEPS:
        earliest = max(earliest, _paced(state, policy))
    at = _retry_floor(state, key, _adjust(kind, earliest, state, policy))
    return Step(kind=kind, key=key, at=at, planned=planned, **extra)  # type: ignore[arg-type]


def _paced(state: BillingState, policy: CollectionsPolicy) -> datetime:
    """The earliest moment for the next dunning notice: the gap after the last notice the customer got."""
    if not state.paces_notices:
        return datetime.min.replace(tzinfo=UTC)
    sent = [notice.at for notice in state.notices if notice.kind not in DESK_NOTICE_KINDS]
    return max(sent) + policy.notice_gap if sent else datetime.min.replace(tzinfo=UTC)


def pause_in_force(paused: bool, until: datetime | None, now: datetime) -> bool:
    """Dunning paused by an operator; a pause with an end date ends by itself."""
    return paused and (until is None or now < until)


def is_paused(state: BillingState, now: datetime) -> bool:
    return pause_in_force(state.dunning_paused, state.paused_until, now)


def _ladder(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    anchor_id = ladder_anchor(state)
    if anchor_id is None or is_paused(state, now):
        return []
    anchor = state.invoice(anchor_id)
    assert anchor is not None
    due = anchor.due_at
    # After an upheld dispute the customer gets a grace period: no dunning step sooner than its end.
    earliest = max(now, state.dunning_not_before) if state.dunning_not_before else now
    recorded_at = state.invoice_recorded_at.get(anchor_id, due)
    # Final notice and suspension only threaten what the policy would really do: not below the minimum.
    overdue = state.dunnable_overdue_amount(now)
    at_stake = overdue if overdue.is_positive else state.dunnable_outstanding(anchor)
    may_suspend = at_stake >= policy.minimum_to_suspend
    rungs: list[Step] = []
    for number, offset in enumerate(policy.reminders, start=1):
        if offset < timedelta(0) and due + offset < recorded_at:
            # A pre-due reminder that fell before the invoice reached us: the invoice notice says it all.
            continue
        rungs.append(
            _step(
                StepKind.SEND_REMINDER,
                state.rung_key(f"reminder-{number}", anchor_id),
                due + offset,
                state,
                policy,
                earliest,
                invoice_id=anchor_id,
                rung=number,
            )
        )
    if may_suspend:
        final_key = state.rung_key("final-notice", anchor_id)
        rungs.append(
            _step(
                StepKind.SEND_FINAL_NOTICE,
                final_key,
                due + policy.final_notice,
                state,
                policy,
                earliest,
                invoice_id=anchor_id,
            )
        )
        if state.suspension is None and anchor_id not in state.suspension_waived_for:
            rungs.append(_suspension_step(state, policy, anchor_id, due, final_key, earliest))
    pending = [rung for rung in rungs if not state.is_done(rung.key)]
    if state.suspension is not None:
        pending = [rung for rung in pending if rung.kind is not StepKind.SUSPEND]
    due_now = [rung for rung in pending if rung.planned <= now and rung.kind is not StepKind.SUSPEND]
    if len(due_now) > 1:
        latest = due_now[-1]
        superseded = tuple(rung.key for rung in due_now[:-1])
        pending = [_replace(latest, superseded_keys=superseded)] + [rung for rung in pending if rung not in due_now]
    then = _suspension_notice_date(pending, state)
    return [_replace(rung, then=then) if rung.kind is not StepKind.SUSPEND else rung for rung in pending]


def _suspension_step(
    state: BillingState,
    policy: CollectionsPolicy,
    anchor_id: str,
    due: datetime,
    final_key: str,
    now: datetime,
) -> Step:
    """Suspension comes `suspend_after` the due moment, and never sooner than the final notice promised."""
    at = due + policy.suspend_after
    final = next((n for n in state.notices if n.key == final_key), None)
    if final is not None:
        at = max(at, final.at + policy.final_notice_warning)
    elif not state.is_done(final_key):
        final_at = _step(StepKind.SEND_FINAL_NOTICE, final_key, due + policy.final_notice, state, policy, now).at
        at = max(at, final_at + policy.final_notice_warning)
    key = f"suspension-{anchor_id}-{state.suspension_count + 1}"
    return _step(StepKind.SUSPEND, key, at, state, policy, now, invoice_id=anchor_id)


def _suspension_notice_date(pending: list[Step], state: BillingState) -> NoticeNextStep | None:
    suspension = next((rung for rung in pending if rung.kind is StepKind.SUSPEND), None)
    if suspension is None:
        return None
    return NoticeNextStep(kind=NextActionKind.SUSPENSION, on=suspension.at.astimezone(state.account.zone).date())


def _replace(step: Step, **changes: object) -> Step:
    return replace(step, **changes)  # type: ignore[arg-type]


def data_deletion_date(state: BillingState) -> date | None:
    if state.suspension is None:
        return None
    deletion = state.suspension.suspended_at + DATA_DELETION_AFTER_SUSPENSION
    return deletion.astimezone(state.account.zone).date()


def _while_suspended(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    suspension = state.suspension
    if suspension is None:
        return []
    if not state.overdue_amount(now).is_positive and not suspension.held_for_operator:
        key = f"reinstatement-{suspension.key}"
        return [Step(kind=StepKind.REINSTATE, key=key, at=_retry_floor(state, key, now), planned=now)]
    if not suspension.confirmed:
        # Finish what was started on exactly the subscriptions listed then, however long Partner Center took.
        return [
            Step(
                kind=StepKind.SUSPEND,
                key=suspension.key,
                at=_retry_floor(state, suspension.key, now),
                planned=suspension.suspended_at,
                invoice_id=suspension.invoice_id,
            )
        ]
    deletion_on = data_deletion_date(state)
    assert deletion_on is not None
    then = NoticeNextStep(kind=NextActionKind.DATA_DELETION_WARNING, on=deletion_on)
    steps = []
    notice_key = f"{suspension.key}-notice"
    if not state.is_done(notice_key):
        steps.append(
            _step(
                StepKind.SEND_SUSPENSION_NOTICE,
                notice_key,
                suspension.suspended_at,
                state,
                policy,
                now,
                invoice_id=suspension.invoice_id,
                then=then,
            )
        )
    warnings = [
        _step(
            StepKind.SEND_DATA_DELETION_WARNING,
            f"data-deletion-warning-{number}-{suspension.key}",
            suspension.suspended_at + offset,
            state,
            policy,
            now,
            rung=number,
            then=then,
        )
        for number, offset in enumerate(policy.data_deletion_warnings, start=1)
    ]
    pending = [warning for warning in warnings if not state.is_done(warning.key)]
    due_now = [warning for warning in pending if warning.planned <= now]
    if len(due_now) > 1:
        superseded = tuple(warning.key for warning in due_now[:-1])
        pending = [_replace(due_now[-1], superseded_keys=superseded), *pending[len(due_now) :]]
    return [*steps, *pending]


def _invoice_notices(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    steps = []
    for invoice_id in state.invoice_ids:
        key = f"invoice-{invoice_id}"
        if not state.is_done(key):
            recorded = state.invoice_recorded_at.get(invoice_id)
            assert recorded is not None
            steps.append(_step(StepKind.SEND_INVOICE, key, recorded, state, policy, now, invoice_id=invoice_id))
    return steps


def _close_the_loop(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    issue = state.issue
    if issue is None or not issue.customer_told or not _account_clean(state, now):
        return []
    return [_step(StepKind.CLOSE_THE_LOOP, f"close-the-loop-{issue.key}", now, state, policy, now)]


def _account_clean(state: BillingState, now: datetime) -> bool:
    """Nothing overdue (disputed or not), no dispute open, nothing suspended."""
    return state.suspension is None and not state.overdue_amount(now).is_positive and not state.open_disputes()


def _dispute_steps(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    steps: list[Step] = []
    for dispute in state.disputes:
        ids = {"invoice_id": dispute.invoice_id, "dispute_id": dispute.dispute_id}
        received = f"dispute-received-{dispute.dispute_id}"
        if not state.is_done(received):
            steps.append(_step(StepKind.SEND_DISPUTE_RECEIVED, received, dispute.opened_at, state, policy, now, **ids))
        if dispute.resolved_at is not None:
            resolved = f"dispute-resolved-{dispute.dispute_id}"
            if not state.is_done(resolved):
                steps.append(
                    _step(
                        StepKind.SEND_DISPUTE_RESOLVED,
                        resolved,
                        dispute.resolved_at,
                        state,
                        policy,
                        now,
                        **ids,
                    )
                )
            continue
        if dispute.escalated_at is None:
            # Escalation is a person's decision: the desk is prompted once, never escalated for.
            reminder = f"desk-reminder-{dispute.dispute_id}"
            if not state.is_done(reminder):
                at = dispute.opened_at + policy.dispute.remind_desk_after
                steps.append(_step(StepKind.REMIND_DESK, reminder, at, state, policy, now, **ids))
            continue
        case = f"escalation-case-{dispute.dispute_id}"
        if not state.is_done(case):
            steps.append(_step(StepKind.SEND_ESCALATION_CASE, case, dispute.escalated_at, state, policy, now, **ids))
            continue
        # Chase the desk until 21Vianet's reference is recorded, then again until its answer is.
        phase, since = ("answer", dispute.reference_recorded_at) if dispute.reference else ("reference", None)
        since = since or dispute.escalated_at
        prefix = f"escalation-chase-{dispute.dispute_id}-{phase}-"
        chased = sum(1 for key in state.done_keys if key.startswith(prefix))
        at = since + policy.escalation.chase_after * (chased + 1)
        steps.append(
            _step(
                StepKind.CHASE_ESCALATION_DESK,
                f"{prefix}{chased + 1}",
                at,
                state,
                policy,
                now,
                rung=chased + 1,
                **ids,
            )
        )
    return steps


def _desk_reports(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    """Each report of subscriptions Partner Center would not change goes to the desk once, at any hour."""
    return [
        _step(StepKind.REPORT_SUBSCRIPTIONS_TO_DESK, report.key, report.at, state, policy, now)
        for report in state.desk_reports
        if not state.is_done(report.key)
    ]


def _fraud_review_case(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    suspension = state.suspension
    if suspension is None or suspension.reason is not SuspensionReason.FRAUD_REVIEW:
        return []
    key = f"fraud-review-case-{suspension.key}"
    if state.is_done(key):
        return []
    return [_step(StepKind.SEND_FRAUD_REVIEW_CASE, key, suspension.suspended_at, state, policy, now)]


def pending_steps(state: BillingState, policy: CollectionsPolicy, now: datetime) -> list[Step]:
    """Every step the account is waiting for, earliest first (ties: reinstatement before notices)."""
    steps = [
        *_while_suspended(state, policy, now),
        *_fraud_review_case(state, policy, now),
        *_desk_reports(state, policy, now),
        *_invoice_notices(state, policy, now),
        *_dispute_steps(state, policy, now),
        *_ladder(state, policy, now),
        *_close_the_loop(state, policy, now),
    ]
    return sorted(steps, key=lambda step: (step.at, STEP_ORDER[step.kind]))


def _next_due_moment(state: BillingState, now: datetime) -> datetime | None:
    """The next moment an open invoice falls due: the stage changes then even if no notice goes out."""
    upcoming = [invoice.due_at for invoice in state.open_invoices() if invoice.due_at > now]
    candidates = [*upcoming]
    if state.paused_until is not None and state.paused_until > now:
        candidates.append(state.paused_until)
    if state.dunning_not_before is not None and state.dunning_not_before > now:
        candidates.append(state.dunning_not_before)
    return min(candidates, default=None)


def is_settled(state: BillingState) -> bool:
    return (
        not state.balance.amount_due.is_positive
        and state.suspension is None
        and state.issue is None
        and not state.open_disputes()
    )


def decide(state: BillingState, policy: CollectionsPolicy, now: datetime) -> Decision:
    steps = pending_steps(state, policy, now)
    step = steps[0] if steps else None
    wake_candidates = [
        moment for moment in (step.at if step else None, _next_due_moment(state, now)) if moment is not None
    ]
    wake_at = min(wake_candidates, default=None)
    return Decision(step=step, wake_at=wake_at, finished=step is None and is_settled(state), pending=steps)


@dataclass(frozen=True)
class StageFacts:
    """What the stage is decided from: facts about the account at one moment. `stage()` reads them off the
    lifecycle's state; the aging report reads them off the books for many customers at once, without building
    a state for each."""

    suspended: bool
    disputed: bool  # a dispute is open
    escalated: bool  # an open dispute is escalated to 21Vianet
    paused: bool  # dunning is paused (`pause_in_force`)
    final_notice: bool  # the final notice of an invoice now overdue went out (`rung_key("final-notice", ...)`)
    overdue: bool  # money is outstanding on invoices now overdue (`is_overdue`)
    owed: bool  # money is outstanding


def stage_of(facts: StageFacts) -> BillingStage:
    """The first stage of the contract's precedence (`STAGE_PRECEDENCE`) that holds."""
    holds = {
        BillingStage.SUSPENDED: facts.suspended,
        BillingStage.ESCALATED: facts.escalated,
        BillingStage.DISPUTED: facts.disputed,
        BillingStage.PAUSED: facts.paused and facts.owed,
        BillingStage.FINAL_NOTICE: facts.overdue and facts.final_notice,
        BillingStage.OVERDUE: facts.overdue,
        BillingStage.CURRENT: facts.owed,
        BillingStage.RESOLVED: True,
    }
    return next(candidate for candidate in STAGE_PRECEDENCE if holds[candidate])


def stage(state: BillingState, now: datetime) -> BillingStage:
    """The account's stage at `now`: `stage_of` the facts its state shows."""
    open_disputes = state.open_disputes()
    return stage_of(
        StageFacts(
            suspended=state.suspension is not None,
            disputed=bool(open_disputes),
            escalated=any(dispute.escalated_at is not None for dispute in open_disputes),
            paused=is_paused(state, now),
            final_notice=any(
                state.is_done(state.rung_key("final-notice", invoice.invoice_id))
                for invoice in state.overdue_invoices(now)
            ),
            overdue=state.overdue_amount(now).is_positive,
            owed=state.balance.amount_due.is_positive,
        )
    )


def next_action(decision: Decision) -> NextAction | None:
    step = decision.step
    if step is None:
        return None
    return NextAction(kind=NEXT_ACTION_OF_STEP[step.kind], at=step.at, invoice_id=step.invoice_id)

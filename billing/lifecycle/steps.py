"""The steps a lifecycle takes (notices, suspension, reinstatement, desk cases) and the decision that names the
next one: plain values, no rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from billing.models import NextActionKind, NoticeKind
from billing.notice_request import NoticeNextStep


class StepKind(StrEnum):
    SEND_INVOICE = "send_invoice"
    SEND_REMINDER = "send_reminder"
    SEND_FINAL_NOTICE = "send_final_notice"
    SUSPEND = "suspend"
    SEND_SUSPENSION_NOTICE = "send_suspension_notice"
    SEND_DATA_DELETION_WARNING = "send_data_deletion_warning"
    REINSTATE = "reinstate"
    CLOSE_THE_LOOP = "close_the_loop"
    SEND_DISPUTE_RECEIVED = "send_dispute_received"
    SEND_DISPUTE_RESOLVED = "send_dispute_resolved"
    SEND_ESCALATION_CASE = "send_escalation_case"
    CHASE_ESCALATION_DESK = "chase_escalation_desk"
    REMIND_DESK = "remind_desk"
    SEND_FRAUD_REVIEW_CASE = "send_fraud_review_case"
    REPORT_SUBSCRIPTIONS_TO_DESK = "report_subscriptions_to_desk"


NOTICE_OF_STEP: dict[StepKind, NoticeKind] = {
    StepKind.SEND_INVOICE: NoticeKind.INVOICE,
    StepKind.SEND_REMINDER: NoticeKind.REMINDER,
    StepKind.SEND_FINAL_NOTICE: NoticeKind.FINAL_NOTICE,
    StepKind.SEND_SUSPENSION_NOTICE: NoticeKind.SUSPENSION,
    StepKind.SEND_DATA_DELETION_WARNING: NoticeKind.DATA_DELETION_WARNING,
    StepKind.CLOSE_THE_LOOP: NoticeKind.CLOSE_THE_LOOP,
    StepKind.SEND_DISPUTE_RECEIVED: NoticeKind.DISPUTE_RECEIVED,
    StepKind.SEND_DISPUTE_RESOLVED: NoticeKind.DISPUTE_RESOLVED,
    StepKind.SEND_ESCALATION_CASE: NoticeKind.ESCALATION_CASE,
    StepKind.CHASE_ESCALATION_DESK: NoticeKind.ESCALATION_CASE,
    StepKind.REMIND_DESK: NoticeKind.ESCALATION_CASE,
    StepKind.SEND_FRAUD_REVIEW_CASE: NoticeKind.ESCALATION_CASE,
    StepKind.REPORT_SUBSCRIPTIONS_TO_DESK: NoticeKind.ESCALATION_CASE,
}

NEXT_ACTION_OF_STEP: dict[StepKind, NextActionKind] = {
    StepKind.SEND_INVOICE: NextActionKind.INVOICE,
    StepKind.SEND_REMINDER: NextActionKind.REMINDER,
    StepKind.SEND_FINAL_NOTICE: NextActionKind.FINAL_NOTICE,
    StepKind.SUSPEND: NextActionKind.SUSPENSION,
    StepKind.SEND_SUSPENSION_NOTICE: NextActionKind.SUSPENSION,
    StepKind.SEND_DATA_DELETION_WARNING: NextActionKind.DATA_DELETION_WARNING,
    StepKind.REINSTATE: NextActionKind.REINSTATEMENT,
    StepKind.CLOSE_THE_LOOP: NextActionKind.CLOSE_THE_LOOP,
    StepKind.SEND_DISPUTE_RECEIVED: NextActionKind.DISPUTE_RECEIVED,
    StepKind.SEND_DISPUTE_RESOLVED: NextActionKind.DISPUTE_RESOLVED,
    StepKind.SEND_ESCALATION_CASE: NextActionKind.ESCALATION_CASE,
    StepKind.CHASE_ESCALATION_DESK: NextActionKind.ESCALATION_CHASE,
    StepKind.REMIND_DESK: NextActionKind.DESK_REMINDER,
    StepKind.SEND_FRAUD_REVIEW_CASE: NextActionKind.ESCALATION_CASE,
    StepKind.REPORT_SUBSCRIPTIONS_TO_DESK: NextActionKind.ESCALATION_CASE,
}

DUNNING_NOTICES = frozenset(
    {
        StepKind.SEND_REMINDER,
        StepKind.SEND_FINAL_NOTICE,
        StepKind.SUSPEND,
        StepKind.SEND_SUSPENSION_NOTICE,
        StepKind.SEND_DATA_DELETION_WARNING,
        StepKind.SEND_DISPUTE_RECEIVED,
    }
)
# Dunning notices a catch-up spaces out (policy.notice_gap): never two of them closer than the gap.
PACED_STEPS = frozenset({StepKind.SEND_REMINDER, StepKind.SEND_FINAL_NOTICE, StepKind.SEND_DATA_DELETION_WARNING})
# Steps for the partner's own escalation desk: they go out at any hour.
DESK_STEPS = frozenset(
    {
        StepKind.SEND_ESCALATION_CASE,
        StepKind.CHASE_ESCALATION_DESK,
        StepKind.REMIND_DESK,
        StepKind.SEND_FRAUD_REVIEW_CASE,
        StepKind.REPORT_SUBSCRIPTIONS_TO_DESK,
    }
)
# Steps the customer sees as they happen: they wait for business hours. Reinstatement never waits.
CUSTOMER_FACING_STEPS = frozenset(StepKind) - {StepKind.REINSTATE} - DESK_STEPS


@dataclass(frozen=True)
class Step:
    kind: StepKind
    key: str  # idempotency key: also the notice key and the base of Partner Center request ids
    at: datetime  # when it happens: not before now, and inside business hours where it is customer-facing
    planned: datetime  # the moment the policy names for it (may be past: then the step is overdue)
    invoice_id: str | None = None
    dispute_id: str | None = None
    rung: int = 0  # 1-based reminder or warning number
    superseded_keys: tuple[str, ...] = ()  # earlier rungs that are due too: sending this one replaces them
    then: NoticeNextStep | None = None  # what happens next, for the notice's wording

    @property
    def notice_kind(self) -> NoticeKind | None:
        return NOTICE_OF_STEP.get(self.kind)


@dataclass(frozen=True)
class Decision:
    step: Step | None  # the next step, due now or later; None: nothing planned
    wake_at: datetime | None  # when to look again even if no message arrives
    finished: bool  # nothing owed, nothing open: the run may complete
    pending: list[Step] = field(default_factory=list)


# Ties at the same moment: reinstatement first, then what the customer must hear before being chased.
STEP_ORDER = {
    kind: index
    for index, kind in enumerate(
        [
            StepKind.REINSTATE,
            StepKind.SUSPEND,
            StepKind.SEND_FRAUD_REVIEW_CASE,
            StepKind.REPORT_SUBSCRIPTIONS_TO_DESK,
            StepKind.SEND_SUSPENSION_NOTICE,
            StepKind.SEND_INVOICE,
            StepKind.SEND_DISPUTE_RECEIVED,
            StepKind.SEND_ESCALATION_CASE,
            StepKind.SEND_DISPUTE_RESOLVED,
            StepKind.CLOSE_THE_LOOP,
            StepKind.SEND_FINAL_NOTICE,
            StepKind.SEND_REMINDER,
            StepKind.SEND_DATA_DELETION_WARNING,
            StepKind.REMIND_DESK,
            StepKind.CHASE_ESCALATION_DESK,
        ]
    )
}

"""What a lifecycle will do, and when, if nothing changes: the decision core and the transitions run forward on
a copy of the state, so a notice or the rendered collections policy that quotes these dates can never disagree
with what the engine does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from billing.lifecycle import transitions
from billing.lifecycle.next_step import decide
from billing.lifecycle.state import BillingState
from billing.lifecycle.steps import StepKind
from billing.partner_center_messages import ActiveSubscriptions
from billing.policy import CollectionsPolicy


@dataclass(frozen=True)
class ForecastStep:
    kind: StepKind
    at: datetime
    key: str


def forecast(state: BillingState, policy: CollectionsPolicy, now: datetime, limit: int = 100) -> list[ForecastStep]:
    """Every step from `now` on if no payment, dispute or operator action comes, each performed as the
    workflow performs it (Partner Center and the mailer always succeeding)."""
    return list(forecast_steps(state, policy, now, limit))


def forecast_steps(
    state: BillingState, policy: CollectionsPolicy, now: datetime, limit: int = 100
) -> Iterator[ForecastStep]:
    """`forecast`, one step at a time: a caller that needs only the first steps (the suspension a notice quotes)
    stops there instead of running the core through every later warning."""
    future = state.model_copy(deep=True)
    for _ in range(limit):
        transitions.time_passed(future, now)
        decision = decide(future, policy, now)
        step = decision.step
        if step is None:
            break
        if step.at > now:
            # Like the workflow: sleep until the step is due, then decide again (a later rung may now
            # supersede it).
            now = step.at
            continue
        yield ForecastStep(kind=step.kind, at=step.at, key=step.key)
        if step.kind is StepKind.SUSPEND:
            if future.suspension is None:
                transitions.suspension_started(future, step, ActiveSubscriptions(subscription_ids=[]), now)
            transitions.suspension_confirmed(future, [], now)
        elif step.kind is StepKind.REINSTATE:
            transitions.reinstated(future, [], now)
        transitions.step_performed(future, step, now)

"""What the books say about a customer besides amounts: notices sent, disputes and their escalation, operator
actions; and what follows from them (suspended or not, which disputes are open), for both reports.

The ledger has no table of suspensions: Temporal's lifecycle keeps that state. The books still show every
suspension a customer was told of (the `suspension` notice, or an operator's `suspend_now`, or a data deletion
warning) and every end of one (an operator's `reinstate`, or the `close_the_loop` notice that follows the
reinstatement after payment), and that is what the reports read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import String, cast, literal_column, null

from billing.ledger.schema import audit_trail, disputes, escalations, notice_log
from billing.models import NoticeKind

# Operator actions (update names, as the audit trail records them) the reports read.
SUSPEND_NOW = "suspend_now"
REINSTATE = "reinstate"
RESOLVE_DISPUTE = "resolve_dispute"
RESOLVE_ESCALATION = "resolve_escalation"
PAUSE_DUNNING = "pause_dunning"
RESUME_DUNNING = "resume_dunning"
ACTIONS_READ = (SUSPEND_NOW, REINSTATE, RESOLVE_DISPUTE, RESOLVE_ESCALATION, PAUSE_DUNNING, RESUME_DUNNING)

SUSPENSION_STARTS = frozenset({NoticeKind.SUSPENSION.value, NoticeKind.DATA_DELETION_WARNING.value})
SUSPENSION_ENDS = frozenset({NoticeKind.CLOSE_THE_LOOP.value})


class Fact(NamedTuple):
    """One row of the facts query: `source` is notice, dispute, escalation or action; `kind` the notice kind,
    escalation status or action name; `ref` the notice key, dispute id or action id. A tuple, so that a report
    over every customer makes hundreds of thousands of them cheaply (`Fact._make(row)`)."""

    customer_id: str
    source: str
    kind: str | None
    ref: str
    invoice_id: str | None
    amount: Decimal | None
    at: datetime
    detail: str | None  # an action's details, as JSON

    @property
    def details(self) -> dict[str, Any]:
        if not self.detail:
            return {}
        loaded = json.loads(self.detail)
        return loaded if isinstance(loaded, dict) else {}


def _text(value: str) -> Any:
    return cast(literal_column(f"'{value}'"), String)


def fact_selects(notices_where: Any = None) -> list[Any]:
    """The SELECTs whose UNION ALL is the facts query, columns as `Fact`'s; `notices_where`, if given, keeps only
    the notices it holds for. The disputes come first: a UNION takes its column types (money, aware datetimes)
    from its first SELECT."""
    notices = notice_log.select().with_only_columns(
        notice_log.c.customer_id,
        _text("notice"),
        notice_log.c.kind,
        notice_log.c.key,
        notice_log.c.invoice_id,
        null(),
        notice_log.c.sent_at,
        cast(null(), String),
    )
    return [
        disputes.select().with_only_columns(
            disputes.c.customer_id,
            _text("dispute").label("source"),
            cast(null(), String).label("kind"),
            disputes.c.dispute_id.label("ref"),
            disputes.c.invoice_id,
            disputes.c.amount,
            disputes.c.opened_at.label("at"),
            cast(null(), String).label("detail"),
        ),
        notices if notices_where is None else notices.where(notices_where),
        escalations.select().with_only_columns(
            escalations.c.customer_id,
            _text("escalation"),
            escalations.c.status,
            escalations.c.dispute_id,
            cast(null(), String),
            null(),
            escalations.c.opened_at,
            cast(null(), String),
        ),
        audit_trail.select()
        .with_only_columns(
            audit_trail.c.customer_id,
            _text("action"),
            audit_trail.c.action,
            audit_trail.c.action_id,
            cast(null(), String),
            null(),
            audit_trail.c.at,
            cast(audit_trail.c.details, String),
        )
        .where(audit_trail.c.action.in_(ACTIONS_READ)),
    ]


def fact_of(row: Any) -> Fact:
    return Fact(
        customer_id=row.customer_id,
        source=row.source,
        kind=row.kind,
        ref=row.ref,
        invoice_id=row.invoice_id,
        amount=row.amount,
        at=row.at,
        detail=row.detail,
    )


def in_order(facts: Iterable[Fact]) -> list[Fact]:
    return sorted(facts, key=lambda fact: (fact.at, fact.source, fact.ref))


# --- suspensions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuspensionSpan:
    """A suspension as the books show it: when it began and how, and when and how it ended (if it did)."""

    started_at: datetime
    by_operator: bool
    ended_at: datetime | None = None
    ended_by_operator: bool = False


def _starts_suspension(fact: Fact) -> bool:
    if fact.source == "notice":
        return fact.kind in SUSPENSION_STARTS
    return fact.source == "action" and fact.kind == SUSPEND_NOW


def _ends_suspension(fact: Fact) -> bool:
    if fact.source == "notice":
        return fact.kind in SUSPENSION_ENDS
    return fact.source == "action" and fact.kind == REINSTATE


def suspension_spans(facts: Sequence[Fact]) -> list[SuspensionSpan]:
    """One customer's suspensions, oldest first, from `facts` in time order. A suspend_now and the suspension
    notice that follows it are one suspension; a close-the-loop notice while nothing is suspended ends none."""
    spans: list[SuspensionSpan] = []
    current: SuspensionSpan | None = None
    for fact in facts:
        if current is None and _starts_suspension(fact):
            current = SuspensionSpan(started_at=fact.at, by_operator=fact.source == "action")
        elif current is not None and _ends_suspension(fact):
            by_operator = fact.source == "action"
            spans.append(SuspensionSpan(current.started_at, current.by_operator, fact.at, by_operator))
            current = None
    if current is not None:
        spans.append(current)
    return spans


# --- disputes ---------------------------------------------------------------------------------------------


def resolved_dispute_ids(facts: Iterable[Fact]) -> set[str]:
    """Disputes the partner or 21Vianet answered: a resolve_dispute or resolve_escalation action naming it, or
    its escalation closed."""
    resolved = set()
    for fact in facts:
        if fact.source == "action" and fact.kind in (RESOLVE_DISPUTE, RESOLVE_ESCALATION):
            dispute_id = fact.details.get("dispute_id")
            if dispute_id:
                resolved.add(str(dispute_id))
        elif fact.source == "escalation" and fact.kind == "resolved":
            resolved.add(fact.ref)
    return resolved

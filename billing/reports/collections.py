"""The collections report for a period: notices sent by kind, suspensions and reinstatements, money collected,
written off and credited (per currency), disputes opened, escalated and resolved, all read off the ledger in one
SQL query. An event counts in the period when it falls between the start of the first day and the end of the
last day in its customer's time zone (default Asia/Shanghai), as the aging report reads its as-of date.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, String, cast, literal_column, null, or_, select, union_all

from billing.due_dates import due_moment
from billing.ledger.schema import credit_notes, customers, escalation_history, escalations, payments, write_offs
from billing.ledger.store import reading
from billing.models import DEFAULT_TIME_ZONE
from billing.reports.facts import (
    RESOLVE_DISPUTE,
    RESOLVE_ESCALATION,
    SUSPENSION_ENDS,
    SUSPENSION_STARTS,
    Fact,
    fact_of,
    fact_selects,
    in_order,
    suspension_spans,
)

# Enough either side of the period in UTC for every customer's zone (UTC-12 to UTC+14).
_ZONE_MARGIN = timedelta(days=1)


class MoneyKind:
    COLLECTED = "collected"
    WRITTEN_OFF = "written_off"
    CREDITED = "credited"


MONEY_KINDS = (MoneyKind.COLLECTED, MoneyKind.WRITTEN_OFF, MoneyKind.CREDITED)


@dataclass
class CollectionsReport:
    period_from: date
    period_to: date
    currency: str | None  # the --currency filter of the amounts, if any
    notices: Counter[str] = field(default_factory=Counter)  # by notice kind
    suspensions: int = 0
    suspensions_by_operator: int = 0
    reinstatements: int = 0
    reinstatements_by_operator: int = 0
    # currency -> money kind -> amount, and how many entries made it
    amounts: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    entries: dict[str, dict[str, int]] = field(default_factory=dict)
    disputes_opened: int = 0
    disputes_escalated: int = 0
    disputes_resolved: int = 0

    def add_money(self, currency: str, kind: str, amount: Decimal) -> None:
        amounts = self.amounts.setdefault(currency, dict.fromkeys(MONEY_KINDS, Decimal("0.00")))
        entries = self.entries.setdefault(currency, dict.fromkeys(MONEY_KINDS, 0))
        amounts[kind] += amount
        entries[kind] += 1


def period_moments(period_from: date, period_to: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start of `period_from`, end of `period_to`) in `zone`."""
    return datetime.combine(period_from, time(0), tzinfo=zone), due_moment(period_to, zone)


def _money_select(table: Any, kind: str, key: Any, at: Any) -> Any:
    return table.select().with_only_columns(
        table.c.customer_id,
        cast(literal_column(f"'{kind}'"), String).label("source"),
        table.c.currency.label("kind"),
        key.label("ref"),
        table.c.invoice_id,
        table.c.amount,
        at.label("at"),
        cast(null(), String).label("detail"),
    )


def collections_report(
    engine: Engine, period_from: date, period_to: date, currency: str | None = None
) -> CollectionsReport:
    if period_to < period_from:
        raise ValueError(f"the period ends ({period_to}) before it begins ({period_from})")
    earliest = datetime.combine(period_from, time(0), tzinfo=ZoneInfo("UTC")) - _ZONE_MARGIN
    latest = due_moment(period_to, ZoneInfo("UTC")) + _ZONE_MARGIN
    money = [
        _money_select(payments, MoneyKind.COLLECTED, payments.c.payment_id, payments.c.received_at),
        _money_select(write_offs, MoneyKind.WRITTEN_OFF, write_offs.c.write_off_id, write_offs.c.posted_at),
        _money_select(credit_notes, MoneyKind.CREDITED, credit_notes.c.credit_id, credit_notes.c.posted_at),
    ]
    resolved_escalations = select(
        escalations.c.customer_id,
        cast(literal_column("'escalation_resolved'"), String),
        escalation_history.c.status,
        escalation_history.c.dispute_id,
        cast(null(), String),
        null(),
        escalation_history.c.at,
        cast(null(), String),
    ).join_from(escalation_history, escalations, escalations.c.dispute_id == escalation_history.c.dispute_id)
    parts = []
    for part in [*money, *fact_selects(), resolved_escalations.where(escalation_history.c.status == "resolved")]:
        at = part.selected_columns[6]
        in_window = (at >= earliest) & (at < latest)
        kind = part.selected_columns[2]
        # A suspension's history before the period tells whether a reinstatement in it ends one.
        suspension_history = kind.in_([*SUSPENSION_STARTS, *SUSPENSION_ENDS, "suspend_now", "reinstate"]) & (
            at < latest
        )
        parts.append(part.where(or_(in_window, suspension_history)))
    events = union_all(*parts).subquery()
    query = select(events, customers.c.time_zone).outerjoin(customers, customers.c.customer_id == events.c.customer_id)
    with reading(engine) as connection:
        rows = connection.execute(query).all()
    return build_collections(rows, period_from, period_to, currency)


def build_collections(
    rows: Sequence[Any], period_from: date, period_to: date, currency: str | None = None
) -> CollectionsReport:
    """The report from the query's rows (each a `Fact` and its customer's time zone): pure, no I/O."""
    report = CollectionsReport(period_from, period_to, currency)
    windows: dict[str, tuple[datetime, datetime]] = {}

    def within(time_zone: str | None, at: datetime) -> bool:
        zone_name = time_zone or DEFAULT_TIME_ZONE
        if zone_name not in windows:
            windows[zone_name] = period_moments(period_from, period_to, ZoneInfo(zone_name))
        start, end = windows[zone_name]
        return start <= at < end

    facts_of: dict[str, list[Fact]] = defaultdict(list)
    zone_of: dict[str, str | None] = {}
    resolutions: dict[str, datetime] = {}
    resolution_zone: dict[str, str | None] = {}
    for row in rows:
        fact = fact_of(row)
        zone = row.time_zone
        if fact.source in MONEY_KINDS:
            if within(zone, fact.at) and (currency is None or fact.kind == currency):
                assert fact.amount is not None and fact.kind is not None
                report.add_money(fact.kind, fact.source, fact.amount)
            continue
        dispute_id = _resolved_dispute(fact)
        if dispute_id is not None:
            if dispute_id not in resolutions or fact.at < resolutions[dispute_id]:
                resolutions[dispute_id] = fact.at
                resolution_zone[dispute_id] = zone
            continue
        facts_of[fact.customer_id].append(fact)
        zone_of[fact.customer_id] = zone
    for dispute_id, at in resolutions.items():
        report.disputes_resolved += within(resolution_zone[dispute_id], at)
    for customer_id, facts in facts_of.items():
        _count_customer(report, in_order(facts), lambda at, z=zone_of[customer_id]: within(z, at))
    return report


def _resolved_dispute(fact: Fact) -> str | None:
    """The dispute a resolution fact resolves (the partner's answer, 21Vianet's, or the escalation closed)."""
    if fact.source == "escalation_resolved":
        return fact.ref
    if fact.source == "action" and fact.kind in (RESOLVE_DISPUTE, RESOLVE_ESCALATION):
        dispute_id = fact.details.get("dispute_id")
        return str(dispute_id) if dispute_id else None
    return None


def _count_customer(report: CollectionsReport, facts: Sequence[Fact], within: Any) -> None:
    for fact in facts:
        if not within(fact.at):
            continue
        if fact.source == "notice" and fact.kind is not None:
            report.notices[fact.kind] += 1
        elif fact.source == "dispute":
            report.disputes_opened += 1
        elif fact.source == "escalation":
            report.disputes_escalated += 1
    for span in suspension_spans(facts):
        if within(span.started_at):
            report.suspensions += 1
            report.suspensions_by_operator += span.by_operator
        if span.ended_at is not None and within(span.ended_at):
            report.reinstatements += 1
            report.reinstatements_by_operator += span.ended_by_operator

"""The accounts-receivable aging report: every customer's open invoices by how long they are overdue, as of the
end of a day in each customer's own time zone, one table per currency. Two SQL queries whatever the size of the
books: the open invoices with their customers, and the facts (notices, disputes, operator actions) of those
customers.

Overdue and stage follow the engine's own rules: the report builds each customer's lifecycle state from the
books and asks `BillingState.overdue_invoices` and `billing.lifecycle.next_step.stage`, so the stage shown is
the one the lifecycle would show given what the books record (the ledger does not record a ladder restarted by
an extended due date, so such a customer may show FinalNotice where the lifecycle shows Overdue).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, union_all

from billing.due_dates import due_moment
from billing.ledger.schema import customers, invoices
from billing.ledger_messages import AccountBalance, InvoiceBalance
from billing.lifecycle.next_step import stage
from billing.lifecycle.state import BillingState, DisputeRecord, Suspension, SuspensionReason
from billing.models import (
    CUSTOMER_NOTICE_KINDS,
    DEFAULT_TIME_ZONE,
    BillingStage,
    CustomerAccount,
    DisputeState,
    NoticeKind,
)
from billing.money import Money
from billing.reports.facts import (
    PAUSE_DUNNING,
    RESUME_DUNNING,
    Fact,
    fact_of,
    fact_selects,
    in_order,
    resolved_dispute_ids,
    suspension_spans,
)


class Bucket(StrEnum):
    NOT_DUE = "not_due"
    DAYS_1_30 = "1_30"
    DAYS_31_60 = "31_60"
    DAYS_61_90 = "61_90"
    OVER_90 = "over_90"


BUCKETS: tuple[Bucket, ...] = tuple(Bucket)
_UPPER_BOUNDS = ((30, Bucket.DAYS_1_30), (60, Bucket.DAYS_31_60), (90, Bucket.DAYS_61_90))
_DAY = timedelta(days=1)


def as_of_moment(as_of: date, zone: ZoneInfo) -> datetime:
    """The moment a report "as of" a date looks at: the end of that day (24:00) in `zone`, the same rule as an
    invoice's due moment."""
    return due_moment(as_of, zone)


def days_overdue(due_at: datetime, as_of: datetime, zone: ZoneInfo) -> int:
    """Days an invoice overdue at `as_of` has been overdue: local calendar days in `zone` (a day of a DST change
    is still one day), a day begun counting as a day, so an invoice that fell due at the as-of moment itself is
    1 day overdue. Only for an invoice the engine's rule calls overdue."""
    wall = as_of.astimezone(zone).replace(tzinfo=None) - due_at.astimezone(zone).replace(tzinfo=None)
    return max(1, -(-wall // _DAY))


def bucket_of(overdue: bool, days: int) -> Bucket:
    if not overdue:
        return Bucket.NOT_DUE
    return next((bucket for limit, bucket in _UPPER_BOUNDS if days <= limit), Bucket.OVER_90)


# --- the report -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LastNotice:
    kind: NoticeKind
    at: datetime


@dataclass(frozen=True)
class CustomerAging:
    customer_id: str
    name: str
    time_zone: str
    currency: str
    stage: BillingStage
    buckets: dict[Bucket, Decimal]
    total: Decimal
    oldest_due_on: date
    last_notice: LastNotice | None
    suspended: bool
    open_disputes: int

    @property
    def overdue(self) -> Decimal:
        return self.total - self.buckets[Bucket.NOT_DUE]


@dataclass
class AgingTable:
    """One currency's customers, largest overdue amount first, with totals per bucket and per stage."""

    currency: str
    customers: list[CustomerAging] = field(default_factory=list)
    totals: dict[Bucket, Decimal] = field(default_factory=lambda: dict.fromkeys(BUCKETS, Decimal("0.00")))
    by_stage: dict[BillingStage, Decimal] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum(self.totals.values(), Decimal("0.00"))

    def add(self, customer: CustomerAging) -> None:
        self.customers.append(customer)
        for bucket in BUCKETS:
            self.totals[bucket] += customer.buckets[bucket]
        self.by_stage[customer.stage] = self.by_stage.get(customer.stage, Decimal("0.00")) + customer.total


@dataclass(frozen=True)
class AgingReport:
    as_of: date
    currency: str | None  # the --currency filter, if any
    tables: list[AgingTable]

    def table(self, currency: str) -> AgingTable | None:
        return next((table for table in self.tables if table.currency == currency), None)


def aging_report(engine: Engine, as_of: date, currency: str | None = None) -> AgingReport:
    """The aging of every customer with money outstanding: the books as they are now, each open invoice aged to
    the end of `as_of` in its customer's time zone."""
    owed = invoices.c.outstanding > 0
    if currency is not None:
        owed = owed & (invoices.c.currency == currency)
    invoice_rows = (
        select(
            invoices.c.customer_id,
            invoices.c.invoice_id,
            invoices.c.currency,
            invoices.c.amount,
            invoices.c.paid,
            invoices.c.credited,
            invoices.c.written_off,
            invoices.c.outstanding,
            invoices.c.issued_on,
            invoices.c.due_on,
            invoices.c.due_at,
            customers.c.name,
            customers.c.time_zone,
        )
        .join(customers, customers.c.customer_id == invoices.c.customer_id)
        .where(owed)
        .order_by(invoices.c.customer_id)
    )
    owing = select(invoices.c.customer_id).where(owed)
    facts_query = union_all(*(part.where(part.selected_columns.customer_id.in_(owing)) for part in fact_selects()))
    with engine.connect() as connection:
        rows = connection.execute(invoice_rows).all()
        facts = [fact_of(row) for row in connection.execute(facts_query)]
    return build_aging(rows, facts, as_of, currency)


def build_aging(rows: Sequence[Any], facts: Iterable[Fact], as_of: date, currency: str | None = None) -> AgingReport:
    """The report from the two queries' rows: pure, no I/O."""
    facts_of: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts:
        facts_of[fact.customer_id].append(fact)
    invoices_of: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        invoices_of[row.customer_id].append(row)
    tables: dict[str, AgingTable] = {}
    for customer_id, customer_rows in invoices_of.items():
        customer = customer_aging(customer_rows, in_order(facts_of.get(customer_id, [])), as_of)
        tables.setdefault(customer.currency, AgingTable(customer.currency)).add(customer)
    for table in tables.values():
        table.customers.sort(key=lambda c: (-c.overdue, -c.total, c.customer_id))
    return AgingReport(as_of=as_of, currency=currency, tables=[tables[code] for code in sorted(tables)])


def customer_aging(rows: Sequence[Any], facts: Sequence[Fact], as_of: date) -> CustomerAging:
    """One customer's line: `rows` are its open invoices (one currency: an account is kept in one), `facts` its
    facts in time order."""
    first = rows[0]
    time_zone = first.time_zone or DEFAULT_TIME_ZONE
    zone = ZoneInfo(time_zone)
    moment = as_of_moment(as_of, zone)
    state = lifecycle_state(rows, facts)
    overdue_ids = {invoice.invoice_id for invoice in state.overdue_invoices(moment)}
    buckets = dict.fromkeys(BUCKETS, Decimal("0.00"))
    for invoice in state.open_invoices():
        overdue = invoice.invoice_id in overdue_ids
        days = days_overdue(invoice.due_at, moment, zone) if overdue else 0
        buckets[bucket_of(overdue, days)] += invoice.outstanding.amount
    notices = [fact for fact in facts if fact.source == "notice" and fact.kind in CUSTOMER_NOTICE_KINDS]
    last = notices[-1] if notices else None
    return CustomerAging(
        customer_id=first.customer_id,
        name=first.name or first.customer_id,
        time_zone=time_zone,
        currency=first.currency,
        stage=stage(state, moment),
        buckets=buckets,
        total=sum(buckets.values(), Decimal("0.00")),
        oldest_due_on=min(row.due_on for row in rows),
        last_notice=LastNotice(NoticeKind(last.kind), last.at) if last else None,
        suspended=state.suspension is not None,
        open_disputes=len(state.open_disputes()),
    )


def lifecycle_state(rows: Sequence[Any], facts: Sequence[Fact]) -> BillingState:
    """The customer's lifecycle state as the books show it now: open invoices, notices sent (their keys are the
    steps done), the suspension, disputes and their escalation, a pause."""
    first = rows[0]
    currency = first.currency

    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=currency)

    open_invoices = [
        InvoiceBalance(
            invoice_id=row.invoice_id,
            amount=money(row.amount),
            paid=money(row.paid),
            credited=money(row.credited),
            written_off=money(row.written_off),
            outstanding=money(row.outstanding),
            issued_on=row.issued_on,
            due_on=row.due_on,
            due_at=row.due_at,
        )
        for row in rows
    ]
    balance = AccountBalance(
        customer_id=first.customer_id,
        currency=currency,
        invoices=open_invoices,
        unapplied_credit=Money.zero(currency),
        amount_due=money(sum((row.outstanding for row in rows), Decimal(0))),
    )
    # The ledger keeps the details as given; the state's account is only read for ids here.
    account = CustomerAccount.model_construct(
        customer_id=first.customer_id,
        name=first.name or first.customer_id,
        email="",
        time_zone=first.time_zone or DEFAULT_TIME_ZONE,
        tenant_id=first.customer_id,
    )
    state = BillingState.new(account, currency)
    state.balance = balance
    state.done_keys = [fact.ref for fact in facts if fact.source == "notice"]
    spans = suspension_spans(facts)
    if spans and spans[-1].ended_at is None:
        state.suspension = Suspension(
            key="suspension-on-the-books",
            reason=SuspensionReason.NON_PAYMENT,
            suspended_at=spans[-1].started_at,
            confirmed=True,
        )
    state.disputes = _disputes(facts, currency)
    pauses = [fact for fact in facts if fact.source == "action" and fact.kind in (PAUSE_DUNNING, RESUME_DUNNING)]
    if pauses and pauses[-1].kind == PAUSE_DUNNING:
        state.dunning_paused = True
        until = pauses[-1].details.get("until")
        state.paused_until = _aware(until) if isinstance(until, str) else None
    return state


def _disputes(facts: Sequence[Fact], currency: str) -> list[DisputeRecord]:
    resolved = resolved_dispute_ids(facts)
    escalated_at = {fact.ref: fact.at for fact in facts if fact.source == "escalation"}
    records = []
    for fact in facts:
        if fact.source != "dispute":
            continue
        dispute_id = fact.ref
        state = DisputeState.OPEN
        if dispute_id in resolved:
            state = DisputeState.RESOLVED
        elif dispute_id in escalated_at:
            state = DisputeState.ESCALATED
        records.append(
            DisputeRecord(
                dispute_id=dispute_id,
                invoice_id=fact.invoice_id or "",
                amount=Money(amount=fact.amount or Decimal(0), currency=currency),
                reason="",
                opened_at=fact.at,
                state=state,
                escalated_at=escalated_at.get(dispute_id),
            )
        )
    return records


def _aware(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

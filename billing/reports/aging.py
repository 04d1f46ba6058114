"""The accounts-receivable aging report: every customer's open invoices by how long they are overdue, as of the
end of a day in each customer's own time zone, one table per currency. Two SQL queries whatever the size of the
books, read in one transaction that takes no write lock (`billing.ledger.store.reading`): the facts of the
customers who owe something (disputes, operator actions, and of the notices those it decides from and the
latest), then their open invoices, streamed in order of customer and grouped in one pass.

Overdue and stage follow the engine's own rules: an invoice is overdue by `billing.lifecycle.state.is_overdue`,
and the stage is `billing.lifecycle.next_step.stage_of` the same `StageFacts` the lifecycle's `stage()` decides
from, read here off the books (the final notice by its `rung_key`, a pause by `pause_in_force`). So the stage
shown is the one the lifecycle would show given what the books record (the ledger does not record a ladder
restarted by an extended due date, so such a customer may show FinalNotice where the lifecycle shows Overdue).
No lifecycle state is built per customer: on 100,000 customers that cost most of a two-minute report
(bench/results/aging.md).
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from itertools import groupby
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, union_all

from billing.due_dates import due_moment
from billing.ledger.schema import customers, invoices, notice_log
from billing.ledger.store import reading
from billing.lifecycle.next_step import StageFacts, pause_in_force, stage_of
from billing.lifecycle.state import is_overdue, rung_key
from billing.models import CUSTOMER_NOTICE_KINDS, DEFAULT_TIME_ZONE, BillingStage, NoticeKind
from billing.reports.facts import (
    PAUSE_DUNNING,
    RESUME_DUNNING,
    SUSPENSION_ENDS,
    SUSPENSION_STARTS,
    Fact,
    fact_selects,
    in_order,
    resolved_dispute_ids,
    suspension_spans,
)

# Rows fetched at a time from the invoices query (a server-side cursor on PostgreSQL).
_BATCH = 10_000
_ZERO = Decimal("0.00")
_CUSTOMER_NOTICES = frozenset(kind.value for kind in CUSTOMER_NOTICE_KINDS)
# The notices the report decides from: the final notice (the stage) and those that begin or end a suspension.
# Of the other notices (invoices, reminders: most of the log) it shows only the customer's latest.
_DECIDING_NOTICES = frozenset({NoticeKind.FINAL_NOTICE.value, *SUSPENSION_STARTS, *SUSPENSION_ENDS})
# Every deciding notice is one the customer got, so a customer with one has a latest notice (see `_notices_read`).
assert _DECIDING_NOTICES <= _CUSTOMER_NOTICES


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
    return _days_before(as_of.astimezone(zone), due_at, zone)


def _days_before(as_of_local: datetime, due_at: datetime, zone: ZoneInfo) -> int:
    # Both in `zone` (the same tzinfo object): Python subtracts their wall-clock times, ignoring the offsets
    # (https://docs.python.org/3/library/datetime.html#datetime.datetime.__sub__ "the same tzinfo attribute").
    wall = as_of_local - due_at.astimezone(zone)
    return max(1, -(-wall // _DAY))


def bucket_of(overdue: bool, days: int) -> Bucket:
    if not overdue:
        return Bucket.NOT_DUE
    for limit, bucket in _UPPER_BOUNDS:
        if days <= limit:
            return bucket
    return Bucket.OVER_90


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
    # Only what the report shows or decides from; the columns in the order `build_aging` unpacks them.
    invoice_rows = (
        select(
            invoices.c.customer_id,
            invoices.c.currency,
            invoices.c.invoice_id,
            invoices.c.outstanding,
            invoices.c.due_on,
            invoices.c.due_at,
            customers.c.name,
            customers.c.time_zone,
        )
        .join(customers, customers.c.customer_id == invoices.c.customer_id)
        .where(owed)
        .order_by(invoices.c.customer_id)
        .execution_options(yield_per=_BATCH)
    )
    owing = select(invoices.c.customer_id).where(owed)
    facts_query = union_all(
        *(part.where(part.selected_columns.customer_id.in_(owing)) for part in fact_selects(_notices_read()))
    )
    with _cyclic_gc_paused(), reading(engine) as connection:
        facts_of: dict[str, list[Fact]] = defaultdict(list)
        for row in connection.execute(facts_query.execution_options(yield_per=_BATCH)):
            fact = Fact._make(row)  # the facts query's columns are `Fact`'s, in order
            facts_of[fact.customer_id].append(fact)
        return build_aging(connection.execute(invoice_rows), facts_of, as_of, currency)


def _notices_read() -> Any:
    """Of the notice log, the deciding notices and each customer's latest notice (several if sent at the same
    moment): a condition that joins the log with each customer's latest moment."""
    latest = (
        select(notice_log.c.customer_id, func.max(notice_log.c.sent_at).label("at"))
        .where(notice_log.c.kind.in_(_CUSTOMER_NOTICES))
        .group_by(notice_log.c.customer_id)
        .subquery("latest_notice")
    )
    latest_one = notice_log.c.kind.in_(_CUSTOMER_NOTICES) & (notice_log.c.sent_at == latest.c.at)
    return (notice_log.c.customer_id == latest.c.customer_id) & (notice_log.c.kind.in_(_DECIDING_NOTICES) | latest_one)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The report makes a few objects per invoice and fact that all live until it is done, and none in a cycle:
    the cyclic garbage collector, triggered by so many new objects, would pass over all of them again and again
    for nothing (a fifth to a third of the report's time on 100,000 customers). Reference counting still frees
    whatever is dropped; the collector is back on, if it was, as soon as the report is built
    (https://docs.python.org/3/library/gc.html#gc.disable)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class _AsOf:
    """The as-of moment in one time zone (`local`: the same moment with the zone as its tzinfo)."""

    zone: ZoneInfo
    moment: datetime
    local: datetime


def build_aging(
    rows: Iterable[Sequence[Any]],
    facts_of: Mapping[str, Sequence[Fact]],
    as_of: date,
    currency: str | None = None,
) -> AgingReport:
    """The report from the two queries' rows, pure, no I/O: `rows` are the open invoices as (customer_id,
    currency, invoice_id, outstanding, due_on, due_at, name, time_zone), in order of customer; `facts_of` each
    customer's facts."""
    moments: dict[str, _AsOf] = {}

    def as_of_in(time_zone: str) -> _AsOf:
        if time_zone not in moments:
            zone = ZoneInfo(time_zone)
            moment = as_of_moment(as_of, zone)
            moments[time_zone] = _AsOf(zone, moment, moment.astimezone(zone))
        return moments[time_zone]

    tables: dict[str, AgingTable] = {}
    for customer_id, customer_rows in groupby(rows, key=itemgetter(0)):
        invoice_rows = list(customer_rows)
        facts = facts_of.get(customer_id, ())
        time_zone = invoice_rows[0][7] or DEFAULT_TIME_ZONE
        customer = _customer_aging(invoice_rows, in_order(facts) if len(facts) > 1 else facts, as_of_in(time_zone))
        table = tables.get(customer.currency)
        if table is None:
            table = tables[customer.currency] = AgingTable(customer.currency)
        table.add(customer)
    for table in tables.values():
        table.customers.sort(key=lambda c: (-c.overdue, -c.total, c.customer_id))
    return AgingReport(as_of=as_of, currency=currency, tables=[tables[code] for code in sorted(tables)])


def _customer_aging(rows: Sequence[Sequence[Any]], facts: Sequence[Fact], as_of: _AsOf) -> CustomerAging:
    """One customer's line: `rows` are its open invoices (one currency: an account is kept in one), `facts` its
    facts in time order."""
    customer_id, currency, _, _, _, _, name, time_zone = rows[0]
    notice_keys = set()
    last_notice: Fact | None = None
    pause: Fact | None = None
    for fact in facts:
        if fact.source == "notice":
            notice_keys.add(fact.ref)
            if fact.kind in _CUSTOMER_NOTICES:
                last_notice = fact
        elif fact.source == "action" and fact.kind in (PAUSE_DUNNING, RESUME_DUNNING):
            pause = fact
    buckets = dict.fromkeys(BUCKETS, _ZERO)
    overdue_ids = []
    oldest_due_on = rows[0][4]
    for _, _, invoice_id, outstanding, due_on, due_at, _, _ in rows:
        oldest_due_on = min(oldest_due_on, due_on)
        if is_overdue(due_at, as_of.moment):
            overdue_ids.append(invoice_id)
            bucket = bucket_of(True, _days_before(as_of.local, due_at, as_of.zone))
        else:
            bucket = Bucket.NOT_DUE
        buckets[bucket] += outstanding
    total = sum(buckets.values(), _ZERO)
    suspended, open_disputes, escalated = _suspension_and_disputes(facts)
    paused = pause is not None and pause.kind == PAUSE_DUNNING
    until = pause.details.get("until") if paused and pause is not None else None
    stage = stage_of(
        StageFacts(
            suspended=suspended,
            disputed=open_disputes > 0,
            escalated=escalated,
            paused=pause_in_force(paused, _aware(until) if isinstance(until, str) else None, as_of.moment),
            final_notice=any(rung_key("final-notice", invoice_id) in notice_keys for invoice_id in overdue_ids),
            overdue=total > buckets[Bucket.NOT_DUE],
            owed=total > 0,
        )
    )
    return CustomerAging(
        customer_id=customer_id,
        name=name or customer_id,
        time_zone=time_zone or DEFAULT_TIME_ZONE,
        currency=currency,
        stage=stage,
        buckets=buckets,
        total=total,
        oldest_due_on=oldest_due_on,
        last_notice=LastNotice(NoticeKind(last_notice.kind), last_notice.at) if last_notice else None,
        suspended=suspended,
        open_disputes=open_disputes,
    )


def _suspension_and_disputes(facts: Sequence[Fact]) -> tuple[bool, int, bool]:
    """Suspended now or not, how many disputes are open, and whether one of them is escalated to 21Vianet."""
    if not facts:
        return False, 0, False
    spans = suspension_spans(facts)
    suspended = bool(spans) and spans[-1].ended_at is None
    disputes = [fact.ref for fact in facts if fact.source == "dispute"]
    if not disputes:
        return suspended, 0, False
    resolved = resolved_dispute_ids(facts)
    escalated = {fact.ref for fact in facts if fact.source == "escalation"}
    still_open = [dispute_id for dispute_id in disputes if dispute_id not in resolved]
    return suspended, len(still_open), any(dispute_id in escalated for dispute_id in still_open)


def _aware(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

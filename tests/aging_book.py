"""A seeded book for the report tests and the aging benchmark: `customers` customers, each with three invoices
whose due dates fall in every aging bucket and on its edges, partial payments, credit notes, write-offs, paid
invoices, two currencies, customers in New York beside Shanghai, and the notices, disputes, escalations and
operator actions of a month of collections. Deterministic; bulk-inserted in one transaction.

`Seeded` keeps what was inserted, so a test computes what a report must show from these rows, not from the
report's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from billing.ledger import LedgerStore
from billing.ledger.schema import (
    allocations,
    audit_trail,
    credit_notes,
    customers,
    disputes,
    escalations,
    invoices,
    notice_log,
    payments,
    write_offs,
)

AS_OF = date(2026, 3, 31)
PERIOD = (date(2026, 3, 1), date(2026, 3, 31))
# AS_OF minus due date, in days: every bucket and both sides of every edge (0: due at the as-of moment itself).
OFFSETS = (-20, -1, 0, 1, 29, 30, 31, 59, 60, 61, 89, 90, 91, 150, 400)
BUCKET_NAMES = ("not_due", "1_30", "31_60", "61_90", "over_90")
RECORDED = datetime(2026, 4, 1, tzinfo=UTC)
TABLES = (
    customers,
    invoices,
    payments,
    allocations,
    credit_notes,
    write_offs,
    notice_log,
    disputes,
    escalations,
    audit_trail,
)


def expected_bucket(due_on: date, as_of: date = AS_OF) -> str:
    """The bucket by the calendar: due at the end of `due_on`, aged to the end of `as_of`, both in the customer's
    zone; due on the as-of date itself counts as overdue, in the first bucket."""
    days = (as_of - due_on).days
    if days < 0:
        return "not_due"
    if days <= 30:
        return "1_30"
    if days <= 60:
        return "31_60"
    return "61_90" if days <= 90 else "over_90"


def local(day: date, zone: str, hour: int = 10) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def end_of(day: date, zone: str) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass(frozen=True)
class SeededInvoice:
    customer_id: str
    currency: str
    zone: str
    invoice_id: str
    due_on: date
    outstanding: Decimal


@dataclass(frozen=True)
class SeededEvent:
    """Something the collections report counts: `kind` is a notice kind, a money kind, or dispute_opened,
    escalated, resolved, suspension_started, reinstatement."""

    customer_id: str
    zone: str
    kind: str
    at: datetime
    currency: str | None = None
    amount: Decimal | None = None
    by_operator: bool = False


@dataclass
class Seeded:
    invoices: list[SeededInvoice] = field(default_factory=list)
    events: list[SeededEvent] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    suspended: set[str] = field(default_factory=set)  # as of AS_OF
    open_disputes: dict[str, int] = field(default_factory=dict)

    def in_period(self, event: SeededEvent, period: tuple[date, date] = PERIOD) -> bool:
        start = datetime.combine(period[0], time(0), tzinfo=ZoneInfo(event.zone))
        return start <= event.at < end_of(period[1], event.zone)


def customer_zone(n: int) -> str:
    return "America/New_York" if n % 25 == 7 else "Asia/Shanghai"


def customer_currency(n: int) -> str:
    return "USD" if n % 7 == 3 else "CNY"


def seed_book(store: LedgerStore, count: int, *, prefix: str = "C") -> Seeded:
    seeded = Seeded()
    rows: dict[str, list[dict[str, Any]]] = {table.name: [] for table in TABLES}

    def notice(customer_id: str, zone: str, key: str, kind: str, at: datetime, invoice_id: str | None) -> None:
        rows["notice_log"].append(
            {
                "customer_id": customer_id,
                "key": key,
                "kind": kind,
                "message_id": f"<{customer_id}.{key}@seed>",
                "sent_at": at,
                "invoice_id": invoice_id,
                "logged_at": at,
            }
        )
        seeded.events.append(SeededEvent(customer_id, zone, kind, at))

    def action(customer_id: str, action_id: str, name: str, at: datetime, details: dict[str, str]) -> None:
        rows["audit_trail"].append(
            {
                "action_id": action_id,
                "customer_id": customer_id,
                "action": name,
                "reason": "seeded",
                "details": details,
                "at": at,
                "recorded_at": at,
            }
        )

    for n in range(count):
        customer_id = f"{prefix}-{n:06}"
        zone, currency = customer_zone(n), customer_currency(n)
        name = f"客户 {n:06}" if n % 2 else f"Customer {n:06}"
        seeded.names[customer_id] = name
        rows["customers"].append(
            {
                "customer_id": customer_id,
                "name": name,
                "email": f"ap-{n}@example.cn",
                "locale": "zh-CN" if n % 2 else "en-US",
                "time_zone": zone,
                "tenant_id": customer_id,
                "currency": currency,
                "created_at": RECORDED,
                "updated_at": RECORDED,
            }
        )
        open_ids = []
        for k in range(3):
            invoice_id = f"INV-{customer_id}-{k}"
            due_on = AS_OF - timedelta(days=OFFSETS[(n + 5 * k) % len(OFFSETS)])
            issued_on = due_on - timedelta(days=30)
            amount = Decimal(100 + (n * 7 + k * 13) % 9000) + Decimal(k * 25) / 100
            paid = credited = written_off = Decimal("0.00")
            if k == 0 and n % 4 == 1:
                paid = Decimal("40.00")  # a partial payment
            if k == 1 and n % 9 == 2:
                credited = Decimal("10.00")
            if k == 2 and n % 11 == 5:
                written_off = Decimal("5.00")
            if k == 2 and n % 13 == 6:
                paid = amount - written_off  # paid in full (less the write-off): absent from the aging
            outstanding = amount - paid - credited - written_off
            rows["invoices"].append(
                {
                    "invoice_id": invoice_id,
                    "customer_id": customer_id,
                    "currency": currency,
                    "amount": amount,
                    "paid": paid,
                    "credited": credited,
                    "written_off": written_off,
                    "outstanding": outstanding,
                    "issued_on": issued_on,
                    "due_on": due_on,
                    "due_at": end_of(due_on, zone),
                    "description": "Microsoft 365 E3",
                    "recorded_at": RECORDED,
                }
            )
            seeded.invoices.append(SeededInvoice(customer_id, currency, zone, invoice_id, due_on, outstanding))
            if outstanding:
                open_ids.append((invoice_id, due_on, outstanding))
            notice(customer_id, zone, f"invoice-{invoice_id}", "invoice", local(issued_on, zone), invoice_id)
            if paid:
                payment_id = f"PAY-{invoice_id}"
                received = local(due_on + timedelta(days=3), zone)
                rows["payments"].append(
                    {
                        "payment_id": payment_id,
                        "customer_id": customer_id,
                        "currency": currency,
                        "amount": paid,
                        "received_at": received,
                        "invoice_id": invoice_id,
                        "recorded_at": received,
                    }
                )
                rows["allocations"].append(
                    {
                        "customer_id": customer_id,
                        "invoice_id": invoice_id,
                        "payment_id": payment_id,
                        "source": "payment",
                        "currency": currency,
                        "amount": paid,
                        "allocated_at": received,
                    }
                )
                seeded.events.append(SeededEvent(customer_id, zone, "collected", received, currency, paid))
            for table, kind, key, settled in (
                (credit_notes, "credited", "credit_id", credited),
                (write_offs, "written_off", "write_off_id", written_off),
            ):
                if settled:
                    posted = local(due_on + timedelta(days=5), zone, hour=23)
                    rows[table.name].append(
                        {
                            key: f"{kind}-{invoice_id}",
                            "customer_id": customer_id,
                            "invoice_id": invoice_id,
                            "currency": currency,
                            "amount": settled,
                            "reason": "seeded",
                            "posted_at": posted,
                        }
                    )
                    seeded.events.append(SeededEvent(customer_id, zone, kind, posted, currency, settled))
        if not open_ids:
            continue
        oldest_id, oldest_due, oldest_outstanding = min(open_ids, key=lambda item: (item[1], item[0]))
        if n % 3 == 0 and oldest_due <= AS_OF:
            at = local(oldest_due + timedelta(days=1), zone)
            notice(customer_id, zone, f"reminder-2-{oldest_id}", "reminder", at, oldest_id)
        if n % 6 == 0 and oldest_due <= AS_OF - timedelta(days=3):
            notice(customer_id, zone, f"final-notice-{oldest_id}", "final_notice", local(AS_OF, zone, 9), oldest_id)
        if n % 17 == 0:
            at = local(date(2026, 3, 20), zone)
            notice(customer_id, zone, f"suspension-{oldest_id}-1-notice", "suspension", at, oldest_id)
            seeded.events.append(SeededEvent(customer_id, zone, "suspension_started", at))
            if n % 34 == 0:
                at = local(date(2026, 3, 25), zone)
                action(customer_id, f"reinstate-{customer_id}", "reinstate", at, {})
                seeded.events.append(SeededEvent(customer_id, zone, "reinstatement", at, by_operator=True))
            elif n % 51 == 0:
                at = local(date(2026, 3, 26), zone)
                notice(customer_id, zone, f"close-the-loop-{customer_id}", "close_the_loop", at, None)
                seeded.events.append(SeededEvent(customer_id, zone, "reinstatement", at))
            else:
                seeded.suspended.add(customer_id)
        if n % 19 == 0:
            dispute_id = f"D-{customer_id}"
            opened = local(date(2026, 3, 10), zone)
            rows["disputes"].append(
                {
                    "dispute_id": dispute_id,
                    "customer_id": customer_id,
                    "invoice_id": oldest_id,
                    "currency": currency,
                    "amount": min(Decimal("1.00"), oldest_outstanding),
                    "reason": "seeded",
                    "opened_at": opened,
                    "recorded_at": opened,
                }
            )
            seeded.events.append(SeededEvent(customer_id, zone, "dispute_opened", opened))
            resolved = n % 57 == 0
            if n % 38 == 0:
                escalated = local(date(2026, 3, 12), zone)
                rows["escalations"].append(
                    {
                        "dispute_id": dispute_id,
                        "customer_id": customer_id,
                        "status": "case_sent",
                        "reference": None,
                        "case": {"seeded": True},
                        "opened_at": escalated,
                        "updated_at": escalated,
                    }
                )
                seeded.events.append(SeededEvent(customer_id, zone, "escalated", escalated))
            if resolved:
                at = local(date(2026, 3, 15), zone)
                action(customer_id, f"resolve-{dispute_id}", "resolve_dispute", at, {"dispute_id": dispute_id})
                seeded.events.append(SeededEvent(customer_id, zone, "resolved", at))
            else:
                seeded.open_disputes[customer_id] = 1
    with store.engine.begin() as connection:
        for table in TABLES:  # parents before the rows that refer to them
            if rows[table.name]:
                connection.execute(insert(table), rows[table.name])
    return seeded


def expected_totals(seeded: Seeded) -> dict[str, dict[str, Decimal]]:
    """Currency -> bucket -> the sum of what is outstanding, from the seeded rows alone."""
    totals: dict[str, dict[str, Decimal]] = {}
    for invoice in seeded.invoices:
        if invoice.outstanding > 0:
            by_bucket = totals.setdefault(invoice.currency, dict.fromkeys(BUCKET_NAMES, Decimal("0.00")))
            by_bucket[expected_bucket(invoice.due_on)] += invoice.outstanding
    return totals

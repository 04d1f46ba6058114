"""`starter.py demo`: demo customers through the whole ladder on the demo policy."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from temporalio.client import Client

from billing.models import CustomerAccount, Invoice, Payment
from billing.money import Money
from cli.common import workflow_id
from cli.customers import issue_invoice, report_payment


@dataclass(frozen=True)
class DemoCustomer:
    slug: str
    name: str
    amount: str
    due_in_seconds: int
    payments: tuple[tuple[int, str], ...]  # (seconds after start, amount)
    story: str


DEMO_CUSTOMERS = (
    DemoCustomer(
        "paid-on-time",
        "Demo: paid on time",
        "880.00",
        20,
        ((8, "880.00"),),
        "pays before the due date: Resolved, no close-the-loop notice",
    ),
    DemoCustomer(
        "late-payer",
        "Demo: pays after a reminder",
        "1234.50",
        8,
        ((22, "1234.50"),),
        "Overdue, reminder, pays: close-the-loop notice",
    ),
    DemoCustomer(
        "suspended-then-pays",
        "Demo: suspended, then pays",
        "5600.00",
        5,
        ((48, "5600.00"),),
        "reminders, FinalNotice, Suspended, pays: reinstated and close-the-loop",
    ),
    DemoCustomer("never-pays", "Demo: never pays", "3200.00", 5, (), "stays Suspended; data deletion warnings follow"),
    DemoCustomer(
        "partial-payer",
        "Demo: pays part",
        "2000.00",
        6,
        ((15, "1500.00"),),
        "partial payment lowers the amount due, the ladder goes on",
    ),
    DemoCustomer(
        "below-minimum",
        "Demo: small balance",
        "60.00",
        6,
        (),
        "below the minimum to suspend: reminders only, stays Overdue",
    ),
)


async def run_demo(client: Client, task_queue: str, tag: str) -> None:
    start = datetime.now(UTC)
    print(f"demo run {tag}: {len(DEMO_CUSTOMERS)} customers; watch them at http://localhost:8233")
    for customer in DEMO_CUSTOMERS:
        customer_id = f"demo-{tag}-{customer.slug}"
        account = CustomerAccount(customer_id=customer_id, name=customer.name, email=f"{customer.slug}@demo.example.cn")
        due_at = start + timedelta(seconds=customer.due_in_seconds)
        invoice = Invoice(
            invoice_id=f"INV-{tag}-{customer.slug}",
            customer_id=customer_id,
            amount=Money(amount=Decimal(customer.amount), currency="CNY"),
            issued_on=start.date(),
            due_on=due_at.date(),
            due_at=due_at,
            description="Azure operated by 21Vianet, monthly subscription",
        )
        await issue_invoice(client, task_queue, account, invoice)
        print(f"  {workflow_id(customer_id)}: {customer.story}")
    schedule = sorted(
        (offset, f"demo-{tag}-{customer.slug}", amount, number)
        for customer in DEMO_CUSTOMERS
        for number, (offset, amount) in enumerate(customer.payments, start=1)
    )
    for offset, customer_id, amount, number in schedule:
        delay = (start + timedelta(seconds=offset) - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(delay, 0))
        payment = Payment(
            payment_id=f"PAY-{tag}-{customer_id}-{number}",
            customer_id=customer_id,
            amount=Money(amount=Decimal(amount), currency="CNY"),
            received_at=datetime.now(UTC),
        )
        await report_payment(client, payment)
        print(f"  +{offset:>3}s payment {amount} CNY from {customer_id}")
    print("demo payments sent; the ladder goes on in the worker (see the UI or `starter.py status`)")


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="drive demo customers through the ladder (needs the demo policy)")
    demo.add_argument("--tag", default=None, help="suffix for the demo ids (default: the current time)")


async def demo_command(client: Client, args: argparse.Namespace) -> None:
    await run_demo(client, args.task_queue, args.tag or datetime.now(UTC).strftime("%H%M%S"))

"""The command line for finance staff and scripts: issue an invoice, report a payment, show a customer's
billing status, or drive demo customers through the whole collections ladder.

Run `python starter.py --help` (or `python starter.py COMMAND --help`) for examples.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from pydantic import ValidationError
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from billing.models import BillingStatus, CustomerAccount, Invoice, Payment
from billing.money import Money
from workflows.customer_billing import CustomerBilling

EXAMPLES = """\
examples:
  # the first invoice starts the customer's lifecycle; later ones join it
  python starter.py invoice --customer-id C-1001 --name "Lotus Trading" --email ap@lotus.example.cn \\
      --invoice-id INV-2026-0001 --amount 1234.50 --issued-on 2026-11-24 --due-on 2026-12-24

  # a payment the bank reported (oldest invoice first unless --invoice-id names one)
  python starter.py payment --customer-id C-1001 --payment-id PAY-77 --amount 1234.50

  # where the customer stands: stage, amounts, next action, notices sent, rejected messages
  python starter.py status --customer-id C-1001

  # demo customers through the whole ladder in about a minute (worker on the demo policy: ./dev run --demo)
  python starter.py demo

Connection: TEMPORAL_ADDRESS (default localhost:7233), TEMPORAL_NAMESPACE (default),
BILLING_TASK_QUEUE (billing); or the --address, --namespace and --task-queue options.
"""


class CommandError(Exception):
    """A failure the user can act on: printed without a traceback, exit status 1."""


def workflow_id(customer_id: str) -> str:
    return f"customer-billing-{customer_id}"


async def connect(args: argparse.Namespace) -> Client:
    try:
        return await Client.connect(
            args.address, namespace=args.namespace, data_converter=pydantic_data_converter
        )
    except RuntimeError as error:
        raise CommandError(
            f"cannot reach Temporal at {args.address} (namespace {args.namespace}): {error}\n"
            "Is the engine running? Start it with ./dev run"
        ) from None


async def issue_invoice(client: Client, task_queue: str, account: CustomerAccount, invoice: Invoice) -> str:
    """Signal-with-start: the first invoice starts the lifecycle, a later one joins the running one."""
    handle = await client.start_workflow(
        CustomerBilling.run,
        account,
        id=workflow_id(account.customer_id),
        task_queue=task_queue,
        start_signal="invoice_issued",
        start_signal_args=[invoice],
    )
    return handle.result_run_id or handle.run_id or ""


async def report_payment(client: Client, payment: Payment) -> None:
    handle: WorkflowHandle[CustomerBilling, BillingStatus] = client.get_workflow_handle_for(
        CustomerBilling.run, workflow_id(payment.customer_id)
    )
    try:
        await handle.signal("payment_received", payment)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(
                f"customer {payment.customer_id} has no open billing lifecycle, so the payment was NOT "
                "delivered; a payment without an open invoice belongs in the ledger as credit"
            ) from None
        raise


async def fetch_status(client: Client, customer_id: str) -> BillingStatus:
    handle = client.get_workflow_handle(workflow_id(customer_id))
    try:
        return await handle.query("status", result_type=BillingStatus)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no billing lifecycle found for customer {customer_id}") from None
        raise


def status_table(status: BillingStatus) -> str:
    lines = [
        f"customer      {status.customer_id}",
        f"stage         {status.stage.value}",
        f"amount due    {status.amount_due}",
        f"overdue       {status.overdue_amount or '-'}",
        f"oldest due on {status.oldest_due_on or '-'}",
        f"next action   {status.next_action.kind.value} at {status.next_action.at.isoformat()}"
        if status.next_action
        else "next action   -",
        f"suspended     {', '.join(status.suspended_subscription_ids) or '-'}",
        "",
        f"{'invoice':<22} {'amount':>14} {'paid':>14} {'due on':<10}  state",
    ]
    for invoice in status.invoices:
        lines.append(
            f"{invoice.invoice_id:<22} {invoice.amount.amount!s:>14} {invoice.paid.amount!s:>14} "
            f"{invoice.due_on!s:<10}  {invoice.state.value}"
        )
    if status.notices_sent:
        lines.append("")
        lines.append("notices sent")
        lines.extend(
            f"  {notice.at.isoformat(timespec='seconds')}  {notice.kind.value:<22} {notice.invoice_id or ''}"
            for notice in status.notices_sent
        )
    if status.rejected:
        lines.append("")
        lines.append("rejected messages")
        lines.extend(
            f"  {item.at.isoformat(timespec='seconds')}  {item.name}: {item.reason}"
            for item in status.rejected
        )
    return "\n".join(lines)


# --- the demo ------------------------------------------------------------------------------------------


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
    DemoCustomer(
        "never-pays", "Demo: never pays", "3200.00", 5, (), "stays Suspended; data deletion warnings follow"
    ),
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
        account = CustomerAccount(
            customer_id=customer_id, name=customer.name, email=f"{customer.slug}@demo.example.cn"
        )
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


# --- command line ----------------------------------------------------------------------------------------


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset, e.g. 2026-12-24T18:00:00+08:00")
    return moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starter.py",
        description="Talk to the billing-support engine: invoices, payments, status, demo.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", default=os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    parser.add_argument("--namespace", default=os.environ.get("TEMPORAL_NAMESPACE", "default"))
    parser.add_argument("--task-queue", default=os.environ.get("BILLING_TASK_QUEUE", "billing"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    invoice = commands.add_parser(
        "invoice", help="issue an invoice (starts or joins the customer's lifecycle)"
    )
    invoice.add_argument("--customer-id", required=True)
    invoice.add_argument("--name", required=True, help="the customer's name as on the invoice")
    invoice.add_argument("--email", required=True, help="where billing notices go")
    invoice.add_argument("--locale", choices=["zh-CN", "en-US"], default="zh-CN")
    invoice.add_argument("--time-zone", default="Asia/Shanghai", help="IANA zone for business hours")
    invoice.add_argument(
        "--tenant-id", default="", help="Partner Center tenant id (default: the customer id)"
    )
    invoice.add_argument("--invoice-id", required=True)
    invoice.add_argument("--amount", required=True, help="decimal amount, e.g. 1234.50")
    invoice.add_argument("--currency", default="CNY")
    invoice.add_argument("--issued-on", type=_date, default=None, help="YYYY-MM-DD (default: today)")
    invoice.add_argument("--due-on", type=_date, required=True, help="YYYY-MM-DD")
    invoice.add_argument("--due-at", type=_datetime, default=None, help="exact due moment with offset")
    invoice.add_argument("--description", default=None)

    payment = commands.add_parser("payment", help="report a payment received from the customer")
    payment.add_argument("--customer-id", required=True)
    payment.add_argument("--payment-id", required=True, help="the bank's reference: a repeat counts once")
    payment.add_argument("--amount", required=True)
    payment.add_argument("--currency", default="CNY")
    payment.add_argument("--received-at", type=_datetime, default=None, help="default: now")
    payment.add_argument("--invoice-id", default=None, help="the invoice it pays (default: oldest first)")

    status = commands.add_parser("status", help="show a customer's billing status")
    status.add_argument("--customer-id", required=True)
    status.add_argument("--json", action="store_true", help="print the BillingStatus JSON")

    demo = commands.add_parser("demo", help="drive demo customers through the ladder (needs the demo policy)")
    demo.add_argument("--tag", default=None, help="suffix for the demo ids (default: the current time)")
    return parser


async def execute(args: argparse.Namespace) -> None:
    client = await connect(args)
    if args.command == "invoice":
        account = CustomerAccount(
            customer_id=args.customer_id,
            name=args.name,
            email=args.email,
            locale=args.locale,
            time_zone=args.time_zone,
            tenant_id=args.tenant_id,
        )
        invoice = Invoice(
            invoice_id=args.invoice_id,
            customer_id=args.customer_id,
            amount=Money(amount=args.amount, currency=args.currency),
            issued_on=args.issued_on or datetime.now(account.zone).date(),
            due_on=args.due_on,
            due_at=args.due_at,
            description=args.description,
        )
        await issue_invoice(client, args.task_queue, account, invoice)
        print(f"invoice {invoice.invoice_id} sent to {workflow_id(account.customer_id)}")
    elif args.command == "payment":
        payment = Payment(
            payment_id=args.payment_id,
            customer_id=args.customer_id,
            amount=Money(amount=args.amount, currency=args.currency),
            received_at=args.received_at or datetime.now(UTC),
            invoice_id=args.invoice_id,
        )
        await report_payment(client, payment)
        print(f"payment {payment.payment_id} sent to {workflow_id(payment.customer_id)}")
    elif args.command == "status":
        result = await fetch_status(client, args.customer_id)
        print(result.model_dump_json(indent=2) if args.json else status_table(result))
    elif args.command == "demo":
        await run_demo(client, args.task_queue, args.tag or datetime.now(UTC).strftime("%H%M%S"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(execute(args))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in detail['loc'])}: {detail['msg'].removeprefix('Value error, ')}"
            for detail in error.errors()
        )
        print(f"starter.py {args.command}: invalid input: {problems}", file=sys.stderr)
        return 2
    except CommandError as error:
        print(f"starter.py {args.command}: {error}", file=sys.stderr)
        return 1
    except RPCError as error:
        print(f"starter.py {args.command}: Temporal refused the request: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

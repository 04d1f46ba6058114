"""`starter.py open-dispute`: the customer contests (part of) an invoice (the signal `dispute_opened`)."""

from __future__ import annotations

import argparse
import asyncio

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from billing.models import BillingStatus, Dispute
from billing.money import Money
from cli.common import CommandError, workflow_id
from cli.customers import fetch_status, status_table

# How long to wait for the lifecycle to take the dispute in before telling the user to look later.
TAKEN_IN_WITHIN_SECONDS = 30.0
POLL_SECONDS = 0.25


def add_dispute_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dispute = commands.add_parser(
        "open-dispute",
        help="record that the customer disputes (part of) an invoice: dunning holds for it, the desk is told",
        description="Send the signal `dispute_opened` (the contract's `Dispute`) to the customer's lifecycle, then "
        "show its status once the lifecycle has taken the dispute in, or the engine's rejection of it "
        "(exit status 1).",
        epilog="example:\n  python starter.py open-dispute --customer-id C-1001 --dispute-id D-7 "
        '--invoice-id INV-2026-0001 --amount 200.00 --reason "two seats billed twice"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dispute.add_argument("--customer-id", required=True)
    dispute.add_argument("--dispute-id", required=True, help="your id of the dispute (a ticket number, say)")
    dispute.add_argument("--invoice-id", required=True, help="the invoice disputed")
    dispute.add_argument("--reason", required=True, help="what the customer says is wrong")
    dispute.add_argument("--amount", default=None, help="the amount disputed (default: the whole invoice)")
    dispute.add_argument("--currency", default="CNY")
    dispute.add_argument(
        "--wait",
        type=float,
        default=TAKEN_IN_WITHIN_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for the lifecycle to take it in (default {TAKEN_IN_WITHIN_SECONDS:g})",
    )
    dispute.add_argument("--json", action="store_true", help="print the BillingStatus JSON")


def _rejections(status: BillingStatus, dispute_id: str) -> list[str]:
    return [r.reason for r in status.rejected if r.name == "dispute_opened" and r.reference == dispute_id]


async def open_dispute(client: Client, args: argparse.Namespace) -> BillingStatus:
    """Send the dispute and wait until the status shows it, or shows a new rejection of it."""
    dispute = Dispute(
        dispute_id=args.dispute_id,
        customer_id=args.customer_id,
        invoice_id=args.invoice_id,
        reason=args.reason,
        amount=Money(amount=args.amount, currency=args.currency) if args.amount is not None else None,
    )
    before = await fetch_status(client, args.customer_id)
    rejected_before = len(_rejections(before, dispute.dispute_id))
    try:
        await client.get_workflow_handle(workflow_id(args.customer_id)).signal("dispute_opened", dispute)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"customer {args.customer_id} has no open billing lifecycle to dispute in") from None
        raise
    deadline = asyncio.get_running_loop().time() + args.wait
    while True:
        status = await fetch_status(client, args.customer_id)
        rejections = _rejections(status, dispute.dispute_id)
        if len(rejections) > rejected_before:
            raise CommandError(f"dispute {dispute.dispute_id} rejected: {rejections[-1]}\nnothing was changed")
        if any(d.dispute_id == dispute.dispute_id for d in status.disputes):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise CommandError(
                f"dispute {dispute.dispute_id} was sent to {workflow_id(args.customer_id)}, but the lifecycle has not "
                f"taken it in within {args.wait:g}s: is worker.py running? Check with `starter.py status`"
            )
        await asyncio.sleep(POLL_SECONDS)


async def dispute_command(client: Client, args: argparse.Namespace) -> None:
    status = await open_dispute(client, args)
    if args.json:
        print(status.model_dump_json(indent=2))
    else:
        print(f"dispute {args.dispute_id} opened for {workflow_id(args.customer_id)}\n")
        print(status_table(status))

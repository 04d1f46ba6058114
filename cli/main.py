"""The command line for finance staff and scripts: the parser, and which area's module runs each command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from billing import refusals
from billing.encryption import PayloadDecryptionError
from cli.common import CommandError, cannot_decrypt, connect
from cli.customers import add_customer_commands, customer_command
from cli.demo import add_demo_command, demo_command
from cli.disputes import add_dispute_commands, dispute_command
from cli.invoice_import import add_import_command, import_command
from cli.operator_actions import OPERATOR_COMMANDS_BY_NAME, add_operator_commands, operator_command
from cli.partner_payables import add_partner_payable_commands, partner_payable_command
from cli.payments import add_payment_commands, book_credit_command, payment_command
from cli.previews import add_preview_commands, policy_command, preview_command
from cli.reports import add_report_commands, report_command
from cli.sweep import add_sweep_commands, sweep_command

EXAMPLES = """\
examples (days may be typed as 2026-12-24, 2026/12/24, today, today+30, +30d or +2w, read in the customer's
time zone; every example works as written on the day it is read):
  # the first invoice starts the customer's lifecycle; later ones join it
  python starter.py invoice --customer-id C-1001 --name "Lotus Trading" --email ap@lotus.example.cn \\
      --invoice-id INV-0001 --amount 1234.50 --issued-on today --due-on +30d

  # a payment the bank reported (oldest invoice first unless --invoice-id names one): prints what it paid
  python starter.py payment --customer-id C-1001 --payment-id PAY-77 --amount 1234.50

  # money that came while no invoice is open: kept as credit for the next invoice (or --refund)
  python starter.py book-credit --customer-id C-1001 --payment-id PAY-90 --amount 300.00

  # the customer disputes part of an invoice
  python starter.py open-dispute --customer-id C-1001 --dispute-id D-7 --invoice-id INV-0001 \\
      --amount 200.00 --reason "two seats billed twice"

  # where the customer stands: stage, amounts, next action, notices sent, rejected messages
  python starter.py status --customer-id C-1001

  # demo customers through the whole ladder in about a minute (worker on the demo policy: ./dev run --demo)
  python starter.py demo

  # operator actions: each prints the new status, or the engine's refusal (exit status 1, nothing changed)
  python starter.py pause-dunning --customer-id C-1001 --reason "payment plan talks" --until today+14
  python starter.py extend-due-date --customer-id C-1001 --invoice-id INV-0001 --due-on +45d \\
      --reason "budget approval"
  python starter.py write-off --customer-id C-1001 --invoice-id INV-0001 --amount 100.00 \\
      --reason "service credit"
  python starter.py suspend-now --customer-id C-1001 --reason fraud_review --note "card chargeback"
  (`python starter.py ACTION --help` shows each action's options and an example)

  # the receivables aging and a month's collections, straight from the ledger (no Temporal needed)
  python starter.py report aging --format html --out aging.html
  python starter.py report collections --from 2026-03-01 --to 2026-03-31

Connection: the Temporal SDK's environment configuration, as the worker's: TEMPORAL_ADDRESS (default
localhost:7233), TEMPORAL_NAMESPACE (default), TEMPORAL_TLS_*, TEMPORAL_API_KEY, TEMPORAL_PROFILE (README
"Connecting to a cluster"); BILLING_TASK_QUEUE (billing); the --address, --namespace and --task-queue options
win over them.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starter.py",
        description="Talk to the billing-support engine: invoices, payments, status, demo.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", help="host:port of the Temporal frontend (over TEMPORAL_ADDRESS)")
    parser.add_argument("--namespace", help="the Temporal namespace (over TEMPORAL_NAMESPACE)")
    parser.add_argument("--task-queue", default=os.environ.get("BILLING_TASK_QUEUE", "billing"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_customer_commands(commands)
    add_payment_commands(commands)
    add_dispute_commands(commands)
    add_operator_commands(commands)
    add_import_command(commands)
    add_demo_command(commands)
    add_preview_commands(commands)
    add_sweep_commands(commands)
    add_partner_payable_commands(commands)
    add_report_commands(commands)
    return parser


async def execute(args: argparse.Namespace) -> None:
    await dispatch(await connect(args), args)


async def dispatch(client: Client, args: argparse.Namespace, now: datetime | None = None) -> None:
    """Run a command that talks to Temporal, on `client`; typed days and moments count from `now` (default:
    the clock's)."""
    now = now or datetime.now(UTC)
    if args.command in ("invoice", "status"):
        await customer_command(client, args, now)
    elif args.command == "payment":
        await payment_command(client, args, now)
    elif args.command == "open-dispute":
        await dispute_command(client, args)
    elif args.command in OPERATOR_COMMANDS_BY_NAME:
        await operator_command(client, args, now)
    elif args.command == "sweep":
        await sweep_command(client, args)
    elif args.command == "partner-payable":
        await partner_payable_command(client, args)
    elif args.command == "demo":
        await demo_command(client, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "policy":
        return policy_command(args)
    if args.command == "notices":
        return preview_command(args)
    if args.command == "import-invoices":
        return import_command(args)
    if args.command == "report":
        return report_command(args)
    if args.command == "book-credit":
        return book_credit_command(args)
    try:
        asyncio.run(execute(args))
    except ValidationError as error:
        print(f"starter.py {args.command}: invalid input: {refusals.reason(error)}", file=sys.stderr)
        return 2
    except CommandError as error:
        print(f"starter.py {args.command}: {error}", file=sys.stderr)
        return 1
    except RPCError as error:
        print(f"starter.py {args.command}: Temporal refused the request: {error.message}", file=sys.stderr)
        return 1
    except (KeyError, PayloadDecryptionError) as error:
        if "binary/encrypted" not in str(error) and not isinstance(error, PayloadDecryptionError):
            raise
        print(f"starter.py {args.command}: {cannot_decrypt(error)}", file=sys.stderr)
        return 1
    return 0

"""`starter.py partner-payable`: the partner's own bills from 21Vianet (PartnerPayable)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from billing.models import DEFAULT_TIME_ZONE
from billing.partner_payable import PartnerPayableStatus
from billing.partner_payable import workflow_id as payable_workflow_id
from cli.common import (
    DAY_HELP,
    OPERATOR_ACTION_TIMEOUT_SECONDS,
    CommandError,
    CustomerClock,
    money_payload,
    optional,
    typed_day,
)


def add_partner_payable_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    payable = commands.add_parser(
        "partner-payable", help="a bill 21Vianet issued to the partner: its status, or record a payment to 21Vianet"
    )
    actions = payable.add_subparsers(dest="payable_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="outstanding, due date, days overdue and the late charge accrued so far (an estimate, on the terms "
        "of the policy's [partner_payable])",
    )
    status.add_argument("invoice_id", metavar="INVOICE_ID", help="21Vianet's invoice id")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    record = actions.add_parser(
        "record-payment",
        help="record a payment the partner made to 21Vianet (refused with a reason if it cannot be right)",
        epilog="example:\n  python starter.py partner-payable record-payment G000123456 --payment-id TT-2026-0042 "
        "--amount 45600.00 --currency CNY --paid-on today --reference 'CMB transfer 0042'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record.add_argument("invoice_id", metavar="INVOICE_ID", help="21Vianet's invoice id")
    record.add_argument("--payment-id", required=True, help="your id of the payment; repeating it counts once")
    record.add_argument("--amount", required=True, type=Decimal, help="e.g. 45600.00")
    record.add_argument("--currency", required=True, help="the invoice's currency, e.g. CNY or USD")
    record.add_argument(
        "--paid-on", type=typed_day, help=f"{DAY_HELP.replace('the customer', 'the partner')} (default: today)"
    )
    record.add_argument("--reference", help="the bank's or 21Vianet's reference of the transfer")
    record.add_argument("--json", action="store_true", help="print the status after it as JSON")


async def partner_payable_command(client: Client, args: argparse.Namespace) -> None:
    payable_id = payable_workflow_id(args.invoice_id)
    handle = client.get_workflow_handle(payable_id)
    # The partner is in mainland China: its days are Asia/Shanghai's.
    clock = CustomerClock(ZoneInfo(DEFAULT_TIME_ZONE), datetime.now(UTC))
    try:
        if args.payable_command == "status":
            result = await handle.query("status", result_type=PartnerPayableStatus)
        else:
            payment = {
                "payment_id": args.payment_id,
                "amount": money_payload(str(args.amount), args.currency),
                "paid_on": str(clock.day(args.paid_on) if args.paid_on else clock.today),
                **optional(reference=args.reference),
            }
            result = await asyncio.wait_for(
                handle.execute_update("record_partner_payment", payment, result_type=PartnerPayableStatus),
                OPERATOR_ACTION_TIMEOUT_SECONDS,
            )
    except WorkflowUpdateFailedError as error:
        reason = getattr(error.cause, "message", None) or str(error.cause)
        raise CommandError(f"record_partner_payment refused: {reason}\nnothing was changed") from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(
                f"no {payable_id} found: the daily sweep starts it once Partner Center lists 21Vianet's invoice "
                f"{args.invoice_id} with money owed"
            ) from None
        raise
    except TimeoutError:
        raise CommandError(
            f"the engine did not answer within {OPERATOR_ACTION_TIMEOUT_SECONDS}s: is worker.py running?"
        ) from None
    if args.json:
        print(result.model_dump_json(indent=2))
        return
    rows = [
        ("21Vianet invoice", f"{result.invoice_id} of {result.invoice_date}"),
        ("Stage", result.stage.value),
        ("Amount", str(result.amount)),
        ("Paid", str(result.paid)),
        ("Outstanding", str(result.amount_due)),
        ("Due on", str(result.due_on)),
        ("Days overdue", str(result.days_overdue)),
        (
            "Late charge",
            f"about {result.late_charge} accrued by {result.late_charge_as_of} (estimate at "
            f"{result.late_charge_terms}; 21Vianet's statement is what is owed)",
        ),
        ("Next reminder", result.next_reminder_at.isoformat(timespec="minutes") if result.next_reminder_at else "-"),
    ]
    rows += [(f"Payment {p.payment_id}", f"{p.amount} on {p.paid_on}") for p in result.payments]
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))

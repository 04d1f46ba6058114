"""Money the customer sent: `payment` (record it and see what it paid) and `book-credit` (money that arrived
while no invoice is open: the customer's credit, or flagged for refund)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from billing.ledger import LedgerStore
from billing.ledger.rejection import LedgerRejection
from billing.ledger_messages import BookCreditRequest, CreditBooked
from billing.models import DEFAULT_TIME_ZONE, LedgerChanged, Payment
from billing.money import Money
from billing.settings import Settings
from cli.common import (
    OPERATOR_ACTION_TIMEOUT_SECONDS,
    CommandError,
    CustomerClock,
    add_operator_option,
    connect,
    operator_name,
    optional,
    typed_moment,
    workflow_id,
    zone_named,
)
from cli.customers import report_payment, status_table
from cli.operator_actions import (
    RECEIVED_AT_HELP,
    NoAnswer,
    NoLifecycle,
    customer_clock,
    payment_options,
    payment_payload,
    send_operator_action,
)

PAYMENT_DESCRIPTION = """\
Record a payment the customer made and see the outcome: which invoices it paid, what is still due, or the
engine's refusal (exit status 1, nothing changed). It sends the update `record_payment`; if no worker answers
within --wait seconds it delivers the payment as the signal `payment_received` instead, which the lifecycle
applies once a worker runs (the same --payment-id counts once, so sending it again is safe).

Which command:
  payment          for people and scripts alike: the outcome when the engine answers, delivered either way
  payment --signal-only
                   for a bank feed sending many payments: no waiting; a refusal shows later in
                   `starter.py status` under "rejected messages"
  record-payment   the update only: exit status 1 unless the engine answered (nothing is left pending)
  book-credit      money that arrived while the customer has no open invoice (no lifecycle, or one with
                   nothing owed): the customer's credit for the next invoice, or --refund
"""

BOOK_CREDIT_DESCRIPTION = """\
Book money that arrived while the customer has no open invoice as the customer's unapplied credit in the
ledger: the next invoice is paid from it when it is booked. With --refund the money is flagged to be paid back
instead, and no invoice is ever paid from it. The action is written to the ledger's audit trail. Running it
again with the same --payment-id changes nothing.

It talks to the ledger directly (BILLING_LEDGER_URL or --ledger-url), so it works with no lifecycle running;
if the customer's lifecycle is running, it is told the books changed (the signal `ledger_changed`, as the
daily sweep sends) and re-reads them. Refused while an invoice is open: that money is a payment.
"""


def add_payment_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    payment = commands.add_parser(
        "payment",
        help="record a payment the customer made and see what it paid (falls back to the signal without a worker)",
        description=PAYMENT_DESCRIPTION,
        epilog="examples:\n"
        "  python starter.py payment --customer-id C-1001 --payment-id PAY-77 --amount 1234.50\n"
        "  python starter.py payment --customer-id C-1001 --payment-id PAY-78 --amount 500 --received-at today "
        "--signal-only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    payment.add_argument("--customer-id", required=True)
    payment_options(payment)
    payment.add_argument(
        "--signal-only", action="store_true", help="send the signal payment_received and do not wait for the outcome"
    )
    payment.add_argument(
        "--wait",
        type=float,
        default=OPERATOR_ACTION_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for the engine's answer before sending the signal "
        f"(default {OPERATOR_ACTION_TIMEOUT_SECONDS})",
    )
    add_operator_option(payment)
    payment.add_argument("--json", action="store_true", help="print the BillingStatus JSON")

    credit = commands.add_parser(
        "book-credit",
        help="book money that arrived with no open invoice as the customer's credit, or flag it for refund",
        description=BOOK_CREDIT_DESCRIPTION,
        epilog="examples:\n"
        "  python starter.py book-credit --customer-id C-1001 --payment-id PAY-90 --amount 300.00 "
        "--received-at today\n"
        "  python starter.py book-credit --customer-id C-1001 --payment-id PAY-91 --amount 80.00 --refund "
        '--note "paid twice"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    credit.add_argument("--customer-id", required=True)
    credit.add_argument("--payment-id", required=True, help="the bank's reference: a repeat changes nothing")
    credit.add_argument("--amount", required=True, help="decimal amount, e.g. 300.00")
    credit.add_argument("--currency", default="CNY")
    credit.add_argument(
        "--received-at",
        type=typed_moment,
        default=None,
        help=RECEIVED_AT_HELP.replace("(the lifecycle's,", "(as the ledger has it,"),
    )
    credit.add_argument("--refund", action="store_true", help="flag the money to be paid back, not kept as credit")
    credit.add_argument("--note", default=None, help="why, for the audit trail")
    add_operator_option(credit)
    credit.add_argument(
        "--ledger-url",
        default=os.environ.get("BILLING_LEDGER_URL") or Settings.model_fields["ledger_url"].default,
        help="the ledger's SQLAlchemy URL (default: BILLING_LEDGER_URL, or the worker's default)",
    )


async def payment_command(client: Client, args: argparse.Namespace, now: datetime) -> None:
    # The signal carries the operator too: when it stands in for the update, the payment is the same message.
    payload = payment_payload(args, await customer_clock(client, args, now)) | optional(operator=operator_name(args))
    if args.signal_only:
        await _signal(client, payload)
        print(
            f"payment {args.payment_id} sent to {workflow_id(args.customer_id)} (signal payment_received); a refusal "
            "shows in `starter.py status` under rejected messages"
        )
        return
    try:
        result = await send_operator_action(client, args.customer_id, "record_payment", payload, args.wait)
    except NoLifecycle:
        raise CommandError(
            f"customer {args.customer_id} has no open billing lifecycle, so the payment was NOT recorded; money that "
            "arrived with no open invoice is booked as the customer's credit (or flagged for refund) with "
            "`starter.py book-credit`"
        ) from None
    except NoAnswer:
        await _signal(client, payload)
        print(
            f"the engine did not answer within {args.wait:g}s (is worker.py running?): payment {args.payment_id} was "
            f"delivered to {workflow_id(args.customer_id)} as the signal payment_received instead, and is applied "
            "once a worker runs; see the outcome with `starter.py status`"
        )
        return
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"payment {args.payment_id} recorded for {workflow_id(args.customer_id)}\n")
        print(status_table(result))


async def _signal(client: Client, payload: dict[str, object]) -> None:
    await report_payment(client, Payment.model_validate(payload))


def book_credit_command(args: argparse.Namespace) -> int:
    """`starter.py book-credit`: 0 booked (or already booked), 1 refused or the ledger failed."""
    name = "starter.py book-credit"
    try:
        store = LedgerStore.from_url(args.ledger_url)
        try:
            asyncio.run(_book_credit_and_tell(store, args))
        finally:
            store.close()
    except CommandError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        where = make_url(args.ledger_url).render_as_string(hide_password=True)
        print(f"{name}: the ledger at {where} failed: {error.__class__.__name__}: {error}", file=sys.stderr)
        return 1
    return 0


async def _book_credit_and_tell(store: LedgerStore, args: argparse.Namespace) -> None:
    try:
        client: Client | None = await connect(args)
    except CommandError:
        client = None
    await book_credit(store, client, args)


async def book_credit(
    store: LedgerStore, client: Client | None, args: argparse.Namespace, now: datetime | None = None
) -> CreditBooked:
    """Book the credit in the ledger, then tell the customer's running lifecycle, if any, to re-read the books."""
    zone = zone_named(store.customer_time_zone(args.customer_id) or DEFAULT_TIME_ZONE)
    clock = CustomerClock(zone, now or datetime.now(UTC))
    moment = clock.now
    if args.received_at is not None:
        moment = clock.moment(args.received_at, "start")
        if moment > clock.now:
            raise CommandError(f"--received-at {args.received_at} is {clock.shown(moment)}, in the future")
    try:
        request = BookCreditRequest(
            payment=Payment(
                payment_id=args.payment_id,
                customer_id=args.customer_id,
                amount=Money(amount=args.amount, currency=args.currency),
                received_at=moment,
            ),
            refund=args.refund,
            reason=args.note or ("to be refunded" if args.refund else "money received with no open invoice"),
            operator=operator_name(args),
            at=clock.now,
        )
        booked = store.book_credit(request)
    except (LedgerRejection, ValueError) as error:
        raise CommandError(f"refused: {error}\nnothing was changed") from None
    what = "flagged for refund" if booked.refund else "booked as unapplied credit"
    if booked.duplicate:
        print(f"payment {args.payment_id} is already on the books ({booked.credit} {what}): nothing changed")
    else:
        print(f"payment {args.payment_id}: {booked.credit} {what} for customer {args.customer_id}")
    print(f"customer's unapplied credit now {booked.balance.unapplied_credit}; amount due {booked.balance.amount_due}")
    if client is None:
        print("Temporal is not reachable: a lifecycle that is running sees the credit at its next read of the books")
    elif not booked.duplicate:
        await _tell_running_lifecycle(client, booked, clock.now)
    return booked


async def _tell_running_lifecycle(client: Client, booked: CreditBooked, now: datetime) -> None:
    """The books changed outside the lifecycle: send `ledger_changed`, as the daily sweep does, so that a running
    lifecycle re-reads them rather than going on with the balance it last saw."""
    balance = booked.balance
    handle = client.get_workflow_handle(workflow_id(balance.customer_id))
    try:
        # A signal reaches only a running run: a completed one answers NOT_FOUND.
        await handle.signal(
            "ledger_changed",
            LedgerChanged(
                customer_id=balance.customer_id,
                amount_due=balance.amount_due,
                open_invoice_ids=[
                    invoice.invoice_id for invoice in balance.invoices if invoice.outstanding.is_positive
                ],
                checked_at=now.astimezone(ZoneInfo("UTC")),
            ),
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return  # no lifecycle: the next invoice starts one, and its booking uses the credit
        raise CommandError(
            f"booked, but telling {handle.id} failed ({error.message}): it sees the credit at its next read of the "
            "books"
        ) from None
    print(f"told {handle.id} the books changed")

"""Operator actions: one subcommand per update of the contract (../shared/CONTRACT.md); each prints the new
status, or the engine's refusal."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from billing.models import DEFAULT_TIME_ZONE, BillingStatus
from cli.common import (
    DAY_HELP,
    MOMENT_HELP,
    OPERATOR_ACTION_TIMEOUT_SECONDS,
    CommandError,
    CustomerClock,
    add_operator_option,
    customer_zone,
    money_payload,
    operator_name,
    optional,
    typed_day,
    typed_moment,
    workflow_id,
)
from cli.customers import status_table


class NoAnswer(CommandError):
    """No worker answered the update in time; it may still be applied once one takes it."""


class NoLifecycle(CommandError):
    """The customer has no open billing lifecycle to send the update to."""


async def send_operator_action(
    client: Client,
    customer_id: str,
    update: str,
    payload: dict[str, object],
    wait_seconds: float = OPERATOR_ACTION_TIMEOUT_SECONDS,
) -> BillingStatus:
    """Send one of the contract's updates; the engine's validator decides, and a refusal becomes the error."""
    handle = client.get_workflow_handle(workflow_id(customer_id))
    try:
        return await asyncio.wait_for(handle.execute_update(update, payload, result_type=BillingStatus), wait_seconds)
    except WorkflowUpdateFailedError as error:
        reason = getattr(error.cause, "message", None) or str(error.cause)
        raise CommandError(f"{update} refused: {reason}\nnothing was changed") from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise NoLifecycle(
                f"customer {customer_id} has no open billing lifecycle ({error.message}); {update} was not applied"
            ) from None
        raise
    # wait_for cancels the update call, which the SDK reports as its own error rather than TimeoutError.
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise NoAnswer(
            f"the engine did not answer {update} within {wait_seconds:g}s: is worker.py running? "
            f"The action may still be applied once a worker takes it; check with `starter.py status`"
        ) from None


@dataclass(frozen=True)
class OperatorCommand:
    """A subcommand that sends one update: its options, and how they become the update's JSON payload."""

    update: str
    help: str
    example: str
    options: Callable[[argparse.ArgumentParser], None]
    payload: Callable[[argparse.Namespace, CustomerClock], dict[str, object]]

    @property
    def command(self) -> str:
        return self.update.replace("_", "-")


RECEIVED_AT_HELP = f"when the money arrived (default: now): {MOMENT_HELP}; a day alone means its start, 00:00"


def received_at(args: argparse.Namespace, clock: CustomerClock) -> datetime:
    """`--received-at` as a moment; money cannot have arrived in the future."""
    if args.received_at is None:
        return clock.now
    moment = clock.moment(args.received_at, "start")
    if moment > clock.now:
        raise CommandError(
            f"--received-at {args.received_at} is {clock.shown(moment)}, in the future; nothing was sent"
        )
    return moment


def payment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--payment-id", required=True, help="the bank's reference: a repeat counts once")
    parser.add_argument("--amount", required=True, help="decimal amount, e.g. 1234.50")
    parser.add_argument("--currency", default="CNY")
    parser.add_argument("--received-at", type=typed_moment, default=None, help=RECEIVED_AT_HELP)
    parser.add_argument("--invoice-id", default=None, help="the invoice it pays (default: oldest first)")


def payment_payload(args: argparse.Namespace, clock: CustomerClock) -> dict[str, object]:
    return {
        "payment_id": args.payment_id,
        "customer_id": args.customer_id,
        "amount": money_payload(args.amount, args.currency),
        "received_at": received_at(args, clock).isoformat(),
    } | optional(invoice_id=args.invoice_id)


def _pause_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why, for the audit trail")
    parser.add_argument(
        "--until",
        type=typed_moment,
        default=None,
        help="dunning resumes by itself then (default: at resume-dunning). A day alone (2026-12-20, today+14) "
        "means the END of that day (midnight at its close) in the customer's time zone: dunning resumes at the start "
        f"of the next day. Otherwise {MOMENT_HELP}. A moment already past is refused before anything is sent",
    )


def _pause_payload(args: argparse.Namespace, clock: CustomerClock) -> dict[str, object]:
    if args.until is None:
        return {"reason": args.reason}
    until = clock.moment(args.until, "end")
    if until <= clock.now:
        raise CommandError(
            f"--until {args.until} is {clock.shown(until)}, already past (now {clock.shown(clock.now)}); nothing "
            "was sent: give a later day or moment"
        )
    return {"reason": args.reason, "until": until.isoformat()}


def _reason_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why, for the audit trail")


def _note_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--note", required=True, help="what was decided and why, for the audit trail")


def _extend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--invoice-id", required=True)
    parser.add_argument("--due-on", type=typed_day, required=True, help=f"the new due date: {DAY_HELP}")
    _reason_option(parser)


def _write_off_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--invoice-id", required=True)
    parser.add_argument("--amount", default=None, help="decimal amount (default: all that is outstanding)")
    parser.add_argument("--currency", default="CNY")
    _reason_option(parser)


def _write_off_payload(args: argparse.Namespace, clock: CustomerClock) -> dict[str, object]:
    amount = money_payload(args.amount, args.currency) if args.amount is not None else None
    return {"invoice_id": args.invoice_id, "reason": args.reason} | optional(amount=amount)


def _suspend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        required=True,
        choices=["non_payment", "fraud_review"],
        help="fraud_review also sends the escalation desk a case and holds the account until reinstate",
    )
    _note_option(parser)


def _resolution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dispute-id", required=True)
    parser.add_argument("--outcome", required=True, choices=["credit", "uphold"])
    parser.add_argument("--credit", default=None, help="decimal amount credited (with --outcome credit)")
    parser.add_argument("--currency", default="CNY")
    _note_option(parser)


def _resolution_payload(args: argparse.Namespace, clock: CustomerClock) -> dict[str, object]:
    credit = money_payload(args.credit, args.currency) if args.credit is not None else None
    return {"dispute_id": args.dispute_id, "outcome": args.outcome, "note": args.note} | optional(credit=credit)


def _escalate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dispute-id", required=True)
    _note_option(parser)


def _record_escalation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dispute-id", required=True)
    parser.add_argument("--reference", required=True, help="the reference 21Vianet gave for the filed case")
    parser.add_argument("--note", default=None)


OPERATOR_COMMANDS = (
    OperatorCommand(
        "record_payment",
        "record a payment and see the outcome, never falling back to the signal (which to use: payment --help)",
        "--customer-id C-1001 --payment-id PAY-78 --amount 1234.50 --invoice-id INV-2026-0001",
        payment_options,
        payment_payload,
    ),
    OperatorCommand(
        "pause_dunning",
        "pause reminders, final notice and suspension (until a moment, or until resume-dunning)",
        '--customer-id C-1001 --reason "payment plan talks" --until today+14',
        _pause_options,
        _pause_payload,
    ),
    OperatorCommand(
        "resume_dunning",
        "resume dunning that pause-dunning paused",
        '--customer-id C-1001 --reason "talks failed"',
        _reason_option,
        lambda args, clock: {"reason": args.reason},
    ),
    OperatorCommand(
        "extend_due_date",
        "give more time on one invoice; its ladder moves with the new date",
        '--customer-id C-1001 --invoice-id INV-2026-0001 --due-on +30d --reason "budget approval"',
        _extend_options,
        lambda args, clock: {
            "invoice_id": args.invoice_id,
            "due_on": clock.day(args.due_on).isoformat(),
            "reason": args.reason,
        },
    ),
    OperatorCommand(
        "write_off",
        "write off (part of) an invoice in the ledger",
        '--customer-id C-1001 --invoice-id INV-2026-0001 --amount 100.00 --reason "service credit"',
        _write_off_options,
        _write_off_payload,
    ),
    OperatorCommand(
        "suspend_now",
        "suspend the customer's active subscriptions in Partner Center at once",
        '--customer-id C-1001 --reason non_payment --note "third broken promise"',
        _suspend_options,
        lambda args, clock: {"reason": args.reason, "note": args.note},
    ),
    OperatorCommand(
        "reinstate",
        "reactivate the subscriptions this engine suspended (only those)",
        '--customer-id C-1001 --note "payment plan agreed"',
        _note_option,
        lambda args, clock: {"note": args.note},
    ),
    OperatorCommand(
        "resolve_dispute",
        "settle an open dispute without 21Vianet: credit (a credit note) or uphold",
        '--customer-id C-1001 --dispute-id D-7 --outcome credit --credit 200.00 --note "duplicate seat"',
        _resolution_options,
        _resolution_payload,
    ),
    OperatorCommand(
        "escalate_dispute",
        "escalate a dispute to 21Vianet: the escalation desk gets the case for the Partner Center portal",
        '--customer-id C-1001 --dispute-id D-7 --note "usage meter disagrees with the portal"',
        _escalate_options,
        lambda args, clock: {"dispute_id": args.dispute_id, "note": args.note},
    ),
    OperatorCommand(
        "record_escalation",
        "record the reference 21Vianet gave for the filed case",
        "--customer-id C-1001 --dispute-id D-7 --reference 2611240010001234",
        _record_escalation_options,
        lambda args, clock: {"dispute_id": args.dispute_id, "reference": args.reference} | optional(note=args.note),
    ),
    OperatorCommand(
        "resolve_escalation",
        "record 21Vianet's answer to an escalated dispute: credit or uphold",
        '--customer-id C-1001 --dispute-id D-7 --outcome uphold --note "21Vianet confirmed the usage"',
        _resolution_options,
        _resolution_payload,
    ),
)
OPERATOR_COMMANDS_BY_NAME = {operator.command: operator for operator in OPERATOR_COMMANDS}


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for operator in OPERATOR_COMMANDS:
        parser = commands.add_parser(
            operator.command,
            help=operator.help,
            description=f"{operator.help[0].upper()}{operator.help[1:]}.\n"
            f"Sends the update `{operator.update}`; prints the new status, or the engine's refusal "
            "(exit status 1, nothing changed).",
            epilog=f"example:\n  python starter.py {operator.command} {operator.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--customer-id", required=True)
        operator.options(parser)
        add_operator_option(parser)
        parser.add_argument("--json", action="store_true", help="print the BillingStatus JSON")


# The options whose typed days and moments are read in the customer's time zone.
TYPED_TIME_OPTIONS = ("until", "due_on", "received_at")


async def customer_clock(client: Client, args: argparse.Namespace, now: datetime) -> CustomerClock:
    """`now`, and the customer's zone if an option needs it (one more request to Temporal)."""
    if any(getattr(args, option, None) is not None for option in TYPED_TIME_OPTIONS):
        return CustomerClock(await customer_zone(client, args.customer_id), now)
    return CustomerClock(ZoneInfo(DEFAULT_TIME_ZONE), now)


async def operator_command(client: Client, args: argparse.Namespace, now: datetime) -> None:
    operator = OPERATOR_COMMANDS_BY_NAME[args.command]
    clock = await customer_clock(client, args, now)
    payload = operator.payload(args, clock) | optional(operator=operator_name(args))
    result = await send_operator_action(client, args.customer_id, operator.update, payload)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"{operator.update} accepted for {workflow_id(args.customer_id)}\n")
        print(status_table(result, clock.zone))

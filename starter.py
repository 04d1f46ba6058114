"""The command line for finance staff and scripts: issue an invoice, report a payment, show a customer's
billing status, take an operator action (the contract's updates), or drive demo customers through the ladder.

Run `python starter.py --help` (or `python starter.py COMMAND --help`) for examples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from billing import refusals
from billing.invoice_import import (
    DEFAULT_CONCURRENCY,
    ImportFileError,
    ImportReport,
    LifecycleStarter,
    ParsedFile,
    Progress,
    file_format,
    import_invoices,
    read_invoice_file,
)
from billing.ledger import LedgerStore
from billing.models import BillingStatus, CustomerAccount, Invoice, NoticeKind, Payment
from billing.money import Money
from billing.notices.preview import preview_command
from billing.partner_payable import PartnerPayableStatus
from billing.partner_payable import workflow_id as payable_workflow_id
from billing.policy import CollectionsPolicy, PolicyError, load_policy
from billing.policy_document import policy_command
from billing.settings import Settings
from billing.sweep import SWEEP_SCHEDULE_ID, sweep_time_of_day, sweep_time_zone
from billing.sweep_schedule import SweepSchedule, ensure_sweep_schedule, next_sweeps, run_sweep_now
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

  # operator actions: each prints the new status, or the engine's refusal (exit status 1, nothing changed)
  python starter.py record-payment --customer-id C-1001 --payment-id PAY-78 --amount 1234.50
  python starter.py pause-dunning --customer-id C-1001 --reason "payment plan talks" \\
      --until 2026-12-01T09:00:00+08:00
  python starter.py write-off --customer-id C-1001 --invoice-id INV-2026-0001 --amount 100.00 \\
      --reason "service credit"
  python starter.py suspend-now --customer-id C-1001 --reason fraud_review --note "card chargeback"
  (`python starter.py ACTION --help` shows each action's options and an example)

Connection: TEMPORAL_ADDRESS (default localhost:7233), TEMPORAL_NAMESPACE (default),
BILLING_TASK_QUEUE (billing); or the --address, --namespace and --task-queue options.
"""


class CommandError(Exception):
    """A failure the user can act on: printed without a traceback, exit status 1."""


def workflow_id(customer_id: str) -> str:
    return f"customer-billing-{customer_id}"


async def connect(args: argparse.Namespace) -> Client:
    try:
        return await Client.connect(args.address, namespace=args.namespace, data_converter=pydantic_data_converter)
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
        # The UI's list shows it; ids only, no personal data.
        static_summary=f"Billing lifecycle of customer {account.customer_id}",
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


# An update waits for a worker to take it; without one it would wait for ever.
OPERATOR_ACTION_TIMEOUT_SECONDS = 60


async def send_operator_action(
    client: Client, customer_id: str, update: str, payload: dict[str, object]
) -> BillingStatus:
    """Send one of the contract's updates; the engine's validator decides, and a refusal becomes the error."""
    handle = client.get_workflow_handle(workflow_id(customer_id))
    try:
        return await asyncio.wait_for(
            handle.execute_update(update, payload, result_type=BillingStatus), OPERATOR_ACTION_TIMEOUT_SECONDS
        )
    except WorkflowUpdateFailedError as error:
        reason = getattr(error.cause, "message", None) or str(error.cause)
        raise CommandError(f"{update} refused: {reason}\nnothing was changed") from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(
                f"customer {customer_id} has no open billing lifecycle ({error.message}); {update} was not applied"
            ) from None
        raise
    except TimeoutError:
        raise CommandError(
            f"the engine did not answer {update} within {OPERATOR_ACTION_TIMEOUT_SECONDS}s: is worker.py running? "
            f"The action may still be applied once a worker takes it; check with `starter.py status`"
        ) from None


def _paused(status: BillingStatus) -> str:
    if not status.paused:
        return "-"
    if status.paused_until is None:
        return "until resume-dunning"
    return f"until {status.paused_until.isoformat(timespec='minutes')}"


def status_table(status: BillingStatus) -> str:
    lines = [
        f"customer      {status.customer_id}",
        f"stage         {status.stage.value}",
        f"amount due    {status.amount_due}",
        f"overdue       {status.overdue_amount or '-'}",
        f"oldest due on {status.oldest_due_on or '-'}",
        f"next action   {status.next_action.kind.value} at {status.next_action.at.isoformat(timespec='seconds')}"
        if status.next_action
        else "next action   -",
        f"suspended     {', '.join(status.suspended_subscription_ids) or '-'}",
        f"paused        {_paused(status)}",
        "",
        f"{'invoice':<22} {'amount':>14} {'paid':>14} {'due on':<10}  state",
    ]
    for invoice in status.invoices:
        lines.append(
            f"{invoice.invoice_id:<22} {invoice.amount.amount!s:>14} {invoice.paid.amount!s:>14} "
            f"{invoice.due_on!s:<10}  {invoice.state.value}"
        )
    if status.disputes:
        lines.append("")
        lines.append(f"{'dispute':<22} {'invoice':<22} {'amount':>14}  state")
        lines.extend(
            f"{d.dispute_id:<22} {d.invoice_id:<22} {d.amount.amount!s:>14}  {d.state.value}"
            + (f" (21Vianet ref {d.escalation_reference})" if d.escalation_reference else "")
            + (f", {d.outcome}" if d.outcome else "")
            for d in status.disputes
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
            f"  {item.at.isoformat(timespec='seconds')}  {item.name}: {item.reason}" for item in status.rejected
        )
    if status.timeline:
        lines.append("")
        lines.append("timeline")
        lines.extend(
            f"  {entry.at.isoformat(timespec='seconds')}  {entry.action:<22} {entry.reference or ''}"
            + (f"  {entry.detail}" if entry.detail else "")
            for entry in status.timeline
        )
    return "\n".join(lines)


# --- operator actions: one subcommand per update of the contract ----------------------------------------


def _money(amount: str, currency: str) -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def _optional(**fields: object) -> dict[str, object]:
    return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class OperatorCommand:
    """A subcommand that sends one update: its options, and how they become the update's JSON payload."""

    update: str
    help: str
    example: str
    options: Callable[[argparse.ArgumentParser], None]
    payload: Callable[[argparse.Namespace], dict[str, object]]

    @property
    def command(self) -> str:
        return self.update.replace("_", "-")


def _payment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--payment-id", required=True, help="the bank's reference: a repeat counts once")
    parser.add_argument("--amount", required=True, help="decimal amount, e.g. 1234.50")
    parser.add_argument("--currency", default="CNY")
    parser.add_argument("--received-at", type=_datetime, default=None, help="default: now")
    parser.add_argument("--invoice-id", default=None, help="the invoice it pays (default: oldest first)")


def _payment_payload(args: argparse.Namespace) -> dict[str, object]:
    return {
        "payment_id": args.payment_id,
        "customer_id": args.customer_id,
        "amount": _money(args.amount, args.currency),
        "received_at": (args.received_at or datetime.now(UTC)).isoformat(),
    } | _optional(invoice_id=args.invoice_id)


def _pause_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why, for the audit trail")
    parser.add_argument(
        "--until", type=_datetime, default=None, help="dunning resumes by itself then (default: at resume-dunning)"
    )


def _reason_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why, for the audit trail")


def _note_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--note", required=True, help="what was decided and why, for the audit trail")


def _extend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--invoice-id", required=True)
    parser.add_argument("--due-on", type=_date, required=True, help="the new due date YYYY-MM-DD")
    _reason_option(parser)


def _write_off_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--invoice-id", required=True)
    parser.add_argument("--amount", default=None, help="decimal amount (default: all that is outstanding)")
    parser.add_argument("--currency", default="CNY")
    _reason_option(parser)


def _write_off_payload(args: argparse.Namespace) -> dict[str, object]:
    amount = _money(args.amount, args.currency) if args.amount is not None else None
    return {"invoice_id": args.invoice_id, "reason": args.reason} | _optional(amount=amount)


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


def _resolution_payload(args: argparse.Namespace) -> dict[str, object]:
    credit = _money(args.credit, args.currency) if args.credit is not None else None
    return {"dispute_id": args.dispute_id, "outcome": args.outcome, "note": args.note} | _optional(credit=credit)


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
        "record a payment and see the outcome (refused if it does not fit the account)",
        "--customer-id C-1001 --payment-id PAY-78 --amount 1234.50 --invoice-id INV-2026-0001",
        _payment_options,
        _payment_payload,
    ),
    OperatorCommand(
        "pause_dunning",
        "pause reminders, final notice and suspension (until a moment, or until resume-dunning)",
        '--customer-id C-1001 --reason "payment plan talks" --until 2026-12-01T09:00:00+08:00',
        _pause_options,
        lambda args: {"reason": args.reason} | _optional(until=args.until and args.until.isoformat()),
    ),
    OperatorCommand(
        "resume_dunning",
        "resume dunning that pause-dunning paused",
        '--customer-id C-1001 --reason "talks failed"',
        _reason_option,
        lambda args: {"reason": args.reason},
    ),
    OperatorCommand(
        "extend_due_date",
        "give more time on one invoice; its ladder moves with the new date",
        '--customer-id C-1001 --invoice-id INV-2026-0001 --due-on 2026-12-31 --reason "budget approval"',
        _extend_options,
        lambda args: {"invoice_id": args.invoice_id, "due_on": args.due_on.isoformat(), "reason": args.reason},
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
        lambda args: {"reason": args.reason, "note": args.note},
    ),
    OperatorCommand(
        "reinstate",
        "reactivate the subscriptions this engine suspended (only those)",
        '--customer-id C-1001 --note "payment plan agreed"',
        _note_option,
        lambda args: {"note": args.note},
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
        lambda args: {"dispute_id": args.dispute_id, "note": args.note},
    ),
    OperatorCommand(
        "record_escalation",
        "record the reference 21Vianet gave for the filed case",
        "--customer-id C-1001 --dispute-id D-7 --reference 2611240010001234",
        _record_escalation_options,
        lambda args: {"dispute_id": args.dispute_id, "reference": args.reference} | _optional(note=args.note),
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
        parser.add_argument("--json", action="store_true", help="print the BillingStatus JSON")


# --- importing invoices from a file ----------------------------------------------------------------------

IMPORT_DESCRIPTION = """\
Import invoices from a CSV or JSON-lines file: each good row is booked in the ledger and signal-with-starts
its customer's lifecycle (customer-billing-{customer_id}); a bad row is reported as "line N: reason" and the
others go on. Running the same file again books nothing twice and starts no lifecycle for a settled invoice,
so a run that stopped half-way is completed by running it again.
"""

IMPORT_EPILOG = """\
file format: UTF-8 (Excel's "CSV UTF-8"; a byte order mark is fine), the contract's field names:
  invoice_id, customer_id, amount, currency, issued_on (YYYY-MM-DD), due_on, and the customer's name and
  email are required; due_at (ISO 8601 with offset), description, locale (zh-CN or en-US; default zh-CN),
  time_zone (IANA; default Asia/Shanghai) and tenant_id (default: the customer id) are optional.
  CSV: line 1 is the header, e.g.
    invoice_id,customer_id,amount,currency,issued_on,due_on,name,email,description
    INV-2026-0001,C-1001,1234.50,CNY,2026-11-24,2026-12-24,莲花贸易有限公司,ap@lotus.example.cn,Azure 11/2026
  JSON lines (.jsonl, .ndjson): one object a line; amount may also be {"amount": "1234.50", "currency": "CNY"}.

examples:
  python starter.py import-invoices invoices-2026-11.csv --dry-run
  python starter.py import-invoices invoices-2026-11.csv

exit status: 0 every row imported (or already there); 2 some rows were rejected, the others were imported
(fix those rows and run the file again); 1 the import could not run, or some lifecycles did not start (run
the file again).
Ledger: BILLING_LEDGER_URL or --ledger-url; currency: the collections policy's (BILLING_POLICY_FILE).
"""


def add_import_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import-invoices",
        help="import invoices from a CSV or JSON-lines file (--dry-run to check it first)",
        description=IMPORT_DESCRIPTION,
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="the .csv, .jsonl or .ndjson file")
    parser.add_argument("--format", choices=["csv", "jsonl"], default=None, help="default: from the extension")
    parser.add_argument(
        "--dry-run", action="store_true", help="check every row, also against the ledger; write and signal nothing"
    )
    parser.add_argument(
        "--ledger-url",
        default=os.environ.get("BILLING_LEDGER_URL") or Settings.model_fields["ledger_url"].default,
        help="the ledger's SQLAlchemy URL (default: BILLING_LEDGER_URL, or the worker's default)",
    )
    parser.add_argument("--policy", default=None, help="policy TOML (default: BILLING_POLICY_FILE or built-in)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="rows in flight at once")


def import_command(args: argparse.Namespace) -> int:
    name = "starter.py import-invoices"
    path = Path(args.file)
    try:
        policy_file = args.policy or os.environ.get("BILLING_POLICY_FILE") or None
        currency = (load_policy(policy_file) if policy_file else CollectionsPolicy()).currency
        parsed = read_invoice_file(path, file_format(path, args.format), currency)
        with _import_ledger(args.ledger_url, args.dry_run) as ledger:
            report = asyncio.run(_import(args, ledger, parsed, currency))
    except (ImportFileError, PolicyError, CommandError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        where = make_url(args.ledger_url).render_as_string(hide_password=True)
        print(f"{name}: the ledger at {where} failed: {error.__class__.__name__}: {error}", file=sys.stderr)
        return 1
    if report.ignored_columns:
        print(f"{name}: ignored the unknown column(s) {', '.join(report.ignored_columns)}", file=sys.stderr)
    for problem in sorted([*report.rejected, *report.failed], key=lambda problem: problem.line):
        print(f"line {problem.line}: {problem.reason}", file=sys.stderr)
    print(report.render())
    return report.exit_status


@contextlib.contextmanager
def _import_ledger(url: str, dry_run: bool) -> Iterator[LedgerStore]:
    """The ledger to book in. A dry run only reads: it neither migrates the ledger nor creates a SQLite file
    that is not there yet, but checks against empty books instead."""
    parsed = make_url(url)
    database = parsed.database or ""
    missing = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists()
    with tempfile.TemporaryDirectory() as scratch:
        if dry_run and missing:
            print(f"no ledger at {database} yet: checking against empty books", file=sys.stderr)
            url = f"sqlite:///{scratch}/ledger.db"
        store = LedgerStore.from_url(url, migrate=not dry_run or missing)
        try:
            yield store
        finally:
            store.close()


async def _import(args: argparse.Namespace, ledger: LedgerStore, parsed: ParsedFile, currency: str) -> ImportReport:
    starter: LifecycleStarter | None = None
    if not args.dry_run:
        client = await connect(args)
        starter = functools.partial(issue_invoice, client, args.task_queue)
    progress = Progress(sys.stderr, parsed.rows_read)
    return await import_invoices(
        parsed,
        source=str(args.file),
        ledger=ledger,
        currency=currency,
        start_lifecycle=starter,
        progress=progress,
        concurrency=max(args.concurrency, 1),
        ledger_writers=1 if ledger.engine.dialect.name == "sqlite" else max(args.concurrency, 1),
    )


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


# --- the partner's own bills from 21Vianet (PartnerPayable) ----------------------------------------------


def add_partner_payable_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    payable = commands.add_parser(
        "partner-payable", help="a bill 21Vianet issued to the partner: its status, or record a payment to 21Vianet"
    )
    actions = payable.add_subparsers(dest="payable_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="outstanding, due date, days overdue and the late charge accrued at 1.5%% a month"
    )
    status.add_argument("invoice_id", metavar="INVOICE_ID", help="21Vianet's invoice id")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    record = actions.add_parser(
        "record-payment",
        help="record a payment the partner made to 21Vianet (refused with a reason if it cannot be right)",
        epilog="example:\n  python starter.py partner-payable record-payment G000123456 --payment-id TT-2026-0042 "
        "--amount 45600.00 --currency CNY --paid-on 2026-12-01 --reference 'CMB transfer 0042'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record.add_argument("invoice_id", metavar="INVOICE_ID", help="21Vianet's invoice id")
    record.add_argument("--payment-id", required=True, help="your id of the payment; repeating it counts once")
    record.add_argument("--amount", required=True, type=Decimal, help="e.g. 45600.00")
    record.add_argument("--currency", required=True, help="the invoice's currency, e.g. CNY or USD")
    record.add_argument("--paid-on", type=_date, help="YYYY-MM-DD (default: today in Asia/Shanghai)")
    record.add_argument("--reference", help="the bank's or 21Vianet's reference of the transfer")
    record.add_argument("--json", action="store_true", help="print the status after it as JSON")


async def partner_payable_command(client: Client, args: argparse.Namespace) -> None:
    payable_id = payable_workflow_id(args.invoice_id)
    handle = client.get_workflow_handle(payable_id)
    try:
        if args.payable_command == "status":
            result = await handle.query("status", result_type=PartnerPayableStatus)
        else:
            payment = {
                "payment_id": args.payment_id,
                "amount": _money(str(args.amount), args.currency),
                "paid_on": str(args.paid_on or datetime.now(ZoneInfo("Asia/Shanghai")).date()),
                **_optional(reference=args.reference),
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
        ("Late charge", f"{result.late_charge} accrued by {result.late_charge_as_of} (1.5% a month)"),
        ("Next reminder", result.next_reminder_at.isoformat(timespec="minutes") if result.next_reminder_at else "-"),
    ]
    rows += [(f"Payment {p.payment_id}", f"{p.amount} on {p.paid_on}") for p in result.payments]
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))


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

    invoice = commands.add_parser("invoice", help="issue an invoice (starts or joins the customer's lifecycle)")
    invoice.add_argument("--customer-id", required=True)
    invoice.add_argument("--name", required=True, help="the customer's name as on the invoice")
    invoice.add_argument("--email", required=True, help="where billing notices go")
    invoice.add_argument("--locale", choices=["zh-CN", "en-US"], default="zh-CN")
    invoice.add_argument("--time-zone", default="Asia/Shanghai", help="IANA zone for business hours")
    invoice.add_argument("--tenant-id", default="", help="Partner Center tenant id (default: the customer id)")
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

    add_operator_commands(commands)
    add_import_command(commands)

    demo = commands.add_parser("demo", help="drive demo customers through the ladder (needs the demo policy)")
    demo.add_argument("--tag", default=None, help="suffix for the demo ids (default: the current time)")

    # What customers read, rendered here from the policy and the BILLING_* branding settings: no Temporal needed.
    policy = commands.add_parser("policy", help="the collections policy as customers read it")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    render = policy_commands.add_parser(
        "render", help="render the policy document (zh-CN or en-US, Markdown or HTML) from the policy file"
    )
    render.add_argument("--locale", choices=["zh-CN", "en-US"], default="zh-CN")
    render.add_argument("--format", choices=["md", "html"], default="md")
    render.add_argument("--invoice-due", type=_date, default=None, help="YYYY-MM-DD: add that invoice's dates")
    render.add_argument("--issued-on", type=_date, default=None, help="YYYY-MM-DD (default: 30 days before due)")
    render.add_argument("--time-zone", default="Asia/Shanghai", help="IANA zone of the dates")
    render.add_argument("--policy", default=None, help="policy TOML (default: BILLING_POLICY_FILE or built-in)")
    render.add_argument("--out", default=None, help="file to write (default: standard output)")

    notices = commands.add_parser("notices", help="preview the notices customers and staff receive")
    notice_commands = notices.add_subparsers(dest="notices_command", required=True, metavar="ACTION")
    preview = notice_commands.add_parser(
        "preview", help="write a sample notice as the .eml the mailer sends and as an HTML file"
    )
    preview.add_argument(
        "kind", choices=[*NoticeKind, "all"], metavar="KIND", help=f"{', '.join(NoticeKind)}, or all of them"
    )
    preview.add_argument("--locale", choices=["zh-CN", "en-US"], default="zh-CN")
    preview.add_argument("--out", default="var/preview", help="folder for the files (default: var/preview)")
    preview.add_argument("--policy", default=None, help="policy TOML (default: BILLING_POLICY_FILE or built-in)")

    sweep = commands.add_parser("sweep", help="the daily sweep that reconciles the ledger with the lifecycles")
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    schedule = sweep_commands.add_parser(
        "schedule",
        help="create the daily sweep's schedule, or bring it up to date (safe to run on every deployment)",
    )
    schedule.add_argument(
        "--at",
        type=_sweep_time_argument,
        default=os.environ.get("BILLING_SWEEP_TIME") or "06:00",
        help="local time of day, HH:MM (default: BILLING_SWEEP_TIME or 06:00)",
    )
    schedule.add_argument(
        "--time-zone",
        type=_sweep_zone_argument,
        default=os.environ.get("BILLING_SWEEP_TIME_ZONE") or "Asia/Shanghai",
        help="IANA zone of --at (default: BILLING_SWEEP_TIME_ZONE or Asia/Shanghai)",
    )
    sweep_commands.add_parser("run", help="sweep now and print what it did (joins a manual sweep already running)")
    add_partner_payable_commands(commands)
    return parser


def _sweep_time_argument(value: str) -> time:
    try:
        return sweep_time_of_day(time.fromisoformat(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r}: {error}") from None


def _sweep_zone_argument(value: str) -> str:
    try:
        return sweep_time_zone(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


async def sweep_command(client: Client, args: argparse.Namespace) -> None:
    if args.sweep_command == "schedule":
        change = await ensure_sweep_schedule(client, SweepSchedule(args.at, args.time_zone, args.task_queue))
        zone = ZoneInfo(args.time_zone)
        upcoming = ", ".join(f"{moment.astimezone(zone):%Y-%m-%d %H:%M}" for moment in await next_sweeps(client))
        print(f"schedule {SWEEP_SCHEDULE_ID} {change}: daily at {args.at:%H:%M} {args.time_zone}; next: {upcoming}")
        return
    report = await run_sweep_now(client, args.task_queue)
    print(report.details().replace("**", "").replace("\n\n", "\n"))


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
    elif args.command in OPERATOR_COMMANDS_BY_NAME:
        operator = OPERATOR_COMMANDS_BY_NAME[args.command]
        result = await send_operator_action(client, args.customer_id, operator.update, operator.payload(args))
        if args.json:
            print(result.model_dump_json(indent=2))
        else:
            print(f"{operator.update} accepted for {workflow_id(args.customer_id)}\n")
            print(status_table(result))
    elif args.command == "sweep":
        await sweep_command(client, args)
    elif args.command == "partner-payable":
        await partner_payable_command(client, args)
    elif args.command == "demo":
        await run_demo(client, args.task_queue, args.tag or datetime.now(UTC).strftime("%H%M%S"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "policy":
        return policy_command(args)
    if args.command == "notices":
        return preview_command(args)
    if args.command == "import-invoices":
        return import_command(args)
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
    return 0


if __name__ == "__main__":
    status = main()
    # Skip interpreter finalization: the Temporal client's Rust threads can abort it with SIGABRT after the
    # command succeeded ("PyGILState_Release ... finalizing", temporalio/sdk-python#300), and scripts act on
    # the exit status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

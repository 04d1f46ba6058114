"""A customer's invoices, payments and status: signal-with-start of the lifecycle, the payment signal, the
status query and its table."""

from __future__ import annotations

import argparse
from datetime import datetime
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from billing.lifecycle.status import static_details, static_summary
from billing.models import DEFAULT_TIME_ZONE, BillingStatus, CustomerAccount, Invoice, Payment
from billing.money import Money
from cli.common import (
    DAY_HELP,
    CommandError,
    CustomerClock,
    customer_zone,
    typed_day,
    typed_moment,
    workflow_id,
    zone_named,
)
from workflows.customer_billing import CustomerBilling


async def issue_invoice(client: Client, task_queue: str, account: CustomerAccount, invoice: Invoice) -> str:
    """Signal-with-start: the first invoice starts the lifecycle, a later one joins the running one."""
    handle = await client.start_workflow(
        CustomerBilling.run,
        account,
        id=workflow_id(account.customer_id),
        task_queue=task_queue,
        start_signal="invoice_issued",
        start_signal_args=[invoice],
        static_summary=static_summary(account),
        static_details=static_details(account),
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
                "delivered; money that arrived with no open invoice is booked as the customer's credit (or "
                "flagged for refund) with `starter.py book-credit`"
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


def _paused(status: BillingStatus, zone: ZoneInfo) -> str:
    if not status.paused:
        return "-"
    if status.paused_until is None:
        return "until resume-dunning"
    return f"until {_at(status.paused_until, zone)}"


def _at(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"


def status_table(status: BillingStatus, zone: ZoneInfo | None = None) -> str:
    """The status as a finance user reads it: every time in the customer's zone (named in the first line)."""
    zone = zone or ZoneInfo(DEFAULT_TIME_ZONE)
    lines = [
        f"customer      {status.customer_id}    (times in {zone.key})",
        f"stage         {status.stage.value}",
        f"amount due    {status.amount_due}",
        f"overdue       {status.overdue_amount or '-'}",
        f"oldest due on {status.oldest_due_on or '-'}",
        f"next action   {status.next_action.kind.value} at {_at(status.next_action.at, zone)}"
        if status.next_action
        else "next action   -",
        f"suspended     {', '.join(status.suspended_subscription_ids) or '-'}",
        f"paused        {_paused(status, zone)}",
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
            f"  {_at(notice.at, zone)}  {notice.kind.value:<22} {notice.invoice_id or ''}"
            for notice in status.notices_sent
        )
    if status.rejected:
        lines.append("")
        lines.append("rejected messages")
        lines.extend(f"  {_at(item.at, zone)}  {item.name}: {item.reason}" for item in status.rejected)
    if status.timeline:
        lines.append("")
        lines.append("timeline")
        lines.extend(
            f"  {_at(entry.at, zone)}  {entry.action:<22} {entry.reference or ''}"
            + (f"  {entry.detail}" if entry.detail else "")
            for entry in status.timeline
        )
    return "\n".join(lines)


def add_customer_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    invoice.add_argument("--issued-on", type=typed_day, default=None, help=f"{DAY_HELP} (default: today)")
    invoice.add_argument("--due-on", type=typed_day, required=True, help=f"{DAY_HELP}, e.g. +30d")
    invoice.add_argument(
        "--due-at",
        type=typed_moment,
        default=None,
        help="the exact moment payment is due (default: the end of --due-on): a day alone means its end "
        "(midnight at its close, as a due day ends), a date and time without an offset is in --time-zone, "
        "an explicit offset is kept",
    )
    invoice.add_argument("--description", default=None)

    status = commands.add_parser("status", help="show a customer's billing status")
    status.add_argument("--customer-id", required=True)
    status.add_argument("--json", action="store_true", help="print the BillingStatus JSON")


async def customer_command(client: Client, args: argparse.Namespace, now: datetime) -> None:
    if args.command == "invoice":
        account = CustomerAccount(
            customer_id=args.customer_id,
            name=args.name,
            email=args.email,
            locale=args.locale,
            time_zone=args.time_zone,
            tenant_id=args.tenant_id,
        )
        clock = CustomerClock(zone_named(args.time_zone), now)
        invoice = Invoice(
            invoice_id=args.invoice_id,
            customer_id=args.customer_id,
            amount=Money(amount=args.amount, currency=args.currency),
            issued_on=clock.day(args.issued_on) if args.issued_on else clock.today,
            due_on=clock.day(args.due_on),
            due_at=clock.moment(args.due_at, "end") if args.due_at else None,
            description=args.description,
        )
        await issue_invoice(client, args.task_queue, account, invoice)
        print(f"invoice {invoice.invoice_id} sent to {workflow_id(account.customer_id)}")
    elif args.command == "status":
        result = await fetch_status(client, args.customer_id)
        if args.json:
            print(result.model_dump_json(indent=2))
        else:
            print(status_table(result, await customer_zone(client, args.customer_id)))

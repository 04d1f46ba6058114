"""The partner's own bills from 21Vianet: find them in Partner Center and start a `PartnerPayable` for each plain
invoice with money owed (the daily sweep calls `track_partner_invoices`), and book the payments finance records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.partner_center import (
    DocumentType,
    PartnerCenterClient,
    UnreadableInvoice,
    document_type,
    not_a_bill,
    partner_invoice,
)
from activities.published import published_by_open_run
from billing.ledger import LedgerRejection
from billing.ledger.partner_payments import PartnerPaymentBook
from billing.ledger_messages import PartnerPaymentBooked, PartnerPaymentBooking
from billing.models import DEFAULT_TIME_ZONE, Locale
from billing.money import Money
from billing.partner_center_messages import PartnerInvoicesTracked, TrackPartnerInvoicesRequest
from billing.partner_payable import (
    PartnerCenterPaid,
    PartnerCenterVoided,
    PartnerInvoice,
    PartnerPayableInput,
    behind_partner_center,
    workflow_id,
)

log = structlog.get_logger(__name__)

WORKFLOW_NAME = "PartnerPayable"


class PartnerPayableActivities:
    """`track_partner_invoices` and `record_partner_payment`, around Partner Center, Temporal and the books."""

    def __init__(
        self,
        partner_center: PartnerCenterClient,
        client: Client,
        task_queue: str,
        book: PartnerPaymentBook,
        *,
        locale: Locale = "zh-CN",
        time_zone: str = DEFAULT_TIME_ZONE,
    ) -> None:
        """`locale` and `time_zone` are the finance team's: the language of its notices and its business day."""
        self._partner_center = partner_center
        self._client = client
        self._task_queue = task_queue
        self._book = book
        self._locale: Locale = locale
        self._time_zone = time_zone

    @activity.defn(name="track_partner_invoices")
    async def track_partner_invoices(self, request: TrackPartnerInvoicesRequest) -> PartnerInvoicesTracked:
        """Start a `PartnerPayable` (id `partner-payable-{invoice_id}`) for every plain invoice with money owed
        that has none yet. Idempotent: a running payable is not duplicated, a finished (paid) one never restarted,
        and an invoice the books show as paid is never started even after Temporal forgot its payable. A void
        note, adjustment note, credit note or amendment is not a bill: it never starts one.

        A running payable that knows of less paid than Partner Center shows (21Vianet registered a payment
        finance did not record) is sent `partner_center_paid`, and one whose invoice Partner Center now lists as
        a void note is sent `partner_center_voided`: Partner Center is 21Vianet's own statement."""
        checked_at = request.checked_at or datetime.now(UTC)
        resources = await self._partner_center.list_partner_invoices(request.correlation_id)
        tracked = PartnerInvoicesTracked(seen=len(resources))
        for resource in resources:
            document_id = str(resource.get("id", ""))
            activity.heartbeat(document_id)
            try:
                other = not_a_bill(resource)
                invoice = None if other is not None or _nothing_owed(resource) else partner_invoice(resource)
            except UnreadableInvoice as problem:
                log.warning("partner_invoice_unreadable", problem=str(problem))
                tracked.unreadable.append(str(problem))
                continue
            if other is not None:
                tracked.not_bills.append(f"{document_id}: {other}")
                if document_type(resource) == DocumentType.VOID_NOTE:
                    voided = _voided_invoice_id(resource)
                    if await self._tell_voided(voided, checked_at):
                        tracked.told_voided.append(voided)
                continue
            if invoice is None:
                tracked.settled.append(document_id)
                continue
            if not (invoice.amount - invoice.paid).is_positive:
                # Paid in full in Partner Center: never started, but a payable still running is told so.
                tracked.settled.append(invoice.invoice_id)
            elif await self._settled(invoice):
                tracked.settled.append(invoice.invoice_id)
                continue
            elif await self._start(invoice):
                tracked.started.append(invoice.invoice_id)
                continue
            else:
                tracked.already_tracked.append(invoice.invoice_id)
            if await self._tell_if_behind(invoice, checked_at):
                tracked.told_paid.append(invoice.invoice_id)
        log.info(
            "partner_invoices_tracked",
            seen=tracked.seen,
            started=len(tracked.started),
            already_tracked=len(tracked.already_tracked),
            settled=len(tracked.settled),
            not_bills=len(tracked.not_bills),
            unreadable=len(tracked.unreadable),
            told_paid=len(tracked.told_paid),
            told_voided=len(tracked.told_voided),
            workflow_id=request.correlation_id,
        )
        return tracked

    async def _settled(self, invoice: PartnerInvoice) -> bool:
        booked = await asyncio.to_thread(self._book.payments, invoice.invoice_id)
        paid = Money.zero(invoice.currency)
        for payment in booked:
            if payment.amount.currency == invoice.currency:
                paid = paid + payment.amount
        return paid >= invoice.amount

    async def _start(self, invoice: PartnerInvoice) -> bool:
        """Start the payable; False when one with its id runs or ran before (REJECT_DUPLICATE keeps it so)."""
        try:
            await self._client.start_workflow(
                WORKFLOW_NAME,
                PartnerPayableInput(invoice=invoice, locale=self._locale, time_zone=self._time_zone),
                id=workflow_id(invoice.invoice_id),
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary=f"21Vianet invoice {invoice.invoice_id} of {invoice.invoice_date}: {invoice.amount}, "
                f"due {invoice.due_on}",
            )
        except WorkflowAlreadyStartedError:
            return False
        log.info("partner_payable_started", invoice_id=invoice.invoice_id, due_on=str(invoice.due_on))
        return True

    async def _tell_if_behind(self, invoice: PartnerInvoice, checked_at: datetime) -> bool:
        """Send the running payable `partner_center_paid` when its published `AmountDue` is more than
        Partner Center shows outstanding; False when none runs or it is in step."""
        published = await published_by_open_run(self._client, workflow_id(invoice.invoice_id))
        if published is None or not behind_partner_center(invoice, published.amount_due):
            return False
        report = PartnerCenterPaid(invoice_id=invoice.invoice_id, paid=invoice.paid, as_of=checked_at)
        try:
            await self._client.get_workflow_handle(workflow_id(invoice.invoice_id)).signal(
                "partner_center_paid", report
            )
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:  # it completed since it was described
                return False
            raise
        log.info("partner_payable_told_paid", invoice_id=invoice.invoice_id, paid=str(invoice.paid))
        return True

    async def _tell_voided(self, invoice_id: str, checked_at: datetime) -> bool:
        """Send the running payable of `invoice_id` `partner_center_voided`; False when none runs."""
        if await published_by_open_run(self._client, workflow_id(invoice_id)) is None:
            return False
        report = PartnerCenterVoided(invoice_id=invoice_id, as_of=checked_at)
        try:
            await self._client.get_workflow_handle(workflow_id(invoice_id)).signal("partner_center_voided", report)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:  # it completed since it was described
                return False
            raise
        log.info("partner_payable_told_voided", invoice_id=invoice_id)
        return True

    @activity.defn(name="record_partner_payment")
    def record_partner_payment(self, booking: PartnerPaymentBooking) -> PartnerPaymentBooked:
        try:
            booked = self._book.record(booking)
        except LedgerRejection as rejection:
            log.warning("ledger_refused", action="record_partner_payment", code=rejection.code)
            raise ApplicationError(str(rejection), rejection.code, type="LedgerRejection", non_retryable=True) from None
        log.info(
            "partner_payment_recorded",
            invoice_id=booking.invoice_id,
            payment_id=booking.payment.payment_id,
            duplicate=booked.duplicate,
        )
        return booked


def _voided_invoice_id(void_note: dict[str, object]) -> str:
    """The invoice a void note voids: the one it names in `amendsOf`, else its own id, under which Partner Center
    lists a voided invoice (the response example of "Get a collection of invoices",
    https://learn.microsoft.com/partner-center/developer/get-a-collection-of-invoices)."""
    return str(void_note.get("amendsOf") or void_note.get("id") or "")


def _nothing_owed(resource: dict[str, object]) -> bool:
    """An invoice for nothing is not a bill to pay."""
    try:
        return Decimal(str(resource.get("totalCharges"))) <= 0
    except InvalidOperation:
        return False  # unreadable: partner_invoice says why

"""Ledger activities: the workflow's writes to and reads of the books, run in the worker's thread pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from billing import metrics
from billing.ledger import LedgerRejection, LedgerStore
from billing.ledger_messages import (
    AccountBalance,
    AuditEntry,
    BalanceRequest,
    CreditNoteRequest,
    DisputeRecordRequest,
    EscalationCase,
    EscalationCaseRequest,
    EscalationChange,
    PaymentRecorded,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    RescheduleInvoiceRequest,
    WriteOffRequest,
)

_log = structlog.get_logger(__name__)


@contextmanager
def _refusal_not_retried(action: str, **ids: str | None) -> Iterator[None]:
    """The books refusing a request is an answer, not a failure: retrying would be refused again.

    So is a value the database cannot store (the store turns those into `LedgerRejection`, code `unstorable`);
    an outage of the database is raised as it is, for Temporal to retry. Both count in `billing_ledger_errors`."""
    try:
        yield
    except LedgerRejection as rejection:
        metrics.count_in_activity(metrics.LEDGER_ERRORS, action=action, code=rejection.code)
        _log.warning("ledger_refused", action=action, code=rejection.code, **ids)
        # Not chained: Temporal records the causes too, and the database error under an `unstorable` rejection
        # can quote the row it refused (the customer's name and email).
        raise ApplicationError(str(rejection), rejection.code, type="LedgerRejection", non_retryable=True) from None
    except Exception:
        metrics.count_in_activity(metrics.LEDGER_ERRORS, action=action, code="outage")
        raise


class LedgerActivities:
    """The ledger activities, around one `LedgerStore`. Sync: they run in the worker's thread pool."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    @activity.defn(name="record_invoice")
    def record_invoice(self, request: RecordInvoiceRequest) -> AccountBalance:
        ids = {"customer_id": request.invoice.customer_id, "invoice_id": request.invoice.invoice_id}
        with _refusal_not_retried("record_invoice", **ids):
            balance = self._store.record_invoice(request)
        _log.info("invoice_recorded", **ids)
        return balance

    @activity.defn(name="record_payment")
    def record_payment(self, request: RecordPaymentRequest) -> PaymentRecorded:
        payment = request.payment
        ids = {
            "customer_id": payment.customer_id,
            "payment_id": payment.payment_id,
            "invoice_id": payment.invoice_id,
        }
        with _refusal_not_retried("record_payment", **ids):
            recorded = self._store.record_payment(request)
        _log.info(
            "payment_recorded",
            duplicate=recorded.duplicate,
            allocated_to=[allocation.invoice_id for allocation in recorded.allocations],
            **ids,
        )
        return recorded

    @activity.defn(name="get_balance")
    def get_balance(self, request: BalanceRequest) -> AccountBalance:
        with _refusal_not_retried("get_balance", customer_id=request.customer_id):
            return self._store.balance(request.customer_id, request.currency, request.known_invoice_ids)

    @activity.defn(name="post_credit_note")
    def post_credit_note(self, request: CreditNoteRequest) -> AccountBalance:
        ids = {
            "customer_id": request.customer_id,
            "invoice_id": request.invoice_id,
            "credit_id": request.credit_id,
        }
        with _refusal_not_retried("post_credit_note", **ids):
            balance = self._store.post_credit_note(request)
        _log.info("credit_note_posted", dispute_id=request.dispute_id, **ids)
        return balance

    @activity.defn(name="write_off_invoice")
    def write_off_invoice(self, request: WriteOffRequest) -> AccountBalance:
        ids = {
            "customer_id": request.customer_id,
            "invoice_id": request.invoice_id,
            "write_off_id": request.write_off_id,
        }
        with _refusal_not_retried("write_off_invoice", **ids):
            balance = self._store.write_off(request)
        _log.info("invoice_written_off", **ids)
        return balance

    @activity.defn(name="reschedule_invoice")
    def reschedule_invoice(self, request: RescheduleInvoiceRequest) -> AccountBalance:
        ids = {
            "customer_id": request.customer_id,
            "invoice_id": request.invoice_id,
            "change_id": request.change_id,
        }
        with _refusal_not_retried("reschedule_invoice", **ids):
            balance = self._store.reschedule_invoice(request)
        _log.info("invoice_rescheduled", due_on=request.due_on.isoformat(), **ids)
        return balance

    @activity.defn(name="record_dispute")
    def record_dispute(self, request: DisputeRecordRequest) -> None:
        ids = {
            "customer_id": request.customer_id,
            "invoice_id": request.invoice_id,
            "dispute_id": request.dispute_id,
        }
        with _refusal_not_retried("record_dispute", **ids):
            self._store.record_dispute(request)
        _log.info("dispute_recorded", **ids)

    @activity.defn(name="build_escalation_case")
    def build_escalation_case(self, request: EscalationCaseRequest) -> EscalationCase:
        ids = {
            "customer_id": request.customer_id,
            "invoice_id": request.invoice_id,
            "dispute_id": request.dispute_id,
        }
        with _refusal_not_retried("build_escalation_case", **ids):
            return self._store.escalation_case(request)

    @activity.defn(name="record_escalation")
    def record_escalation(self, change: EscalationChange) -> None:
        ids = {"customer_id": change.customer_id, "dispute_id": change.dispute_id, "change_id": change.change_id}
        with _refusal_not_retried("record_escalation", **ids):
            self._store.record_escalation(change)
        # 21Vianet's reference is a case number, not personal data: operators search the logs by it.
        _log.info("escalation_recorded", status=change.status, reference=change.reference, **ids)

    @activity.defn(name="record_audit")
    def record_audit(self, entry: AuditEntry) -> None:
        ids = {"customer_id": entry.customer_id, "action_id": entry.action_id}
        with _refusal_not_retried("record_audit", **ids):
            self._store.record_audit(entry)
        _log.info("operator_action_audited", action=entry.action, **ids)

"""What the lifecycle asks of the ledger, built from its state: one function per request. Pure; the workflow
sends each through its activity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from billing.due_dates import due_moment
from billing.ledger_messages import (
    AuditEntry,
    BalanceRequest,
    CreditNoteRequest,
    DisputeRecordRequest,
    EscalationCase,
    EscalationCaseRequest,
    EscalationChange,
    EscalationStatus,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    RescheduleInvoiceRequest,
    WriteOffRequest,
)
from billing.lifecycle.state import BillingState, DisputeRecord
from billing.models import Dispute, ExtendDueDate, Invoice, OperatorAction, Payment, ResolveDispute, WriteOff
from billing.money import Money


def record_invoice(state: BillingState, invoice: Invoice) -> RecordInvoiceRequest:
    return RecordInvoiceRequest(
        account=state.account,
        invoice=invoice,
        due_at=due_moment(invoice.due_on, state.account.zone, invoice.due_at),
        known_invoice_ids=[*state.invoice_ids, invoice.invoice_id],
    )


def record_payment(state: BillingState, payment: Payment) -> RecordPaymentRequest:
    return RecordPaymentRequest(payment=payment, known_invoice_ids=state.invoice_ids)


def record_dispute(state: BillingState, dispute: Dispute, amount: Money, opened_at: datetime) -> DisputeRecordRequest:
    return DisputeRecordRequest(
        dispute_id=dispute.dispute_id,
        customer_id=state.account.customer_id,
        invoice_id=dispute.invoice_id,
        amount=amount,
        reason=dispute.reason,
        opened_at=opened_at,
    )


def read_balance(state: BillingState, known_invoice_ids: list[str]) -> BalanceRequest:
    return BalanceRequest(
        customer_id=state.account.customer_id, currency=state.currency, known_invoice_ids=known_invoice_ids
    )


def reschedule(state: BillingState, extension: ExtendDueDate, change_id: str) -> RescheduleInvoiceRequest:
    return RescheduleInvoiceRequest(
        change_id=change_id,
        customer_id=state.account.customer_id,
        invoice_id=extension.invoice_id,
        due_on=extension.due_on,
        due_at=due_moment(extension.due_on, state.account.zone),
        reason=extension.reason,
        known_invoice_ids=state.invoice_ids,
    )


def write_off(state: BillingState, action: WriteOff, write_off_id: str) -> WriteOffRequest:
    return WriteOffRequest(
        write_off_id=write_off_id,
        customer_id=state.account.customer_id,
        invoice_id=action.invoice_id,
        amount=action.amount,
        reason=action.reason,
        known_invoice_ids=state.invoice_ids,
    )


def credit_note(state: BillingState, dispute: DisputeRecord, resolution: ResolveDispute) -> CreditNoteRequest:
    if resolution.credit is None:
        raise ValueError(f"the resolution of {dispute.dispute_id} grants no credit")
    return CreditNoteRequest(
        credit_id=f"credit-{dispute.dispute_id}",
        dispute_id=dispute.dispute_id,
        customer_id=state.account.customer_id,
        invoice_id=dispute.invoice_id,
        amount=resolution.credit,
        reason=resolution.note,
        known_invoice_ids=state.invoice_ids,
    )


def escalation_case(state: BillingState, dispute: DisputeRecord) -> EscalationCaseRequest:
    return EscalationCaseRequest(
        customer_id=state.account.customer_id, dispute_id=dispute.dispute_id, invoice_id=dispute.invoice_id
    )


def escalation_change(
    state: BillingState,
    dispute: DisputeRecord,
    status: EscalationStatus,
    workflow_id: str,
    at: datetime,
    *,
    reference: str | None = None,
    note: str | None = None,
    case: EscalationCase | None = None,
) -> EscalationChange:
    return EscalationChange(
        change_id=f"{workflow_id}/{dispute.dispute_id}/{status}/{reference or ''}",
        customer_id=state.account.customer_id,
        dispute_id=dispute.dispute_id,
        status=status,
        reference=reference,
        note=note,
        at=at,
        case=case,
    )


def audit_entry(state: BillingState, action: str, payload: Any, action_id: str, at: datetime) -> AuditEntry:
    """An accepted operator action for the ledger's audit trail: who acted, the reason, and its other plain
    fields."""
    fields = payload if isinstance(payload, dict) else {}
    return AuditEntry(
        action_id=action_id,
        customer_id=state.account.customer_id,
        action=action,
        reason=audit_reason(payload),
        details={
            key: str(value)
            for key, value in fields.items()
            if key not in ("reason", "note", "operator") and isinstance(value, str | int | float)
        },
        at=at,
        operator=audit_operator(payload),
    )


def audit_reason(payload: Any) -> str:
    fields = payload if isinstance(payload, dict) else {}
    return str(fields.get("reason") or fields.get("note") or "")


def audit_operator(payload: Any) -> str | None:
    """Who acted, as the update's model reads it (trimmed; blank is no one). The update was accepted, so its
    `operator` is valid."""
    fields = payload if isinstance(payload, dict) else {}
    return OperatorAction.model_validate({"operator": fields.get("operator")}).operator


def audit_reference(payload: Any) -> str | None:
    """The id an operator action is about, for the timeline."""
    fields = payload if isinstance(payload, dict) else {}
    return next((str(fields[key]) for key in ("dispute_id", "invoice_id", "payment_id") if fields.get(key)), None)

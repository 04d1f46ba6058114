"""Disputes of invoices and their escalation to 21Vianet, and the escalation case 21Vianet's support reviews."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, select

from billing.ledger.books import _CREDIT_NOTE, _WRITE_OFF, _SettlementKind
from billing.ledger.notice_log import _notice_entry
from billing.ledger.rejection import LedgerRejection
from billing.ledger.rows import (
    _dispute_row,
    _insert,
    _invoice_balance,
    _invoice_row,
    _lock_account,
    _now,
    _require_dispute_of,
    _require_invoice_of,
)
from billing.ledger.schema import (
    allocations,
    customers,
    disputes,
    escalation_history,
    escalations,
    notice_log,
    payments,
)
from billing.ledger_messages import (
    Allocation,
    CreditView,
    DisputeRecordRequest,
    EscalationCase,
    EscalationCaseRequest,
    EscalationChange,
    EscalationHistoryEntry,
    EscalationRecord,
    PaymentView,
)
from billing.models import CustomerAccount
from billing.money import Money


class Disputes:
    """`LedgerStore`'s disputes, their escalation to 21Vianet, and the escalation case."""

    _engine: Engine

    def record_dispute(self, request: DisputeRecordRequest) -> None:
        """Keep a dispute of (part of) an invoice: the invoice must be the customer's, and the amount in its
        currency and no more than is outstanding on it.

        The same dispute id again changes nothing; with another customer, invoice, amount or reason it is
        refused.
        """
        with self._engine.begin() as connection:
            _lock_account(connection, request.customer_id)
            existing = _dispute_row(connection, request.dispute_id)
            if existing is None:
                invoice = _require_invoice_of(connection, request.customer_id, request.invoice_id)
                _require_disputable(invoice, request.amount)
                connection.execute(
                    _insert(connection, disputes)
                    .values(
                        dispute_id=request.dispute_id,
                        customer_id=request.customer_id,
                        invoice_id=request.invoice_id,
                        currency=request.amount.currency,
                        amount=request.amount.amount,
                        reason=request.reason,
                        opened_at=request.opened_at,
                        recorded_at=_now(),
                    )
                    .on_conflict_do_nothing(index_elements=["dispute_id"])
                )
                existing = _dispute_row(connection, request.dispute_id)
                assert existing is not None  # inserted above, or by another customer's worker a moment ago
            booked = (existing.customer_id, existing.invoice_id, _dispute_amount(existing), existing.reason)
            if booked != (request.customer_id, request.invoice_id, request.amount, request.reason):
                raise LedgerRejection(
                    "dispute_conflict",
                    f"dispute {request.dispute_id} is already on the books for {_dispute_amount(existing)} "
                    f"on invoice {existing.invoice_id} of customer {existing.customer_id}, with another "
                    "reason or amount; a different dispute needs a new id",
                )

    def record_escalation(self, change: EscalationChange) -> None:
        """Keep a step of a dispute's escalation: `case_sent` opens it with the case as sent, `filed` records
        21Vianet's reference, `resolved` closes it. Every change is kept in the escalation's history.

        Refused: a dispute not on the books or another customer's, `filed` or `resolved` for a dispute never
        escalated, a second `case_sent`, any change after `resolved`, `filed` without a reference. The same
        change id again changes nothing; with other content it is refused.
        """
        with self._engine.begin() as connection:
            _lock_account(connection, change.customer_id)
            repeated = _history_row(connection, change.change_id)
            if repeated is not None:
                _require_same_change(connection, repeated, change)
                return
            _require_dispute_of(connection, change.customer_id, change.dispute_id)
            escalation = _escalation_row(connection, change.dispute_id)
            _require_escalation_step(escalation, change)
            if escalation is None:
                assert change.case is not None  # a case_sent change, checked above
                connection.execute(
                    escalations.insert().values(
                        dispute_id=change.dispute_id,
                        customer_id=change.customer_id,
                        status=change.status,
                        reference=change.reference,
                        case=change.case.model_dump(mode="json"),
                        opened_at=change.at,
                        updated_at=change.at,
                    )
                )
            else:
                connection.execute(
                    escalations.update()
                    .where(escalations.c.dispute_id == change.dispute_id)
                    .values(
                        status=change.status,
                        # An answer without a reference keeps the one the desk recorded when filing.
                        reference=change.reference or escalation.reference,
                        updated_at=change.at,
                    )
                )
            inserted = connection.execute(
                _insert(connection, escalation_history)
                .values(
                    change_id=change.change_id,
                    dispute_id=change.dispute_id,
                    status=change.status,
                    reference=change.reference,
                    note=change.note,
                    at=change.at,
                    recorded_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["change_id"])
            ).rowcount
            if not inserted:
                # Another customer's worker used the same change id a moment ago; refusing rolls back the
                # escalation written above.
                other = _history_row(connection, change.change_id)
                assert other is not None
                raise _escalation_conflict(other, change)

    def escalation(self, dispute_id: str) -> EscalationRecord | None:
        """The dispute's escalation with its history, oldest change first; None if it was never escalated."""
        with self._engine.connect() as connection:
            row = _escalation_row(connection, dispute_id)
            if row is None:
                return None
            history = connection.execute(
                select(escalation_history)
                .where(escalation_history.c.dispute_id == dispute_id)
                .order_by(escalation_history.c.at, escalation_history.c.recorded_at)
            ).all()
        return EscalationRecord(
            dispute_id=row.dispute_id,
            customer_id=row.customer_id,
            status=row.status,
            reference=row.reference,
            case=EscalationCase.model_validate(row.case),
            opened_at=row.opened_at,
            updated_at=row.updated_at,
            history=[
                EscalationHistoryEntry(
                    change_id=entry.change_id,
                    status=entry.status,
                    reference=entry.reference,
                    note=entry.note,
                    at=entry.at,
                )
                for entry in history
            ],
        )

    def escalation_case(self, request: EscalationCaseRequest) -> EscalationCase:
        """What 21Vianet's support needs to review a dispute, from the books: the customer, the disputed
        invoice with its lines, credits and write-offs, every payment of the customer with its allocations,
        the dispute, and every notice logged for the customer, each oldest first.

        Refused for a dispute not on the books, another customer's, or one about another invoice.
        """
        with self._engine.connect() as connection:
            dispute = _require_dispute_of(connection, request.customer_id, request.dispute_id)
            if dispute.invoice_id != request.invoice_id:
                raise LedgerRejection(
                    "wrong_invoice",
                    f"dispute {request.dispute_id} is about invoice {dispute.invoice_id}, "
                    f"not invoice {request.invoice_id}",
                )
            customer = connection.execute(select(customers).where(customers.c.customer_id == request.customer_id)).one()
            invoice = _invoice_row(connection, request.invoice_id)
            assert invoice is not None  # the dispute's foreign key
            notices = connection.execute(
                select(notice_log)
                .where(notice_log.c.customer_id == request.customer_id)
                .order_by(notice_log.c.sent_at, notice_log.c.key)
            ).all()
            return EscalationCase(
                customer=CustomerAccount(
                    customer_id=customer.customer_id,
                    name=customer.name,
                    email=customer.email,
                    locale=customer.locale,
                    time_zone=customer.time_zone,
                    tenant_id=customer.tenant_id,
                ),
                invoice=_invoice_balance(invoice),
                invoice_lines=[line.strip() for line in (invoice.description or "").splitlines() if line.strip()],
                payments=_payment_views(connection, request.customer_id),
                credits=_credit_views(connection, _CREDIT_NOTE, request.invoice_id),
                write_offs=_credit_views(connection, _WRITE_OFF, request.invoice_id),
                dispute_id=dispute.dispute_id,
                dispute_reason=dispute.reason,
                disputed_amount=_dispute_amount(dispute),
                dispute_opened_at=dispute.opened_at,
                notices=[_notice_entry(row) for row in notices],
            )


def _dispute_amount(dispute: Row[Any]) -> Money:
    return Money(amount=dispute.amount, currency=dispute.currency)


def _require_disputable(invoice: Row[Any], amount: Money) -> None:
    if not amount.is_positive:
        raise LedgerRejection("invalid_amount", f"a disputed amount must be more than zero, not {amount}")
    if amount.currency != invoice.currency:
        raise LedgerRejection(
            "currency_mismatch",
            f"invoice {invoice.invoice_id} is in {invoice.currency}; "
            f"an amount in {amount.currency} cannot be disputed on it",
        )
    if amount.amount > invoice.outstanding:
        raise LedgerRejection(
            "over_outstanding",
            f"a dispute of {amount} is more than the {invoice.outstanding} {invoice.currency} "
            f"outstanding on invoice {invoice.invoice_id}",
        )


def _escalation_row(connection: Connection, dispute_id: str) -> Row[Any] | None:
    return connection.execute(select(escalations).where(escalations.c.dispute_id == dispute_id)).one_or_none()


def _history_row(connection: Connection, change_id: str) -> Row[Any] | None:
    return connection.execute(
        select(escalation_history).where(escalation_history.c.change_id == change_id)
    ).one_or_none()


def _require_escalation_step(escalation: Row[Any] | None, change: EscalationChange) -> None:
    """Escalations go case_sent, then filed (possibly again, with a corrected reference), then resolved."""
    dispute_id = change.dispute_id
    if change.status == "case_sent":
        if change.case is None:
            raise LedgerRejection(
                "invalid_escalation", f"sending the escalation case of dispute {dispute_id} needs the case"
            )
        if (change.case.dispute_id, change.case.customer.customer_id) != (dispute_id, change.customer_id):
            raise LedgerRejection(
                "invalid_escalation",
                f"the case sent for dispute {dispute_id} of customer {change.customer_id} is the case of "
                f"dispute {change.case.dispute_id} of customer {change.case.customer.customer_id}",
            )
        if escalation is not None:
            raise LedgerRejection(
                "already_escalated",
                f"dispute {dispute_id} was already escalated on {escalation.opened_at.date()}; "
                f"the escalation is {escalation.status}",
            )
        return
    if change.case is not None:
        raise LedgerRejection(
            "invalid_escalation",
            f"only sending the case carries the case; a {change.status} change of dispute {dispute_id} does not",
        )
    if escalation is None:
        what = "record 21Vianet's reference for" if change.status == "filed" else "resolve"
        raise LedgerRejection(
            "not_escalated",
            f"dispute {dispute_id} was never escalated to 21Vianet: there is no escalation to {what}",
        )
    if escalation.status == "resolved":
        raise LedgerRejection(
            "escalation_closed",
            f"the escalation of dispute {dispute_id} is already resolved; it takes no further changes",
        )
    if change.status == "filed" and not change.reference:
        raise LedgerRejection(
            "invalid_escalation",
            f"recording that dispute {dispute_id} was filed with 21Vianet needs 21Vianet's reference",
        )


def _require_same_change(connection: Connection, repeated: Row[Any], change: EscalationChange) -> None:
    escalation = _escalation_row(connection, repeated.dispute_id)
    assert escalation is not None  # the history's foreign key
    booked_case = escalation.case if repeated.status == "case_sent" else None
    given_case = None if change.case is None else change.case.model_dump(mode="json")
    booked = (escalation.customer_id, repeated.dispute_id, repeated.status, repeated.reference, repeated.note)
    given = (change.customer_id, change.dispute_id, change.status, change.reference, change.note)
    if booked != given or repeated.at != change.at or booked_case != given_case:
        raise _escalation_conflict(repeated, change)


def _escalation_conflict(repeated: Row[Any], change: EscalationChange) -> LedgerRejection:
    return LedgerRejection(
        "escalation_conflict",
        f"escalation change {change.change_id} is already on the books as {repeated.status} of dispute "
        f"{repeated.dispute_id} at {repeated.at.isoformat()}, with other content; "
        "a different change needs a new id",
    )


# --- what an escalation case shows -------------------------------------------------------------------------


def _payment_views(connection: Connection, customer_id: str) -> list[PaymentView]:
    """Every payment of the customer, oldest first, each with where its money went (then and later)."""
    rows = connection.execute(
        select(payments)
        .where(payments.c.customer_id == customer_id)
        .order_by(payments.c.received_at, payments.c.payment_id)
    ).all()
    made: dict[str, list[Allocation]] = {row.payment_id: [] for row in rows}
    for allocation in connection.execute(
        select(allocations).where(allocations.c.customer_id == customer_id).order_by(allocations.c.allocation_id)
    ):
        made[allocation.payment_id].append(
            Allocation(
                invoice_id=allocation.invoice_id,
                amount=Money(amount=allocation.amount, currency=allocation.currency),
            )
        )
    return [
        PaymentView(
            payment_id=row.payment_id,
            amount=Money(amount=row.amount, currency=row.currency),
            received_at=row.received_at,
            allocations=made[row.payment_id],
        )
        for row in rows
    ]


def _credit_views(connection: Connection, kind: _SettlementKind, invoice_id: str) -> list[CreditView]:
    table = kind.table
    rows = connection.execute(
        select(table).where(table.c.invoice_id == invoice_id).order_by(table.c.posted_at, table.c[kind.key_column])
    ).all()
    return [
        CreditView(
            credit_id=row._mapping[kind.key_column],
            invoice_id=row.invoice_id,
            amount=Money(amount=row.amount, currency=row.currency),
            reason=row.reason,
            posted_at=row.posted_at,
            dispute_id=row._mapping.get("dispute_id"),
        )
        for row in rows
    ]

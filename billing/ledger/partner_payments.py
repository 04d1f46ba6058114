"""The partner's payments to 21Vianet, on the same books as the customers' (table `partner_payments`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, select
from sqlalchemy.dialects import postgresql, sqlite

from billing.ledger.rejection import LedgerRejection
from billing.ledger.schema import partner_payments
from billing.ledger_messages import PartnerPaymentBooked, PartnerPaymentBooking
from billing.money import AmountOutOfRange, Money
from billing.partner_payable import PartnerPayment


class PartnerPaymentBook:
    """Idempotent by payment id: the same payment again changes nothing, a different one under its id is refused."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, booking: PartnerPaymentBooking) -> PartnerPaymentBooked:
        payment = booking.payment
        with self._engine.begin() as connection:
            insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
            inserted = connection.execute(
                insert(partner_payments)
                .values(
                    payment_id=payment.payment_id,
                    invoice_id=booking.invoice_id,
                    currency=payment.amount.currency,
                    amount=payment.amount.amount,
                    paid_on=payment.paid_on,
                    reference=payment.reference,
                    recorded_by=booking.recorded_by,
                    recorded_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing(index_elements=["payment_id"])
            ).rowcount
            stored = connection.execute(
                select(partner_payments).where(partner_payments.c.payment_id == payment.payment_id)
            ).one()
            if stored.invoice_id != booking.invoice_id or _payment(stored) != payment:
                raise LedgerRejection(
                    "partner_payment_conflict",
                    f"payment {payment.payment_id} is already on the books as {_money(stored)} paid on "
                    f"{stored.paid_on} against 21Vianet invoice {stored.invoice_id}; a different payment needs "
                    "its own payment id",
                )
            rows = connection.execute(
                select(partner_payments).where(partner_payments.c.invoice_id == booking.invoice_id)
            ).all()
            # Added up before the commit: a total beyond what the engine books refuses this payment, where after
            # the commit every retry would find it booked and fail on the same sum.
            paid = Money.zero(payment.amount.currency)
            try:
                for row in rows:
                    paid = paid + _money(row)
            except AmountOutOfRange as error:
                raise LedgerRejection(
                    "amount_too_large", f"the payments against 21Vianet invoice {booking.invoice_id}: {error}"
                ) from None
        return PartnerPaymentBooked(duplicate=inserted == 0, paid=paid)

    def payments(self, invoice_id: str) -> list[PartnerPayment]:
        """The payments booked against 21Vianet's invoice, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(partner_payments)
                .where(partner_payments.c.invoice_id == invoice_id)
                .order_by(partner_payments.c.paid_on, partner_payments.c.recorded_at)
            ).all()
        return [_payment(row) for row in rows]


def _money(row: Row[Any]) -> Money:
    return Money(amount=row.amount, currency=row.currency)


def _payment(row: Row[Any]) -> PartnerPayment:
    return PartnerPayment(payment_id=row.payment_id, amount=_money(row), paid_on=row.paid_on, reference=row.reference)

"""The books: invoices, payments and their allocation, unapplied credit, credit notes, write-offs and due-date
changes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table, bindparam, select

from billing.ledger.audit_trail import _record_audit
from billing.ledger.rejection import LedgerRejection
from billing.ledger.rows import (
    _insert,
    _invoice_balance,
    _invoice_row,
    _lock_account,
    _now,
    _require_dispute_of,
    _require_invoice_of,
    _total,
)
from billing.ledger.schema import (
    allocations,
    credit_notes,
    customers,
    invoice_due_changes,
    invoices,
    payments,
    refund_requests,
    unapplied_credits,
    write_offs,
)
from billing.ledger_messages import (
    AccountBalance,
    Allocation,
    AuditEntry,
    BookCreditRequest,
    CreditBooked,
    CreditNoteRequest,
    PaymentRecorded,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    RescheduleInvoiceRequest,
    WriteOffRequest,
)
from billing.models import CustomerAccount, Payment
from billing.money import Money


@dataclass(frozen=True)
class _SettlementKind:
    """A way of settling an invoice other than paying it: its table, natural key and running total."""

    table: Table
    key_column: str
    settles: str  # the invoice's running total it adds to
    name: str
    conflict_code: str


_CREDIT_NOTE = _SettlementKind(credit_notes, "credit_id", "credited", "credit note", "credit_conflict")
_WRITE_OFF = _SettlementKind(write_offs, "write_off_id", "written_off", "write-off", "write_off_conflict")


@dataclass
class _Due:
    """An open invoice while a payment or credit is being allocated to it."""

    invoice_id: str
    outstanding: Decimal


class Books:
    """`LedgerStore`'s invoices, payments, credit notes, write-offs and due-date changes."""

    _engine: Engine

    def balance(self, customer_id: str, currency: str, known_invoice_ids: Iterable[str] = ()) -> AccountBalance:
        """The customer's open invoices (and those in `known_invoice_ids`, open or not), oldest first.

        A customer with nothing on the books has a zero balance in `currency`.
        """
        with self._engine.connect() as connection:
            return _balance(connection, customer_id, currency, known_invoice_ids)

    def customer_time_zone(self, customer_id: str) -> str | None:
        """The customer's IANA time zone as their last invoice gave it; None before any invoice."""
        with self._engine.connect() as connection:
            return connection.execute(
                select(customers.c.time_zone).where(customers.c.customer_id == customer_id)
            ).scalar_one_or_none()

    def record_invoice(self, request: RecordInvoiceRequest) -> AccountBalance:
        """Book an invoice due at `request.due_at`, and pay it (and any older open one) from unapplied credit.

        The customer's details are updated from `request.account`; the first invoice fixes the account's
        currency. The same invoice recorded again changes nothing; the same id with another customer, amount
        or due date is refused. The balance returned always includes this invoice.
        """
        account, invoice = request.account, request.invoice
        if invoice.customer_id != account.customer_id:
            raise LedgerRejection(
                "wrong_customer",
                f"invoice {invoice.invoice_id} is for customer {invoice.customer_id}, "
                f"not for customer {account.customer_id}",
            )
        currency = invoice.amount.currency
        with self._engine.begin() as connection:
            now = _now()
            account_row = _upsert_customer(connection, account, currency, now)
            existing = _invoice_row(connection, invoice.invoice_id)
            if existing is None:
                _require_currency(account_row, currency)
                inserted = connection.execute(
                    _insert(connection, invoices)
                    .values(
                        invoice_id=invoice.invoice_id,
                        customer_id=invoice.customer_id,
                        currency=currency,
                        amount=invoice.amount.amount,
                        paid=Decimal(0),
                        credited=Decimal(0),
                        written_off=Decimal(0),
                        outstanding=invoice.amount.amount,
                        issued_on=invoice.issued_on,
                        due_on=invoice.due_on,
                        due_at=request.due_at,
                        description=invoice.description,
                        recorded_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["invoice_id"])
                ).rowcount
                if inserted:
                    _apply_unapplied_credit(connection, invoice.customer_id, currency, now)
                else:
                    # Another customer's worker booked the same invoice id a moment ago.
                    existing = _invoice_row(connection, invoice.invoice_id)
            if existing is not None:
                _require_same_invoice(connection, existing, request)
            return _balance(connection, invoice.customer_id, currency, [*request.known_invoice_ids, invoice.invoice_id])

    def record_payment(self, request: RecordPaymentRequest) -> PaymentRecorded:
        """Book a payment: the invoice it names first, then open invoices oldest first, the rest as credit.

        A repeated payment id changes nothing and reports `duplicate=True` with the original allocation; the
        same id with another customer, amount or named invoice is refused.
        """
        with self._engine.begin() as connection:
            return _record_payment(connection, request.payment, request.known_invoice_ids, _now())

    def book_credit(self, request: BookCreditRequest) -> CreditBooked:
        """Book money that arrived while the customer has no open invoice as their unapplied credit (the next
        invoice is paid from it), or flag it for refund (kept on the books, never applied), with the operator's
        action in the audit trail, in one transaction.

        Refused while an invoice is open: that money is a payment. The same payment id again changes nothing
        and reports `duplicate=True`; with another amount, customer or refund flag it is refused.
        """
        payment = request.payment
        currency = payment.amount.currency
        if payment.invoice_id is not None:
            raise LedgerRejection("invoice_named", f"credit names no invoice; payment {payment.payment_id} names one")
        with self._engine.begin() as connection:
            now = _now()
            _open_account(connection, payment.customer_id, currency, now)
            existing = _payment_row(connection, payment.payment_id)
            if existing is not None:
                _require_same_payment(existing, payment)
                _require_same_refund_flag(connection, existing, request.refund)
            else:
                dues = _open_dues(connection, payment.customer_id)
                if dues:
                    listed = ", ".join(f"{due.invoice_id} ({due.outstanding} {currency})" for due in dues)
                    raise LedgerRejection(
                        "invoice_open",
                        f"customer {payment.customer_id} has open invoices: {listed}; money for them is a payment "
                        "(starter.py payment), not credit",
                    )
            recorded = _record_payment(connection, payment, [], now)
            if not recorded.duplicate:
                if request.refund:
                    # Money to pay back pays no invoice: it leaves the credit for the refunds due.
                    connection.execute(
                        unapplied_credits.update()
                        .where(unapplied_credits.c.payment_id == payment.payment_id)
                        .values(remaining=0)
                    )
                    connection.execute(
                        refund_requests.insert().values(
                            payment_id=payment.payment_id,
                            customer_id=payment.customer_id,
                            currency=currency,
                            amount=recorded.unapplied.amount,
                            requested_at=now,
                        )
                    )
                _record_audit(
                    connection,
                    AuditEntry(
                        action_id=f"book-credit-{payment.payment_id}",
                        customer_id=payment.customer_id,
                        action="flag_refund" if request.refund else "book_credit",
                        reason=request.reason,
                        details={
                            "payment_id": payment.payment_id,
                            "amount": str(payment.amount),
                            "received_at": payment.received_at.isoformat(),
                        },
                        at=request.at,
                        operator=request.operator,
                    ),
                )
            return CreditBooked(
                balance=_balance(connection, payment.customer_id, currency, []),
                duplicate=recorded.duplicate,
                credit=recorded.unapplied,
                refund=request.refund,
            )

    def post_credit_note(self, request: CreditNoteRequest) -> AccountBalance:
        """Credit (part of) an invoice's outstanding amount; never more than is outstanding.

        A credit naming a dispute must be for that dispute's invoice, and the dispute's credits together never
        exceed the disputed amount. The same credit id posted again changes nothing; with another invoice,
        amount or dispute it is refused.
        """
        return self._settle_invoice(
            _CREDIT_NOTE,
            request.credit_id,
            request.customer_id,
            request.invoice_id,
            request.amount,
            request.reason,
            request.known_invoice_ids,
            dispute_id=request.dispute_id,
        )

    def write_off(self, request: WriteOffRequest) -> AccountBalance:
        """Write off an invoice's whole outstanding amount (no `amount`) or a part of it, never more.

        The same write-off id posted again changes nothing; with another invoice or amount it is refused.
        """
        return self._settle_invoice(
            _WRITE_OFF,
            request.write_off_id,
            request.customer_id,
            request.invoice_id,
            request.amount,
            request.reason,
            request.known_invoice_ids,
        )

    def _settle_invoice(
        self,
        kind: _SettlementKind,
        entry_id: str,
        customer_id: str,
        invoice_id: str,
        amount: Money | None,
        reason: str,
        known_invoice_ids: Sequence[str],
        *,
        dispute_id: str | None = None,
    ) -> AccountBalance:
        """Post a credit note or write-off of `amount` (absent: all still outstanding) against an invoice;
        a credit note may settle a dispute (`dispute_id`)."""
        table = kind.table
        key = table.c[kind.key_column]
        with self._engine.begin() as connection:
            _lock_account(connection, customer_id)  # queue behind the customer's other writes
            existing = connection.execute(select(table).where(key == entry_id)).one_or_none()
            if existing is None:
                invoice = _require_invoice_of(connection, customer_id, invoice_id)
                if amount is None and not invoice.outstanding:
                    raise LedgerRejection(
                        "nothing_outstanding",
                        f"invoice {invoice_id} has nothing outstanding for a {kind.name}",
                    )
                booked = _require_settlement(
                    invoice,
                    Money(amount=invoice.outstanding, currency=invoice.currency) if amount is None else amount,
                    kind.name,
                )
                if dispute_id is not None:
                    _require_within_dispute(connection, customer_id, invoice_id, dispute_id, booked)
                inserted = connection.execute(
                    _insert(connection, table)
                    .values(
                        {
                            kind.key_column: entry_id,
                            "customer_id": customer_id,
                            "invoice_id": invoice_id,
                            "currency": invoice.currency,
                            "amount": booked,
                            "reason": reason,
                            "posted_at": _now(),
                        }
                        | ({} if dispute_id is None else {"dispute_id": dispute_id})
                    )
                    .on_conflict_do_nothing(index_elements=[kind.key_column])
                ).rowcount
                if inserted:
                    _settle(connection, invoice_id, **{kind.settles: booked})
                else:
                    # Another customer's worker posted the same id a moment ago.
                    existing = connection.execute(select(table).where(key == entry_id)).one()
            if existing is not None and (
                (existing.customer_id, existing.invoice_id) != (customer_id, invoice_id)
                or existing._mapping.get("dispute_id") != dispute_id
                or (amount is not None and (existing.currency, existing.amount) != (amount.currency, amount.amount))
            ):
                booked_dispute = existing._mapping.get("dispute_id")
                raise LedgerRejection(
                    kind.conflict_code,
                    f"{kind.name} {entry_id} is already on the books for "
                    f"{existing.amount} {existing.currency} against invoice {existing.invoice_id}"
                    + (f" settling dispute {booked_dispute}" if booked_dispute else "")
                    + f"; a different {kind.name} needs a new id",
                )
            invoice_row = _invoice_row(connection, invoice_id)
            assert invoice_row is not None  # the entry exists, so the invoice it settles does
            return _balance(connection, customer_id, invoice_row.currency, [*known_invoice_ids, invoice_id])

    # --- due dates ------------------------------------------------------------------------------------------

    def reschedule_invoice(self, request: RescheduleInvoiceRequest) -> AccountBalance:
        """Move an unsettled invoice's due date later (`extend_due_date`) and keep the change with its reason.

        Refused for an invoice not on the books or another customer's, a settled invoice, or a due date
        earlier than the current one. The same change id again changes nothing; with another invoice or date
        it is refused. The balance returned includes the invoice with its new due date.
        """
        with self._engine.begin() as connection:
            _lock_account(connection, request.customer_id)
            existing = _due_change_row(connection, request.change_id)
            if existing is None:
                invoice = _require_invoice_of(connection, request.customer_id, request.invoice_id)
                _require_later_due_date(invoice, request)
                inserted = connection.execute(
                    _insert(connection, invoice_due_changes)
                    .values(
                        change_id=request.change_id,
                        customer_id=request.customer_id,
                        invoice_id=request.invoice_id,
                        old_due_on=invoice.due_on,
                        old_due_at=invoice.due_at,
                        new_due_on=request.due_on,
                        new_due_at=request.due_at,
                        reason=request.reason,
                        at=_now(),
                    )
                    .on_conflict_do_nothing(index_elements=["change_id"])
                ).rowcount
                if inserted:
                    connection.execute(
                        invoices.update()
                        .where(invoices.c.invoice_id == request.invoice_id)
                        .values(due_on=request.due_on, due_at=request.due_at)
                    )
                existing = _due_change_row(connection, request.change_id)
                assert existing is not None  # inserted above, or by another customer's worker a moment ago
            booked = (existing.customer_id, existing.invoice_id, existing.new_due_on, existing.new_due_at)
            if booked != (request.customer_id, request.invoice_id, request.due_on, request.due_at):
                raise LedgerRejection(
                    "reschedule_conflict",
                    f"due date change {request.change_id} is already on the books, moving invoice "
                    f"{existing.invoice_id} to {existing.new_due_on}; a different change needs a new id",
                )
            invoice_row = _invoice_row(connection, request.invoice_id)
            assert invoice_row is not None  # the change exists, so the invoice it moved does
            return _balance(
                connection,
                request.customer_id,
                invoice_row.currency,
                [*request.known_invoice_ids, request.invoice_id],
            )


# --- accounts ---------------------------------------------------------------------------------------------


def _open_account(connection: Connection, customer_id: str, currency: str, now: datetime) -> Row[Any]:
    """Lock the customer's account, opening one in `currency` if the customer has none yet."""
    connection.execute(
        _insert(connection, customers)
        .values(customer_id=customer_id, currency=currency, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["customer_id"])
    )
    row = _lock_account(connection, customer_id)
    assert row is not None  # inserted above, or already there
    return row


def _upsert_customer(connection: Connection, account: CustomerAccount, currency: str, now: datetime) -> Row[Any]:
    details = {
        "name": account.name,
        "email": account.email,
        "locale": account.locale,
        "time_zone": account.time_zone,
        "tenant_id": account.tenant_id,
        "updated_at": now,
    }
    connection.execute(
        _insert(connection, customers)
        .values(customer_id=account.customer_id, currency=currency, created_at=now, **details)
        .on_conflict_do_update(index_elements=["customer_id"], set_=details)
    )
    row = _lock_account(connection, account.customer_id)
    assert row is not None  # upserted above
    return row


def _require_currency(account: Row[Any], currency: str) -> None:
    if account.currency != currency:
        raise LedgerRejection(
            "currency_mismatch",
            f"customer {account.customer_id}'s account is kept in {account.currency}; "
            f"an amount in {currency} cannot be booked on it",
        )


# --- invoices ---------------------------------------------------------------------------------------------


def _require_same_invoice(connection: Connection, existing: Row[Any], request: RecordInvoiceRequest) -> None:
    invoice = request.invoice
    # An extended due date is not a different invoice: compare with the due date it was issued with.
    first_change = connection.execute(
        select(invoice_due_changes.c.old_due_on, invoice_due_changes.c.old_due_at)
        .where(invoice_due_changes.c.invoice_id == existing.invoice_id)
        .order_by(invoice_due_changes.c.at, invoice_due_changes.c.change_id)
        .limit(1)
    ).one_or_none()
    issued_due_on, issued_due_at = (existing.due_on, existing.due_at) if first_change is None else tuple(first_change)
    checks: tuple[tuple[str, object, object], ...] = (
        ("customer", existing.customer_id, invoice.customer_id),
        ("amount", Money(amount=existing.amount, currency=existing.currency), invoice.amount),
        ("issue date", existing.issued_on, invoice.issued_on),
        ("due date", issued_due_on, invoice.due_on),
        ("due moment", issued_due_at, request.due_at.astimezone(UTC)),
    )
    differences = [f"{what} {booked} (now {given})" for what, booked, given in checks if booked != given]
    if differences:
        raise LedgerRejection(
            "invoice_conflict",
            f"invoice {invoice.invoice_id} is already on the books with a different "
            + ", ".join(differences)
            + "; a corrected invoice needs a new invoice id",
        )


def _require_settlement(invoice: Row[Any], amount: Money, what: str) -> Decimal:
    """Check that a credit note or write-off of `amount` fits the invoice; return the amount to book."""
    if not amount.is_positive:
        raise LedgerRejection("invalid_amount", f"a {what} must be for more than zero, not {amount}")
    if amount.currency != invoice.currency:
        raise LedgerRejection(
            "currency_mismatch",
            f"invoice {invoice.invoice_id} is in {invoice.currency}; a {what} in {amount.currency} cannot settle it",
        )
    if amount.amount > invoice.outstanding:
        raise LedgerRejection(
            "over_outstanding",
            f"a {what} of {amount} is more than the {invoice.outstanding} {invoice.currency} "
            f"outstanding on invoice {invoice.invoice_id}",
        )
    return amount.amount


def _require_later_due_date(invoice: Row[Any], request: RescheduleInvoiceRequest) -> None:
    if not invoice.outstanding:
        raise LedgerRejection(
            "nothing_outstanding", f"invoice {invoice.invoice_id} is settled; it has no due date left to move"
        )
    if request.due_on < invoice.due_on or request.due_at < invoice.due_at:
        raise LedgerRejection(
            "earlier_due_date",
            f"invoice {invoice.invoice_id} falls due on {invoice.due_on} ({invoice.due_at.isoformat()}); "
            f"a due date can only move later, not to {request.due_on} ({request.due_at.isoformat()})",
        )


def _due_change_row(connection: Connection, change_id: str) -> Row[Any] | None:
    return connection.execute(
        select(invoice_due_changes).where(invoice_due_changes.c.change_id == change_id)
    ).one_or_none()


def _settle(
    connection: Connection,
    invoice_id: str,
    *,
    paid: Decimal = Decimal(0),
    credited: Decimal = Decimal(0),
    written_off: Decimal = Decimal(0),
) -> None:
    """Move an amount of an invoice from outstanding to paid, credited or written off."""
    connection.execute(
        invoices.update()
        .where(invoices.c.invoice_id == invoice_id)
        .values(
            paid=invoices.c.paid + paid,
            credited=invoices.c.credited + credited,
            written_off=invoices.c.written_off + written_off,
            outstanding=invoices.c.outstanding - (paid + credited + written_off),
        )
    )


_OPEN_DUES = (
    select(invoices.c.invoice_id, invoices.c.outstanding)
    .where(invoices.c.customer_id == bindparam("customer_id"), invoices.c.outstanding > 0)
    .order_by(invoices.c.due_at, invoices.c.issued_on, invoices.c.invoice_id)
)


def _open_dues(connection: Connection, customer_id: str) -> list[_Due]:
    """The customer's invoices with something outstanding, oldest first."""
    rows = connection.execute(_OPEN_DUES, {"customer_id": customer_id}).all()
    return [_Due(row.invoice_id, row.outstanding) for row in rows]


# --- payments and credit ----------------------------------------------------------------------------------


def _record_payment(
    connection: Connection, payment: Payment, known_invoice_ids: Sequence[str], now: datetime
) -> PaymentRecorded:
    """`Books.record_payment` inside the caller's transaction."""
    currency = payment.amount.currency
    account_row = _open_account(connection, payment.customer_id, currency, now)
    existing = _payment_row(connection, payment.payment_id)
    if existing is None:
        _require_currency(account_row, currency)
        if payment.invoice_id is not None:
            _require_invoice_of(connection, payment.customer_id, payment.invoice_id)
        inserted = connection.execute(
            _insert(connection, payments)
            .values(
                payment_id=payment.payment_id,
                customer_id=payment.customer_id,
                currency=currency,
                amount=payment.amount.amount,
                received_at=payment.received_at,
                invoice_id=payment.invoice_id,
                recorded_at=now,
            )
            .on_conflict_do_nothing(index_elements=["payment_id"])
        ).rowcount
        if not inserted:
            # Another customer's worker booked the same payment id a moment ago.
            existing = _payment_row(connection, payment.payment_id)
    if existing is not None:
        _require_same_payment(existing, payment)
        return _repeated_payment(connection, existing, known_invoice_ids)

    dues = _open_dues(connection, payment.customer_id)
    if payment.invoice_id is not None:
        # The sort is stable: the named invoice moves to the front, the others stay oldest first.
        dues.sort(key=lambda due: due.invoice_id != payment.invoice_id)
    made, left = _allocate(
        connection,
        payment.customer_id,
        payment.payment_id,
        "payment",
        currency,
        payment.amount.amount,
        dues,
        now,
    )
    if left:
        connection.execute(
            unapplied_credits.insert().values(
                payment_id=payment.payment_id,
                customer_id=payment.customer_id,
                currency=currency,
                amount=left,
                remaining=left,
                created_at=now,
            )
        )
    touched = [invoice_id for invoice_id, _ in made]
    return PaymentRecorded(
        balance=_balance(connection, payment.customer_id, currency, [*known_invoice_ids, *touched]),
        duplicate=False,
        allocations=[Allocation(invoice_id=i, amount=Money(amount=a, currency=currency)) for i, a in made],
        unapplied=Money(amount=left, currency=currency),
    )


_PAYMENT_ROW = select(payments).where(payments.c.payment_id == bindparam("payment_id"))


def _payment_row(connection: Connection, payment_id: str) -> Row[Any] | None:
    return connection.execute(_PAYMENT_ROW, {"payment_id": payment_id}).one_or_none()


def _require_same_payment(existing: Row[Any], payment: Payment) -> None:
    booked = (existing.customer_id, existing.currency, existing.amount, existing.invoice_id)
    given = (payment.customer_id, payment.amount.currency, payment.amount.amount, payment.invoice_id)
    if booked != given:
        named = f" for invoice {existing.invoice_id}" if existing.invoice_id else ""
        raise LedgerRejection(
            "payment_conflict",
            f"payment {payment.payment_id} is already on the books as {existing.amount} {existing.currency} "
            f"from customer {existing.customer_id}{named}; a different payment needs a new payment id",
        )


def _require_same_refund_flag(connection: Connection, existing: Row[Any], refund: bool) -> None:
    flagged = connection.execute(
        select(refund_requests.c.payment_id).where(refund_requests.c.payment_id == existing.payment_id)
    ).one_or_none()
    if refund != (flagged is not None):
        booked = "booked as credit, not flagged for refund" if refund else "flagged for refund"
        raise LedgerRejection(
            "payment_conflict",
            f"payment {existing.payment_id} is already on the books, {booked}; a different booking needs a new "
            "payment id",
        )


def _repeated_payment(connection: Connection, existing: Row[Any], known_invoice_ids: Sequence[str]) -> PaymentRecorded:
    """What recording the payment reported the first time, with today's balance."""
    currency = existing.currency
    made = connection.execute(
        select(allocations.c.invoice_id, allocations.c.amount)
        .where(allocations.c.payment_id == existing.payment_id, allocations.c.source == "payment")
        .order_by(allocations.c.allocation_id)
    ).all()
    left = connection.execute(
        select(unapplied_credits.c.amount).where(unapplied_credits.c.payment_id == existing.payment_id)
    ).scalar_one_or_none()
    touched = [row.invoice_id for row in made]
    return PaymentRecorded(
        balance=_balance(connection, existing.customer_id, currency, [*known_invoice_ids, *touched]),
        duplicate=True,
        allocations=[
            Allocation(invoice_id=row.invoice_id, amount=Money(amount=row.amount, currency=currency)) for row in made
        ],
        unapplied=Money(amount=left or Decimal(0), currency=currency),
    )


def _allocate(
    connection: Connection,
    customer_id: str,
    payment_id: str,
    source: str,
    currency: str,
    amount: Decimal,
    dues: list[_Due],
    now: datetime,
) -> tuple[list[tuple[str, Decimal]], Decimal]:
    """Pay `dues` in order from `amount`; return what went to which invoice and what is left."""
    made: list[tuple[str, Decimal]] = []
    left = amount
    for due in dues:
        share = min(left, due.outstanding)
        if not share:
            continue
        connection.execute(
            allocations.insert().values(
                customer_id=customer_id,
                invoice_id=due.invoice_id,
                payment_id=payment_id,
                source=source,
                currency=currency,
                amount=share,
                allocated_at=now,
            )
        )
        _settle(connection, due.invoice_id, paid=share)
        due.outstanding -= share
        left -= share
        made.append((due.invoice_id, share))
    return made, left


_UNAPPLIED_CREDITS = (
    select(unapplied_credits.c.payment_id, unapplied_credits.c.remaining)
    .where(unapplied_credits.c.customer_id == bindparam("customer_id"), unapplied_credits.c.remaining > 0)
    .order_by(unapplied_credits.c.created_at, unapplied_credits.c.payment_id)
)


def _apply_unapplied_credit(connection: Connection, customer_id: str, currency: str, now: datetime) -> None:
    """Pay open invoices, oldest first, from the customer's unapplied credit, oldest credit first."""
    credits = connection.execute(_UNAPPLIED_CREDITS, {"customer_id": customer_id}).all()
    if not credits:
        return
    dues = _open_dues(connection, customer_id)
    for credit in credits:
        made, left = _allocate(
            connection, customer_id, credit.payment_id, "credit", currency, credit.remaining, dues, now
        )
        if made:
            connection.execute(
                unapplied_credits.update()
                .where(unapplied_credits.c.payment_id == credit.payment_id)
                .values(remaining=left)
            )


# --- credit notes settling a dispute ----------------------------------------------------------------------


def _require_within_dispute(
    connection: Connection, customer_id: str, invoice_id: str, dispute_id: str, amount: Decimal
) -> None:
    """A credit note settling a dispute is against the disputed invoice, and the dispute's credit notes
    together stay within the disputed amount."""
    dispute = _require_dispute_of(connection, customer_id, dispute_id)
    if dispute.invoice_id != invoice_id:
        raise LedgerRejection(
            "wrong_invoice",
            f"dispute {dispute_id} is about invoice {dispute.invoice_id}; "
            f"a credit note settling it cannot be against invoice {invoice_id}",
        )
    credited = sum(
        connection.execute(select(credit_notes.c.amount).where(credit_notes.c.dispute_id == dispute_id)).scalars(),
        Decimal(0),
    )
    if credited + amount > dispute.amount:
        raise LedgerRejection(
            "over_disputed",
            f"a credit note of {amount} {dispute.currency} is more than the {dispute.amount - credited} "
            f"{dispute.currency} of dispute {dispute_id} not yet credited "
            f"(disputed: {dispute.amount} {dispute.currency})",
        )


# --- balances ---------------------------------------------------------------------------------------------


_ACCOUNT = select(customers).where(customers.c.customer_id == bindparam("customer_id"))
_BALANCE_INVOICES = (
    select(invoices)
    .where(
        invoices.c.customer_id == bindparam("customer_id"),
        (invoices.c.outstanding > 0) | invoices.c.invoice_id.in_(bindparam("known", expanding=True)),
    )
    .order_by(invoices.c.due_at, invoices.c.issued_on, invoices.c.invoice_id)
)
_UNAPPLIED_CREDIT = select(unapplied_credits.c.remaining).where(
    unapplied_credits.c.customer_id == bindparam("customer_id")
)


def _balance(
    connection: Connection, customer_id: str, currency: str, known_invoice_ids: Iterable[str]
) -> AccountBalance:
    account = connection.execute(_ACCOUNT, {"customer_id": customer_id}).one_or_none()
    if account is None:
        zero = Money.zero(currency)
        return AccountBalance(customer_id=customer_id, currency=currency, unapplied_credit=zero, amount_due=zero)
    _require_currency(account, currency)
    known = sorted(set(known_invoice_ids))
    rows = connection.execute(_BALANCE_INVOICES, {"customer_id": customer_id, "known": known}).all()
    credit = connection.execute(_UNAPPLIED_CREDIT, {"customer_id": customer_id}).scalars()

    return AccountBalance(
        customer_id=customer_id,
        currency=currency,
        invoices=[_invoice_balance(row) for row in rows],
        unapplied_credit=_total(credit, currency, f"customer {customer_id}'s unapplied credit"),
        amount_due=_total((row.outstanding for row in rows), currency, f"customer {customer_id}'s amount due"),
    )

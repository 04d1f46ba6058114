"""`LedgerStore`: the books of every customer and the mailer's notice log, in SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, Row, Table, create_engine, event, make_url, select, text
from sqlalchemy.dialects import postgresql, sqlite

from billing.ledger.schema import (
    allocations,
    credit_notes,
    customers,
    invoices,
    notice_log,
    payments,
    unapplied_credits,
    write_offs,
)
from billing.models import CustomerAccount, Payment
from billing.money import Money
from billing.ports import (
    AccountBalance,
    Allocation,
    CreditNoteRequest,
    InvoiceBalance,
    NoticeLogEntry,
    PaymentRecorded,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    WriteOffRequest,
)

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it names the PostgreSQL advisory lock that lets one worker at a time migrate.
_MIGRATION_LOCK_KEY = 0x6C6564676572


class LedgerRejection(ValueError):
    """A request the books refuse. `code` names the reason for programs; the message explains it to people.

    Codes: `unknown_invoice`, `wrong_customer`, `currency_mismatch`, `invoice_conflict`, `payment_conflict`,
    `credit_conflict`, `write_off_conflict`, `over_outstanding`, `nothing_outstanding`, `invalid_amount`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


class LedgerStore:
    """The books of every customer in one SQL database; also the mailer's `NoticeLog`.

    Every write is one transaction that first locks the customer's row, so two workers writing for the same
    customer queue behind each other, and every write is idempotent by its natural key (invoice id, payment
    id, credit id, write-off id, notice key): a repeat changes nothing, a conflicting repeat is refused.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str | URL, *, migrate: bool = True) -> LedgerStore:
        """Open the ledger at a SQLAlchemy URL (`sqlite:///var/ledger.db`, `postgresql://user@host/db`).

        A plain `postgresql://` URL uses psycopg 3; a SQLite file's folder is created if missing. With
        `migrate` (the default) the schema is brought up to date first.
        """
        store = cls(_create_engine(url))
        if migrate:
            store.migrate()
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema in place to `revision` (the newest by default); a database already there is
        left alone."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.set_main_option("path_separator", "os")
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Workers starting together would race to create the tables: the first migrates, the others
                # wait here and then find nothing left to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def close(self) -> None:
        self._engine.dispose()

    # --- the notice log ---------------------------------------------------------------------------------

    def find_notice(self, customer_id: str, key: str) -> NoticeLogEntry | None:
        with self._engine.connect() as connection:
            row = _notice_row(connection, customer_id, key)
        return None if row is None else _notice_entry(row)

    def log_notice(self, entry: NoticeLogEntry) -> NoticeLogEntry:
        """Store the entry unless one with the same (customer_id, key) exists; return the stored one."""
        with self._engine.begin() as connection:
            connection.execute(
                _insert(connection, notice_log)
                .values(
                    customer_id=entry.customer_id,
                    key=entry.key,
                    kind=entry.kind.value,
                    message_id=entry.message_id,
                    sent_at=entry.sent_at,
                    invoice_id=entry.invoice_id,
                    logged_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["customer_id", "key"])
            )
            row = _notice_row(connection, entry.customer_id, entry.key)
        assert row is not None  # inserted above, or already there
        return _notice_entry(row)

    # --- the books --------------------------------------------------------------------------------------

    def balance(
        self, customer_id: str, currency: str, known_invoice_ids: Iterable[str] = ()
    ) -> AccountBalance:
        """The customer's open invoices (and those in `known_invoice_ids`, open or not), oldest first.

        A customer with nothing on the books has a zero balance in `currency`.
        """
        with self._engine.connect() as connection:
            return _balance(connection, customer_id, currency, known_invoice_ids)

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
                _require_same_invoice(existing, request)
            return _balance(
                connection, invoice.customer_id, currency, [*request.known_invoice_ids, invoice.invoice_id]
            )

    def record_payment(self, request: RecordPaymentRequest) -> PaymentRecorded:
        """Book a payment: the invoice it names first, then open invoices oldest first, the rest as credit.

        A repeated payment id changes nothing and reports `duplicate=True` with the original allocation; the
        same id with another customer, amount or named invoice is refused.
        """
        payment = request.payment
        currency = payment.amount.currency
        with self._engine.begin() as connection:
            now = _now()
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
                return _repeated_payment(connection, existing, request.known_invoice_ids)

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
                balance=_balance(
                    connection, payment.customer_id, currency, [*request.known_invoice_ids, *touched]
                ),
                duplicate=False,
                allocations=[
                    Allocation(invoice_id=i, amount=Money(amount=a, currency=currency)) for i, a in made
                ],
                unapplied=Money(amount=left, currency=currency),
            )

    def post_credit_note(self, request: CreditNoteRequest) -> AccountBalance:
        """Credit (part of) an invoice's outstanding amount; never more than is outstanding.

        The same credit id posted again changes nothing; with another invoice or amount it is refused.
        """
        return self._settle_invoice(
            _CREDIT_NOTE,
            request.credit_id,
            request.customer_id,
            request.invoice_id,
            request.amount,
            request.reason,
            request.known_invoice_ids,
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
    ) -> AccountBalance:
        """Post a credit note or write-off of `amount` (absent: all still outstanding) against an invoice."""
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
                    Money(amount=invoice.outstanding, currency=invoice.currency)
                    if amount is None
                    else amount,
                    kind.name,
                )
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
                or (
                    amount is not None
                    and (existing.currency, existing.amount) != (amount.currency, amount.amount)
                )
            ):
                raise LedgerRejection(
                    kind.conflict_code,
                    f"{kind.name} {entry_id} is already on the books for "
                    f"{existing.amount} {existing.currency} against invoice {existing.invoice_id}; "
                    f"a different {kind.name} needs a new id",
                )
            invoice_row = _invoice_row(connection, invoice_id)
            assert invoice_row is not None  # the entry exists, so the invoice it settles does
            return _balance(connection, customer_id, invoice_row.currency, [*known_invoice_ids, invoice_id])


# --- engine -----------------------------------------------------------------------------------------------


def _create_engine(url: str | URL) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_connected)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 begins transactions lazily and only before writes; SQLAlchemy's "begin" hook takes over, so that
    # a transaction that reads and then writes holds the write lock from its start (see `_sqlite_begin`).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE: two workers queue on the lock (up to sqlite3's timeout) instead of both reading a balance and
    # one of them failing with "database is locked" when it tries to write.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _insert(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(table) if connection.dialect.name == "postgresql" else sqlite.insert(table)


def _now() -> datetime:
    return datetime.now(UTC)


# --- the notice log ---------------------------------------------------------------------------------------


def _notice_row(connection: Connection, customer_id: str, key: str) -> Row[Any] | None:
    return connection.execute(
        select(notice_log).where(notice_log.c.customer_id == customer_id, notice_log.c.key == key)
    ).one_or_none()


def _notice_entry(row: Row[Any]) -> NoticeLogEntry:
    return NoticeLogEntry(
        customer_id=row.customer_id,
        key=row.key,
        kind=row.kind,
        message_id=row.message_id,
        sent_at=row.sent_at,
        invoice_id=row.invoice_id,
    )


# --- accounts ---------------------------------------------------------------------------------------------


def _lock_account(connection: Connection, customer_id: str) -> Row[Any] | None:
    # FOR UPDATE serialises writers per customer on PostgreSQL; SQLite's BEGIN IMMEDIATE already did.
    return connection.execute(
        select(customers).where(customers.c.customer_id == customer_id).with_for_update()
    ).one_or_none()


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


def _upsert_customer(
    connection: Connection, account: CustomerAccount, currency: str, now: datetime
) -> Row[Any]:
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


def _invoice_row(connection: Connection, invoice_id: str) -> Row[Any] | None:
    return connection.execute(select(invoices).where(invoices.c.invoice_id == invoice_id)).one_or_none()


def _require_invoice_of(connection: Connection, customer_id: str, invoice_id: str) -> Row[Any]:
    row = _invoice_row(connection, invoice_id)
    if row is None:
        raise LedgerRejection("unknown_invoice", f"invoice {invoice_id} is not on the books")
    if row.customer_id != customer_id:
        raise LedgerRejection(
            "wrong_customer",
            f"invoice {invoice_id} belongs to another customer, not to customer {customer_id}",
        )
    return row


def _require_same_invoice(existing: Row[Any], request: RecordInvoiceRequest) -> None:
    invoice = request.invoice
    checks: tuple[tuple[str, object, object], ...] = (
        ("customer", existing.customer_id, invoice.customer_id),
        ("amount", Money(amount=existing.amount, currency=existing.currency), invoice.amount),
        ("issue date", existing.issued_on, invoice.issued_on),
        ("due date", existing.due_on, invoice.due_on),
        ("due moment", existing.due_at, request.due_at.astimezone(UTC)),
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
            f"invoice {invoice.invoice_id} is in {invoice.currency}; "
            f"a {what} in {amount.currency} cannot settle it",
        )
    if amount.amount > invoice.outstanding:
        raise LedgerRejection(
            "over_outstanding",
            f"a {what} of {amount} is more than the {invoice.outstanding} {invoice.currency} "
            f"outstanding on invoice {invoice.invoice_id}",
        )
    return amount.amount


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


def _open_dues(connection: Connection, customer_id: str) -> list[_Due]:
    """The customer's invoices with something outstanding, oldest first."""
    rows = connection.execute(
        select(invoices.c.invoice_id, invoices.c.outstanding)
        .where(invoices.c.customer_id == customer_id, invoices.c.outstanding > 0)
        .order_by(invoices.c.due_at, invoices.c.issued_on, invoices.c.invoice_id)
    ).all()
    return [_Due(row.invoice_id, row.outstanding) for row in rows]


# --- payments and credit ----------------------------------------------------------------------------------


def _payment_row(connection: Connection, payment_id: str) -> Row[Any] | None:
    return connection.execute(select(payments).where(payments.c.payment_id == payment_id)).one_or_none()


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


def _repeated_payment(
    connection: Connection, existing: Row[Any], known_invoice_ids: Sequence[str]
) -> PaymentRecorded:
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
            Allocation(invoice_id=row.invoice_id, amount=Money(amount=row.amount, currency=currency))
            for row in made
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


def _apply_unapplied_credit(connection: Connection, customer_id: str, currency: str, now: datetime) -> None:
    """Pay open invoices, oldest first, from the customer's unapplied credit, oldest credit first."""
    credits = connection.execute(
        select(unapplied_credits.c.payment_id, unapplied_credits.c.remaining)
        .where(unapplied_credits.c.customer_id == customer_id, unapplied_credits.c.remaining > 0)
        .order_by(unapplied_credits.c.created_at, unapplied_credits.c.payment_id)
    ).all()
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


# --- balances ---------------------------------------------------------------------------------------------


def _balance(
    connection: Connection, customer_id: str, currency: str, known_invoice_ids: Iterable[str]
) -> AccountBalance:
    account = connection.execute(
        select(customers).where(customers.c.customer_id == customer_id)
    ).one_or_none()
    if account is None:
        zero = Money.zero(currency)
        return AccountBalance(
            customer_id=customer_id, currency=currency, unapplied_credit=zero, amount_due=zero
        )
    _require_currency(account, currency)
    rows = connection.execute(
        select(invoices)
        .where(
            invoices.c.customer_id == customer_id,
            (invoices.c.outstanding > 0) | invoices.c.invoice_id.in_(set(known_invoice_ids)),
        )
        .order_by(invoices.c.due_at, invoices.c.issued_on, invoices.c.invoice_id)
    ).all()
    credit = sum(
        connection.execute(
            select(unapplied_credits.c.remaining).where(unapplied_credits.c.customer_id == customer_id)
        ).scalars(),
        Decimal(0),
    )

    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=currency)

    return AccountBalance(
        customer_id=customer_id,
        currency=currency,
        invoices=[
            InvoiceBalance(
                invoice_id=row.invoice_id,
                amount=money(row.amount),
                paid=money(row.paid),
                credited=money(row.credited),
                written_off=money(row.written_off),
                outstanding=money(row.outstanding),
                issued_on=row.issued_on,
                due_on=row.due_on,
                due_at=row.due_at,
                description=row.description,
            )
            for row in rows
        ],
        unapplied_credit=money(credit),
        amount_due=money(sum((row.outstanding for row in rows), Decimal(0))),
    )

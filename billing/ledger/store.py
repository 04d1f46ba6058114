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
from pydantic import ValidationError
from sqlalchemy import URL, Connection, Engine, Row, Table, create_engine, event, make_url, select, text
from sqlalchemy.dialects import postgresql, sqlite

from billing import refusals
from billing.ledger.schema import (
    allocations,
    audit_trail,
    credit_notes,
    customers,
    disputes,
    escalation_history,
    escalations,
    invoice_due_changes,
    invoices,
    notice_log,
    payments,
    unapplied_credits,
    write_offs,
)
from billing.models import DEFAULT_TIME_ZONE, CustomerAccount, Payment
from billing.money import Money
from billing.ports import (
    AccountBalance,
    Allocation,
    AuditEntry,
    CreditNoteRequest,
    CreditView,
    DisputeRecordRequest,
    EscalationCase,
    EscalationCaseRequest,
    EscalationChange,
    EscalationHistoryEntry,
    EscalationRecord,
    InvoiceBalance,
    NoticeLogEntry,
    OwedAccount,
    PaymentRecorded,
    PaymentView,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    RescheduleInvoiceRequest,
    WriteOffRequest,
)

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it names the PostgreSQL advisory lock that lets one worker at a time migrate.
_MIGRATION_LOCK_KEY = 0x6C6564676572


class LedgerRejection(ValueError):
    """A request the books refuse. `code` names the reason for programs; the message explains it to people.

    Codes: `unknown_invoice`, `wrong_customer`, `currency_mismatch`, `invoice_conflict`, `payment_conflict`,
    `credit_conflict`, `write_off_conflict`, `over_outstanding`, `nothing_outstanding`, `invalid_amount`,
    `audit_conflict`, `reschedule_conflict`, `earlier_due_date`, `unknown_dispute`, `wrong_invoice`,
    `dispute_conflict`, `over_disputed`, `not_escalated`, `already_escalated`, `escalation_closed`,
    `escalation_conflict`, `invalid_escalation`.
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
    id, credit id, write-off id, notice key, action id, change id, dispute id): a repeat changes nothing, a
    conflicting repeat is refused.
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

    def balance(self, customer_id: str, currency: str, known_invoice_ids: Iterable[str] = ()) -> AccountBalance:
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
                _require_same_invoice(connection, existing, request)
            return _balance(connection, invoice.customer_id, currency, [*request.known_invoice_ids, invoice.invoice_id])

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
                balance=_balance(connection, payment.customer_id, currency, [*request.known_invoice_ids, *touched]),
                duplicate=False,
                allocations=[Allocation(invoice_id=i, amount=Money(amount=a, currency=currency)) for i, a in made],
                unapplied=Money(amount=left, currency=currency),
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

    # --- disputes and their escalation to 21Vianet ----------------------------------------------------------

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

    # --- the operators' audit trail -------------------------------------------------------------------------

    def record_audit(self, entry: AuditEntry) -> None:
        """Add an accepted operator action to the audit trail; the same action id again changes nothing, with
        other content it is refused."""
        with self._engine.begin() as connection:
            _lock_account(connection, entry.customer_id)
            connection.execute(
                _insert(connection, audit_trail)
                .values(
                    action_id=entry.action_id,
                    customer_id=entry.customer_id,
                    action=entry.action,
                    reason=entry.reason,
                    details=entry.details,
                    at=entry.at,
                    recorded_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["action_id"])
            )
            stored = connection.execute(select(audit_trail).where(audit_trail.c.action_id == entry.action_id)).one()
            if _audit_entry(stored) != entry:
                raise LedgerRejection(
                    "audit_conflict",
                    f"operator action {entry.action_id} is already in the audit trail as {stored.action} "
                    f"for customer {stored.customer_id} at {stored.at.isoformat()}, with other content; "
                    "a different action needs a new id",
                )

    def audit_trail(self, customer_id: str) -> list[AuditEntry]:
        """The customer's operator actions, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(audit_trail)
                .where(audit_trail.c.customer_id == customer_id)
                .order_by(audit_trail.c.at, audit_trail.c.recorded_at, audit_trail.c.action_id)
            ).all()
        return [_audit_entry(row) for row in rows]

    # --- the daily sweep ----------------------------------------------------------------------------------

    def owed_accounts(self, after_customer_id: str | None, limit: int) -> list[OwedAccount]:
        """The next `limit` customers (by customer id, after `after_customer_id`) with money owed on an invoice,
        each with their open invoices. Reads only the rows of the owed-invoices index, so a page costs the same
        whether the books hold a thousand customers or a million."""
        if limit < 1:
            raise ValueError("a page holds at least one customer")
        owed = invoices.c.outstanding > 0
        page = select(invoices.c.customer_id).where(owed).group_by(invoices.c.customer_id)
        if after_customer_id is not None:
            page = page.where(invoices.c.customer_id > after_customer_id)
        page = page.order_by(invoices.c.customer_id).limit(limit)
        with self._engine.connect() as connection:
            customer_ids = list(connection.execute(page).scalars())
            if not customer_ids:
                return []
            accounts = {
                row.customer_id: row
                for row in connection.execute(select(customers).where(customers.c.customer_id.in_(customer_ids)))
            }
            open_rows: dict[str, list[Row[Any]]] = {customer_id: [] for customer_id in customer_ids}
            for row in connection.execute(
                select(invoices)
                .where(owed, invoices.c.customer_id.in_(customer_ids))
                .order_by(invoices.c.customer_id, invoices.c.due_at, invoices.c.issued_on, invoices.c.invoice_id)
            ):
                open_rows[row.customer_id].append(row)
            credits: dict[str, Decimal] = {}
            for customer_id, remaining in connection.execute(
                select(unapplied_credits.c.customer_id, unapplied_credits.c.remaining).where(
                    unapplied_credits.c.customer_id.in_(customer_ids)
                )
            ):
                credits[customer_id] = credits.get(customer_id, Decimal(0)) + remaining
        return [
            _owed_account(accounts[customer_id], open_rows[customer_id], credits.get(customer_id, Decimal(0)))
            for customer_id in customer_ids
        ]

    def invoice_owners(self, invoice_ids: Iterable[str]) -> dict[str, str]:
        """Of `invoice_ids`, those on the books, each with the customer it is booked for."""
        wanted = set(invoice_ids)
        if not wanted:
            return {}
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(invoices.c.invoice_id, invoices.c.customer_id).where(invoices.c.invoice_id.in_(wanted))
            ).all()
        return {row.invoice_id: row.customer_id for row in rows}

    def currencies_of_customers_owing_nothing(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """Of `customer_ids`, those on the books who owe nothing at all, each with its account's currency."""
        wanted = set(customer_ids)
        if not wanted:
            return {}
        owing = select(invoices.c.customer_id).where(invoices.c.outstanding > 0, invoices.c.customer_id.in_(wanted))
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(customers.c.customer_id, customers.c.currency).where(
                    customers.c.customer_id.in_(wanted), customers.c.customer_id.not_in(owing)
                )
            ).all()
        return {row.customer_id: row.currency for row in rows}


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


# --- disputes and escalations -----------------------------------------------------------------------------


def _dispute_row(connection: Connection, dispute_id: str) -> Row[Any] | None:
    return connection.execute(select(disputes).where(disputes.c.dispute_id == dispute_id)).one_or_none()


def _dispute_amount(dispute: Row[Any]) -> Money:
    return Money(amount=dispute.amount, currency=dispute.currency)


def _require_dispute_of(connection: Connection, customer_id: str, dispute_id: str) -> Row[Any]:
    row = _dispute_row(connection, dispute_id)
    if row is None:
        raise LedgerRejection("unknown_dispute", f"dispute {dispute_id} is not on the books")
    if row.customer_id != customer_id:
        raise LedgerRejection(
            "wrong_customer",
            f"dispute {dispute_id} belongs to another customer, not to customer {customer_id}",
        )
    return row


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


# --- the audit trail --------------------------------------------------------------------------------------


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        action_id=row.action_id,
        customer_id=row.customer_id,
        action=row.action,
        reason=row.reason,
        details=row.details,
        at=row.at,
    )


# --- balances ---------------------------------------------------------------------------------------------


def _balance(
    connection: Connection, customer_id: str, currency: str, known_invoice_ids: Iterable[str]
) -> AccountBalance:
    account = connection.execute(select(customers).where(customers.c.customer_id == customer_id)).one_or_none()
    if account is None:
        zero = Money.zero(currency)
        return AccountBalance(customer_id=customer_id, currency=currency, unapplied_credit=zero, amount_due=zero)
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

    return AccountBalance(
        customer_id=customer_id,
        currency=currency,
        invoices=[_invoice_balance(row) for row in rows],
        unapplied_credit=Money(amount=credit, currency=currency),
        amount_due=Money(amount=sum((row.outstanding for row in rows), Decimal(0)), currency=currency),
    )


def _owed_account(account: Row[Any], rows: list[Row[Any]], credit: Decimal) -> OwedAccount:
    currency = account.currency
    balance = AccountBalance(
        customer_id=account.customer_id,
        currency=currency,
        invoices=[_invoice_balance(row) for row in rows],
        unapplied_credit=Money(amount=credit, currency=currency),
        amount_due=Money(amount=sum((row.outstanding for row in rows), Decimal(0)), currency=currency),
    )
    try:
        details = CustomerAccount(
            customer_id=account.customer_id,
            name=account.name or "",
            email=account.email or "",
            locale=account.locale or "zh-CN",
            time_zone=account.time_zone or DEFAULT_TIME_ZONE,
            tenant_id=account.tenant_id or "",
        )
    except ValidationError as error:
        problems = refusals.reason(error)
        return OwedAccount(customer_id=account.customer_id, account=None, account_problem=problems, balance=balance)
    return OwedAccount(customer_id=account.customer_id, account=details, balance=balance)


def _invoice_balance(row: Row[Any]) -> InvoiceBalance:
    def money(amount: Decimal) -> Money:
        return Money(amount=amount, currency=row.currency)

    return InvoiceBalance(
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

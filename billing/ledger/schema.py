"""The ledger's tables, and the column types that keep money exact and datetimes aware on every database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.types import TypeEngine

from billing.money import MAX_AMOUNT

CENT = Decimal("0.01")


class Amount(TypeDecorator[Decimal]):
    """A money amount with two decimals: `NUMERIC(18, 2)` on PostgreSQL.

    SQLite has no exact decimal type (its NUMERIC is a float), so there the amount is an integer count of
    hundredths: sums and CHECK constraints stay exact on both databases.

    The column holds less than 10^16 on PostgreSQL (SQLite's 64-bit hundredths: about 9.2 * 10^16), but an amount
    is only stored up to `billing.money.MAX_AMOUNT` (999,999,999,999.99) either side of zero: the largest amount
    the engine books, so every amount on the books can be read back as `Money`, on either database. Running
    totals (paid, outstanding) never exceed their invoice's amount, and sums are made outside the database.
    """

    impl = Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 2, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Decimal | int | None:
        if value is None:
            return None
        # The bound first: quantizing an amount of more than 26 digits raises `decimal.InvalidOperation`.
        if not Decimal(value).is_finite() or abs(value) > MAX_AMOUNT:
            raise ValueError(f"amount {value} is beyond the largest amount the ledger books ({MAX_AMOUNT:,})")
        cents = Decimal(value).quantize(CENT)
        if cents != value:
            raise ValueError(f"amount {value} has more than two decimals")
        return int(cents.scaleb(2)) if dialect.name == "sqlite" else cents

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-2).quantize(CENT)
        return Decimal(value).quantize(CENT)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored in UTC and returned aware (UTC); a naive datetime is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"datetime {value.isoformat()} has no offset; the ledger stores aware datetimes")
        utc = value.astimezone(UTC)
        # SQLite keeps datetimes as text without an offset: store UTC and put the offset back on reading.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

notice_log = Table(
    "notice_log",
    metadata,
    Column("customer_id", String, primary_key=True),
    Column("key", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("message_id", String, nullable=False),
    Column("sent_at", UtcDateTime, nullable=False),
    # No foreign key: partner_payable notices concern 21Vianet's invoices, which are not on these books.
    Column("invoice_id", String, nullable=True),
    Column("logged_at", UtcDateTime, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String, primary_key=True),
    # The details come with the first invoice; a payment arriving before it opens the account without them.
    Column("name", String, nullable=True),
    Column("email", String, nullable=True),
    Column("locale", String, nullable=True),
    Column("time_zone", String, nullable=True),
    Column("tenant_id", String, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String, primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    # Running totals of the entries below, kept in the same transaction; the checks make over-allocation
    # impossible even if the code had a bug.
    Column("paid", Amount, nullable=False),
    Column("credited", Amount, nullable=False),
    Column("written_off", Amount, nullable=False),
    Column("outstanding", Amount, nullable=False),
    Column("issued_on", Date, nullable=False),
    Column("due_on", Date, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("description", String, nullable=True),
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("paid >= 0 AND credited >= 0 AND written_off >= 0", name="settled_not_negative"),
    CheckConstraint("outstanding >= 0", name="outstanding_not_negative"),
    CheckConstraint("outstanding = amount - paid - credited - written_off", name="outstanding_adds_up"),
    # The daily sweep's page of customers who owe something (revision 0004).
    Index(
        "ix_invoices_owed_by_customer",
        "customer_id",
        "due_at",
        postgresql_where=text("outstanding > 0"),
        sqlite_where=text("outstanding > 0"),
    ),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String, primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("invoice_id", String, ForeignKey("invoices.invoice_id"), nullable=True),  # the invoice it named
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
)

unapplied_credits = Table(
    "unapplied_credits",
    metadata,
    # What a payment left over after paying every open invoice; consumed oldest first by later invoices.
    Column("payment_id", String, ForeignKey("payments.payment_id"), primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("remaining", Amount, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_within_amount"),
)

refund_requests = Table(
    "refund_requests",
    metadata,
    # Money that arrived with nothing to pay and that an operator flagged to be paid back
    # (`starter.py book-credit --refund`): it left the unapplied credit, so no invoice is paid from it.
    Column("payment_id", String, ForeignKey("payments.payment_id"), primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
)

allocations = Table(
    "allocations",
    metadata,
    Column("allocation_id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False),
    Column("invoice_id", String, ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("payment_id", String, ForeignKey("payments.payment_id"), nullable=False, index=True),
    # "payment": allocated when the payment was recorded; "credit": from its unapplied credit, later.
    Column("source", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("allocated_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("source IN ('payment', 'credit')", name="source_known"),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_id", String, primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False),
    Column("invoice_id", String, ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("reason", String, nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
    # The dispute this credit settles, if any: a dispute's credits together never exceed what it disputes.
    Column("dispute_id", String, ForeignKey("disputes.dispute_id"), nullable=True, index=True),
    CheckConstraint("amount > 0", name="amount_positive"),
)

write_offs = Table(
    "write_offs",
    metadata,
    Column("write_off_id", String, primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False),
    Column("invoice_id", String, ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("reason", String, nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
)

invoice_due_changes = Table(
    "invoice_due_changes",
    metadata,
    # Every extension of a due date, so the invoice as first issued stays known (a repeated invoice_issued
    # is compared with it) and anyone reading the books sees when and why the ladder moved.
    Column("change_id", String, primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False),
    Column("invoice_id", String, ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("old_due_on", Date, nullable=False),
    Column("old_due_at", UtcDateTime, nullable=False),
    Column("new_due_on", Date, nullable=False),
    Column("new_due_at", UtcDateTime, nullable=False),
    Column("reason", String, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", String, primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False),
    Column("invoice_id", String, ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("reason", String, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
)

ESCALATION_STATUSES = "status IN ('case_sent', 'filed', 'resolved')"

escalations = Table(
    "escalations",
    metadata,
    Column("dispute_id", String, ForeignKey("disputes.dispute_id"), primary_key=True),
    Column("customer_id", String, ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("reference", String, nullable=True),  # 21Vianet's reference, once the desk has filed the case
    Column("case", JSON, nullable=False),  # the EscalationCase as sent to the desk
    Column("opened_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(ESCALATION_STATUSES, name="status_known"),
)

escalation_history = Table(
    "escalation_history",
    metadata,
    Column("change_id", String, primary_key=True),
    Column("dispute_id", String, ForeignKey("escalations.dispute_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("reference", String, nullable=True),
    Column("note", String, nullable=True),
    Column("at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint(ESCALATION_STATUSES, name="status_known"),
)

audit_trail = Table(
    "audit_trail",
    metadata,
    Column("action_id", String, primary_key=True),
    # No foreign key: an operator may act on a run before its first invoice reached the books.
    Column("customer_id", String, nullable=False, index=True),
    Column("action", String, nullable=False),
    Column("reason", String, nullable=False),
    Column("details", JSON, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("operator", String, nullable=True),  # who acted; older rows and actions that named no one: null
)

partner_payments = Table(
    "partner_payments",
    metadata,
    # What the partner paid 21Vianet against 21Vianet's invoices (the PartnerPayable workflow's books). No
    # foreign key: 21Vianet's invoices to the partner are not customer invoices.
    Column("payment_id", String, primary_key=True),
    Column("invoice_id", String, nullable=False, index=True),  # 21Vianet's invoice id
    Column("currency", String(3), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("paid_on", Date, nullable=False),
    Column("reference", String, nullable=True),
    Column("recorded_by", String, nullable=False),  # the payable's workflow id
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
)

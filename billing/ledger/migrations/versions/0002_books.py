"""The books: customers, invoices, payments, their allocations, unapplied credit, credit notes, write-offs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from billing.ledger.schema import Amount, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("locale", sa.String(), nullable=True),
        sa.Column("time_zone", sa.String(), nullable=True),
        sa.Column("tenant_id", sa.String(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
    )
    op.create_table(
        "invoices",
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("paid", Amount(), nullable=False),
        sa.Column("credited", Amount(), nullable=False),
        sa.Column("written_off", Amount(), nullable=False),
        sa.Column("outstanding", Amount(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", name="pk_invoices"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], name="fk_invoices_customer_id_customers"),
        sa.CheckConstraint("amount > 0", name="ck_invoices_amount_positive"),
        sa.CheckConstraint("paid >= 0 AND credited >= 0 AND written_off >= 0", name="ck_invoices_settled_not_negative"),
        sa.CheckConstraint("outstanding >= 0", name="ck_invoices_outstanding_not_negative"),
        sa.CheckConstraint(
            "outstanding = amount - paid - credited - written_off", name="ck_invoices_outstanding_adds_up"
        ),
    )
    op.create_index("ix_invoices_customer_id", "invoices", ["customer_id"])
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=True),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name="pk_payments"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], name="fk_payments_customer_id_customers"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_payments_invoice_id_invoices"),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    )
    op.create_index("ix_payments_customer_id", "payments", ["customer_id"])
    op.create_table(
        "unapplied_credits",
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("remaining", Amount(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name="pk_unapplied_credits"),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.payment_id"], name="fk_unapplied_credits_payment_id_payments"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_unapplied_credits_customer_id_customers"
        ),
        sa.CheckConstraint("amount > 0", name="ck_unapplied_credits_amount_positive"),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name="ck_unapplied_credits_remaining_within_amount"
        ),
    )
    op.create_index("ix_unapplied_credits_customer_id", "unapplied_credits", ["customer_id"])
    op.create_table(
        "allocations",
        sa.Column("allocation_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("allocated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("allocation_id", name="pk_allocations"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_allocations_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_allocations_invoice_id_invoices"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.payment_id"], name="fk_allocations_payment_id_payments"),
        sa.CheckConstraint("amount > 0", name="ck_allocations_amount_positive"),
        sa.CheckConstraint("source IN ('payment', 'credit')", name="ck_allocations_source_known"),
    )
    op.create_index("ix_allocations_invoice_id", "allocations", ["invoice_id"])
    op.create_index("ix_allocations_payment_id", "allocations", ["payment_id"])
    for table, key in (("credit_notes", "credit_id"), ("write_offs", "write_off_id")):
        op.create_table(
            table,
            sa.Column(key, sa.String(), nullable=False),
            sa.Column("customer_id", sa.String(), nullable=False),
            sa.Column("invoice_id", sa.String(), nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
            sa.Column("amount", Amount(), nullable=False),
            sa.Column("reason", sa.String(), nullable=False),
            sa.Column("posted_at", UtcDateTime(), nullable=False),
            sa.PrimaryKeyConstraint(key, name=f"pk_{table}"),
            sa.ForeignKeyConstraint(
                ["customer_id"], ["customers.customer_id"], name=f"fk_{table}_customer_id_customers"
            ),
            sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name=f"fk_{table}_invoice_id_invoices"),
            sa.CheckConstraint("amount > 0", name=f"ck_{table}_amount_positive"),
        )
        op.create_index(f"ix_{table}_invoice_id", table, ["invoice_id"])


def downgrade() -> None:
    for table in (
        "write_offs",
        "credit_notes",
        "allocations",
        "unapplied_credits",
        "payments",
        "invoices",
        "customers",
    ):
        op.drop_table(table)

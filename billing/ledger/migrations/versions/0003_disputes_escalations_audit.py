"""Disputes, their escalations to 21Vianet with every change, extended due dates, and the operators' audit trail;
credit notes may name the dispute they settle.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from billing.ledger.schema import Amount, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ESCALATION_STATUSES = "status IN ('case_sent', 'filed', 'resolved')"


def upgrade() -> None:
    op.create_table(
        "invoice_due_changes",
        sa.Column("change_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("old_due_on", sa.Date(), nullable=False),
        sa.Column("old_due_at", UtcDateTime(), nullable=False),
        sa.Column("new_due_on", sa.Date(), nullable=False),
        sa.Column("new_due_at", UtcDateTime(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name="pk_invoice_due_changes"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_invoice_due_changes_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.invoice_id"], name="fk_invoice_due_changes_invoice_id_invoices"
        ),
    )
    op.create_index("ix_invoice_due_changes_invoice_id", "invoice_due_changes", ["invoice_id"])

    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dispute_id", name="pk_disputes"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], name="fk_disputes_customer_id_customers"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_disputes_invoice_id_invoices"),
        sa.CheckConstraint("amount > 0", name="ck_disputes_amount_positive"),
    )
    op.create_index("ix_disputes_invoice_id", "disputes", ["invoice_id"])

    op.create_table(
        "escalations",
        sa.Column("dispute_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(), nullable=True),
        sa.Column("case", sa.JSON(), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dispute_id", name="pk_escalations"),
        sa.ForeignKeyConstraint(["dispute_id"], ["disputes.dispute_id"], name="fk_escalations_dispute_id_disputes"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_escalations_customer_id_customers"
        ),
        sa.CheckConstraint(ESCALATION_STATUSES, name="ck_escalations_status_known"),
    )
    op.create_index("ix_escalations_customer_id", "escalations", ["customer_id"])

    op.create_table(
        "escalation_history",
        sa.Column("change_id", sa.String(), nullable=False),
        sa.Column("dispute_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name="pk_escalation_history"),
        sa.ForeignKeyConstraint(
            ["dispute_id"], ["escalations.dispute_id"], name="fk_escalation_history_dispute_id_escalations"
        ),
        sa.CheckConstraint(ESCALATION_STATUSES, name="ck_escalation_history_status_known"),
    )
    op.create_index("ix_escalation_history_dispute_id", "escalation_history", ["dispute_id"])

    op.create_table(
        "audit_trail",
        sa.Column("action_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("action_id", name="pk_audit_trail"),
    )
    op.create_index("ix_audit_trail_customer_id", "audit_trail", ["customer_id"])

    # SQLite cannot add a foreign key to a table: batch mode copies credit_notes into a new table with the
    # column (keeping its rows, named CHECK constraints and indexes); PostgreSQL just alters it in place.
    with op.batch_alter_table("credit_notes") as credit_notes:
        credit_notes.add_column(sa.Column("dispute_id", sa.String(), nullable=True))
        credit_notes.create_foreign_key(
            "fk_credit_notes_dispute_id_disputes", "disputes", ["dispute_id"], ["dispute_id"]
        )
        credit_notes.create_index("ix_credit_notes_dispute_id", ["dispute_id"])


def downgrade() -> None:
    with op.batch_alter_table("credit_notes") as credit_notes:
        credit_notes.drop_index("ix_credit_notes_dispute_id")
        credit_notes.drop_constraint("fk_credit_notes_dispute_id_disputes", type_="foreignkey")
        credit_notes.drop_column("dispute_id")
    for table in ("audit_trail", "escalation_history", "escalations", "disputes", "invoice_due_changes"):
        op.drop_table(table)

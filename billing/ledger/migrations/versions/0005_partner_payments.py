"""The partner's payments to 21Vianet against 21Vianet's invoices, kept by the `PartnerPayable` workflow.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from billing.ledger.schema import Amount, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_payments",
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("reference", sa.String(), nullable=True),
        sa.Column("recorded_by", sa.String(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_partner_payments_amount_positive"),
        sa.PrimaryKeyConstraint("payment_id", name="pk_partner_payments"),
    )
    op.create_index("ix_partner_payments_invoice_id", "partner_payments", ["invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_partner_payments_invoice_id", table_name="partner_payments")
    op.drop_table("partner_payments")

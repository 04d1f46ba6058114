"""Money that arrived with nothing to pay and that an operator flagged to be paid back: the refunds due.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from billing.ledger.schema import Amount, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refund_requests",
        sa.Column("payment_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", Amount(), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name="pk_refund_requests"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.payment_id"], name="fk_refund_requests_payment_id_payments"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_refund_requests_customer_id_customers"
        ),
        sa.CheckConstraint("amount > 0", name="ck_refund_requests_amount_positive"),
    )
    op.create_index("ix_refund_requests_customer_id", "refund_requests", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_refund_requests_customer_id", table_name="refund_requests")
    op.drop_table("refund_requests")

"""An index over the invoices with money still owed, by customer: the daily sweep pages through the customers
who owe something in customer-id order, without reading the settled invoices.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OWED = sa.text("outstanding > 0")


def upgrade() -> None:
    op.create_index(
        "ix_invoices_owed_by_customer",
        "invoices",
        ["customer_id", "due_at"],
        postgresql_where=OWED,
        sqlite_where=OWED,
    )


def downgrade() -> None:
    op.drop_index("ix_invoices_owed_by_customer", table_name="invoices")

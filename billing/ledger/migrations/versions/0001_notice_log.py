"""The notice log: what the mailer sent, so that a notice is never sent twice.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from billing.ledger.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notice_log",
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=False),
        sa.Column("invoice_id", sa.String(), nullable=True),
        sa.Column("logged_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "key", name="pk_notice_log"),
    )


def downgrade() -> None:
    op.drop_table("notice_log")

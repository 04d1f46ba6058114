"""Who acted: the audit trail's `operator` column. `book-credit` kept it in the details until now; those rows
move it into the column, so that every row says who acted in the same place.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_audit_trail = sa.table(
    "audit_trail",
    sa.column("action_id", sa.String()),
    sa.column("details", sa.JSON()),
    sa.column("operator", sa.String()),
)


def upgrade() -> None:
    op.add_column("audit_trail", sa.Column("operator", sa.String(), nullable=True))
    connection = op.get_bind()
    # Only book-credit wrote an operator into the details: a few rows, moved one by one on every database.
    rows = connection.execute(
        sa.select(_audit_trail.c.action_id, _audit_trail.c.details).where(
            _audit_trail.c.action_id.like("book-credit-%")
        )
    ).all()
    for action_id, details in rows:
        if isinstance(details, dict) and "operator" in details:
            rest = {key: value for key, value in details.items() if key != "operator"}
            connection.execute(
                _audit_trail.update()
                .where(_audit_trail.c.action_id == action_id)
                .values(details=rest, operator=str(details["operator"]))
            )


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_audit_trail.c.action_id, _audit_trail.c.details, _audit_trail.c.operator).where(
            _audit_trail.c.action_id.like("book-credit-%"), _audit_trail.c.operator.is_not(None)
        )
    ).all()
    for action_id, details, operator in rows:
        connection.execute(
            _audit_trail.update()
            .where(_audit_trail.c.action_id == action_id)
            .values(details={**(details or {}), "operator": operator})
        )
    with op.batch_alter_table("audit_trail") as audit_trail:
        audit_trail.drop_column("operator")

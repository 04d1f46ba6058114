"""The operators' audit trail: every accepted operator action, per customer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, select

from billing.ledger.rejection import LedgerRejection
from billing.ledger.rows import _insert, _lock_account, _now
from billing.ledger.schema import audit_trail
from billing.ledger_messages import AuditEntry


class AuditTrail:
    """`LedgerStore`'s audit trail of operator actions."""

    _engine: Engine

    def record_audit(self, entry: AuditEntry) -> None:
        """Add an accepted operator action to the audit trail; the same action id again changes nothing, with
        other content it is refused."""
        with self._engine.begin() as connection:
            _record_audit(connection, entry)

    def audit_trail(self, customer_id: str) -> list[AuditEntry]:
        """The customer's operator actions, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(audit_trail)
                .where(audit_trail.c.customer_id == customer_id)
                .order_by(audit_trail.c.at, audit_trail.c.recorded_at, audit_trail.c.action_id)
            ).all()
        return [_audit_entry(row) for row in rows]


def _record_audit(connection: Connection, entry: AuditEntry) -> None:
    """`AuditTrail.record_audit` inside the caller's transaction."""
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
            operator=entry.operator,
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


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        action_id=row.action_id,
        customer_id=row.customer_id,
        action=row.action,
        reason=row.reason,
        details=row.details,
        at=row.at,
        operator=row.operator,
    )

"""The mailer's notice log, kept on the books: what was sent to whom, so that no notice is sent twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, select

from billing.ledger.rows import _insert, _now
from billing.ledger.schema import notice_log
from billing.ledger_messages import NoticeLogEntry

# Built once, as the statements of rows.py.
_NOTICE_ROW = select(notice_log).where(
    notice_log.c.customer_id == bindparam("customer_id"), notice_log.c.key == bindparam("key")
)


class NoticeLogBook:
    """`LedgerStore` as the mailer's `NoticeLog`."""

    _engine: Engine

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


def _notice_row(connection: Connection, customer_id: str, key: str) -> Row[Any] | None:
    return connection.execute(_NOTICE_ROW, {"customer_id": customer_id, "key": key}).one_or_none()


def _notice_entry(row: Row[Any]) -> NoticeLogEntry:
    return NoticeLogEntry(
        customer_id=row.customer_id,
        key=row.key,
        kind=row.kind,
        message_id=row.message_id,
        sent_at=row.sent_at,
        invoice_id=row.invoice_id,
    )

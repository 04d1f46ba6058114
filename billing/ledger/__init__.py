"""The ledger (the books): invoices, payments, credit and write-offs per customer, and the notice log."""

from billing.ledger.store import LedgerRejection, LedgerStore

__all__ = ["LedgerRejection", "LedgerStore"]

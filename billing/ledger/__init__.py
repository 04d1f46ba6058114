"""The ledger (the books): invoices, payments, credit and write-offs per customer, disputes and their escalation
to 21Vianet, due-date changes, the operators' audit trail, and the notice log."""

from billing.ledger.rejection import LedgerRejection
from billing.ledger.store import LedgerStore

__all__ = ["LedgerRejection", "LedgerStore"]

"""`LedgerRejection`: the error the ledger raises for a request the books refuse."""

from __future__ import annotations


class LedgerRejection(ValueError):
    """A request the books refuse. `code` names the reason for programs; the message explains it to people.

    Codes: `unknown_invoice`, `wrong_customer`, `currency_mismatch`, `invoice_conflict`, `payment_conflict`,
    `credit_conflict`, `write_off_conflict`, `over_outstanding`, `nothing_outstanding`, `invalid_amount`,
    `audit_conflict`, `reschedule_conflict`, `earlier_due_date`, `unknown_dispute`, `wrong_invoice`,
    `dispute_conflict`, `over_disputed`, `not_escalated`, `already_escalated`, `escalation_closed`,
    `escalation_conflict`, `invalid_escalation`; `amount_too_large` (a total beyond what the engine books) and
    `unstorable` (a value the database cannot hold or a rule of the books it enforces, see `database_errors`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

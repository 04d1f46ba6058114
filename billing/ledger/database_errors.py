"""Which errors of the database are about the request (a `LedgerRejection`: the same request fails the same way,
so retrying cannot help) and which are an outage (left as they are, for Temporal to retry).

Permanent: a value the database cannot hold (PostgreSQL's `DataError`: a number beyond `NUMERIC(18, 2)`, text
too long for its column, a NUL byte; SQLite's `OverflowError` for an integer beyond 64 bits), a rule of the
books broken (`IntegrityError`: a CHECK, NOT NULL or foreign key; idempotency hits never get here, the store
inserts with ON CONFLICT DO NOTHING), a value a column type refuses while binding it (`StatementError`: an
amount beyond `MAX_AMOUNT` or with more than two decimals, a datetime without an offset).

Retried: everything else. `OperationalError` (a lost or refused connection, a deadlock, a serialization
failure, a statement timeout, SQLite's "database is locked"), `InterfaceError` and pool timeouts are outages.
`ProgrammingError` and `InternalError` (a missing table, a missing privilege) are the deployment's fault, not the
request's: once someone fixes it the retry succeeds, where a rejection would have refused a customer's payment.
"""

from __future__ import annotations

import re
import sqlite3

from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from billing.ledger.rejection import LedgerRejection

_WRITE = re.compile(r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)


def refuse_what_cannot_be_stored(context: ExceptionContext) -> LedgerRejection | None:
    """The engine's `handle_error` hook: a permanent error becomes a `LedgerRejection`, anything else stays.

    The rejection names the table and what was wrong, but never repeats the database's own text, which can quote
    the row (PostgreSQL's "Failing row contains ..."): rejections reach the workflow's status and Temporal's
    history. Only our column types' refusals (an amount, a datetime: no personal data) are passed on as they are.
    """
    if context.is_disconnect:
        return None
    wrapped, error = context.sqlalchemy_exception, context.original_exception
    if isinstance(wrapped, DBAPIError):
        if not isinstance(wrapped, DataError | IntegrityError):
            return None
        reason = _database_reason(error)
    elif isinstance(wrapped, StatementError) and isinstance(error, ValueError | TypeError | ArithmeticError):
        reason = str(error)  # a column type of ours (or SQLAlchemy's) refused the value while binding it
    elif wrapped is None and isinstance(error, OverflowError):
        reason = "a number too large for the database"  # sqlite3: "Python int too large to convert to ..."
    else:
        return None
    written = _WRITE.match(context.statement or "")
    where = f"store this in {written.group(1)}" if written else "look this up"
    return LedgerRejection("unstorable", f"the ledger cannot {where}: {reason}")


def _database_reason(error: BaseException) -> str:
    diag = getattr(error, "diag", None)
    if getattr(error, "sqlstate", None) and diag is not None:
        # PostgreSQL: its condition (NumericValueOutOfRange -> "numeric value out of range") and the names it
        # gives, not its message, which may quote a value.
        condition = re.sub(r"(?<!^)(?=[A-Z])", " ", type(error).__name__).lower()
        names = [
            f"{kind} {name}"
            for kind, name in (("column", diag.column_name), ("constraint", diag.constraint_name))
            if name
        ]
        return f"{condition} ({', '.join(names)})" if names else condition
    if isinstance(error, sqlite3.Error):
        return str(error)  # SQLite names the constraint or the columns, never the values
    # psycopg's own checks before sending, e.g. "PostgreSQL text fields cannot contain NUL (0x00) bytes".
    return str(error).splitlines()[0] if str(error) else type(error).__name__

"""`LedgerStore`: the books of every customer and the mailer's notice log, in SQLite or PostgreSQL. It opens, migrates
and closes the database and combines books, notice_log, disputes, audit_trail and sweep_queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text

from billing.ledger.audit_trail import AuditTrail
from billing.ledger.books import Books
from billing.ledger.database_errors import refuse_what_cannot_be_stored
from billing.ledger.disputes import Disputes
from billing.ledger.notice_log import NoticeLogBook
from billing.ledger.sweep_queries import SweepQueries

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it names the PostgreSQL advisory lock that lets one worker at a time migrate.
_MIGRATION_LOCK_KEY = 0x6C6564676572
# The execution option of a connection that only reads (`reading`): on SQLite it begins DEFERRED, not IMMEDIATE.
_READ_ONLY = "billing_read_only"


class LedgerStore(NoticeLogBook, Books, Disputes, AuditTrail, SweepQueries):
    """The books of every customer in one SQL database; also the mailer's `NoticeLog`.

    Every write is one transaction that first locks the customer's row, so two workers writing for the same
    customer queue behind each other, and every write is idempotent by its natural key (invoice id, payment
    id, credit id, write-off id, notice key, action id, change id, dispute id): a repeat changes nothing, a
    conflicting repeat is refused.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str | URL, *, migrate: bool = True) -> LedgerStore:
        """Open the ledger at a SQLAlchemy URL (`sqlite:///var/ledger.db`, `postgresql://user@host/db`).

        A plain `postgresql://` URL uses psycopg 3; a SQLite file's folder is created if missing. With
        `migrate` (the default) the schema is brought up to date first.
        """
        store = cls(_create_engine(url))
        if migrate:
            store.migrate()
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema in place to `revision` (the newest by default); a database already there is
        left alone."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.set_main_option("path_separator", "os")
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Workers starting together would race to create the tables: the first migrates, the others
                # wait here and then find nothing left to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def close(self) -> None:
        self._engine.dispose()


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for a long read of the books (a report): one transaction, so that all its queries see the same
    books, and one that takes no write lock, so that workers keep writing meanwhile.

    On SQLite it begins DEFERRED: a shared lock from the first read, which in WAL mode (see `_sqlite_connected`)
    lets writers commit beside it while it reads its snapshot (https://www.sqlite.org/wal.html, "Concurrency").
    On PostgreSQL it is READ ONLY at REPEATABLE READ: one snapshot for every query of the transaction
    (https://www.postgresql.org/docs/current/transaction-iso.html#XACT-REPEATABLE-READ).
    """
    options: dict[str, Any] = {_READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with engine.connect() as connection:
        connection.execution_options(**options)
        with connection.begin():
            yield connection


# --- engine -----------------------------------------------------------------------------------------------


def _create_engine(url: str | URL) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    # Errors leave the statement's parameters out: an outage is retried with its message in Temporal's history
    # and the worker's log, and the parameters are the customer's name, email and invoice lines.
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    else:
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "begin", _sqlite_begin)
    # A value the database cannot store is the request's fault, not an outage: see `database_errors`.
    event.listen(engine, "handle_error", refuse_what_cannot_be_stored)
    return engine


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 begins transactions lazily and only before writes; SQLAlchemy's "begin" hook takes over, so that
    # a transaction that reads and then writes holds the write lock from its start (see `_sqlite_begin`).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    # WAL: a reader (a report over every customer) and the writers do not block each other; the mode is kept in
    # the file, so this changes something only the first time (https://www.sqlite.org/wal.html). An in-memory
    # database keeps its own journal and ignores it.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE: two workers queue on the lock (up to sqlite3's timeout) instead of both reading a balance and
    # one of them failing with "database is locked" when it tries to write. A connection that only reads
    # (`reading`) takes no write lock.
    read_only = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

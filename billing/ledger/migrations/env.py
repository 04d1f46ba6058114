"""Alembic environment of the ledger: runs the revisions on the connection `LedgerStore.migrate()` gives."""

from alembic import context

from billing.ledger.schema import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment, driven from code: ``relational._upgrade`` passes an open connection.

There is no ``alembic.ini`` and no offline (SQL script) mode: tapline migrates its own database on start.
On PostgreSQL an advisory lock, held to the end of the migration transaction, serialises processes
that start together.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from tapline.store.relational import VERSION_TABLE, metadata

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tapline.store.relational.migrations'))"

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("tapline migrations run from tapline.store.relational, with a connection")
if connection.dialect.name == "postgresql":
    connection.execute(text(_LOCK))
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()

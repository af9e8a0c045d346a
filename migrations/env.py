"""Alembic environment: migrates the database of the app that runs the command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import Connection, Engine

from survey.models import Base

config = context.config


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine  # type: ignore[no-any-return]
    # Run through plain ``alembic``: build the app to learn its database, and
    # stay in it while migrating (a migration may need its settings or keys).
    from survey import create_app, db

    app = create_app()
    app.app_context().push()
    return db.engine()


@contextmanager
def _sqlite_foreign_keys_deferred(connection: Connection) -> Iterator[None]:
    """On SQLite, switch foreign keys off while migrating, and check them after.

    Batch mode copies a table and drops the old one; with foreign keys on,
    that drop would cascade-delete the rows of every table referring to it.
    The pragma only works outside a transaction, hence the raw connection.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    with _engine().connect() as connection, _sqlite_foreign_keys_deferred(connection):
        # A migration writes: on SQLite it queues for the write lock and takes
        # it up front. Begun as a reader, it would fail ("database is locked")
        # whenever another process, say an outbox worker, wrote meanwhile.
        connection.execution_options(sqlite_write=True)
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things: batch mode copies the table.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            _check_foreign_keys(connection)


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run them online.")
run_migrations_online()

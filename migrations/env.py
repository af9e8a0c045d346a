"""Alembic environment: migrates the database of the app that runs the command."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from survey.models import Base

config = context.config


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine  # type: ignore[no-any-return]
    # Run through plain ``alembic``: build the app to learn its database.
    from survey import create_app, db

    with create_app().app_context():
        return db.engine()


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things: batch mode copies the table.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run them online.")
run_migrations_online()

"""Migrations: the models match ``upgrade head``; every revision goes down and up."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from survey import db
from survey.cli import alembic_config
from survey.models import Base


def _differences(app) -> list:
    with app.app_context(), db.engine().connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_models_match_the_migrations(app):
    assert _differences(app) == []


def test_every_revision_goes_down_and_up_again(app):
    with app.app_context():
        config = alembic_config()
        revisions = list(ScriptDirectory.from_config(config).walk_revisions())
        assert revisions, "no migrations found"
        for revision in reversed(revisions):  # oldest first
            command.downgrade(config, revision.down_revision or "base")
            command.upgrade(config, revision.revision)
        command.downgrade(config, "base")
        tables = set(inspect(db.engine()).get_table_names()) - {"alembic_version"}
        assert tables == set()
        command.upgrade(config, "head")
    assert _differences(app) == []

"""Migrations: the models match ``upgrade head``; every revision goes down and up."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from survey import db, resource_dir
from survey.answers.models import Response
from survey.cli import alembic_config
from survey.consent import ConsentEvent
from survey.departures.models import Departure
from survey.models import Base
from survey.outbox import OutboxMessage
from tests.factories import make_consenting, make_departure, submit, survey_path

#: A later migration that rebuilds ``departures``, as SQLite's batch mode does
#: for most changes to a table (copy, drop the old one, rename).
REBUILD_DEPARTURES = """
from alembic import op
import sqlalchemy as sa

revision = "rebuild_test"
down_revision = {head!r}


def _recreate():  # a copy of the table is how SQLite alters; others alter in place
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade():
    with op.batch_alter_table("departures", recreate=_recreate()) as batch_op:
        batch_op.add_column(sa.Column("scratch", sa.String(10)))


def downgrade():
    with op.batch_alter_table("departures", recreate=_recreate()) as batch_op:
        batch_op.drop_column("scratch")
"""


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


def _row_counts(session) -> tuple[int, ...]:
    session.rollback()
    return tuple(
        session.scalar(select(func.count()).select_from(model))
        for model in (Response, ConsentEvent, OutboxMessage)
    )


def test_rebuilding_a_table_keeps_the_rows_that_refer_to_it(
    app, client, session, tmp_path: Path
):
    departure = make_departure(app)
    page1 = survey_path(app, departure)
    submit(client, page1, {"reason": "switched"})
    submit(client, f"{page1}/more", {"winback_consent": "y"})
    before = _row_counts(session)
    assert all(before)

    scripts = tmp_path / "migrations"
    shutil.copytree(resource_dir("migrations"), scripts)
    with app.app_context():
        config = alembic_config()
        config.set_main_option("script_location", str(scripts))
        head = ScriptDirectory.from_config(config).get_current_head()
        (scripts / "versions" / "rebuild_test.py").write_text(
            REBUILD_DEPARTURES.format(head=head)
        )
        command.upgrade(config, "rebuild_test")
        assert _row_counts(session) == before
        command.downgrade(config, head)
    assert _row_counts(session) == before
    assert _differences(app) == []


def test_queued_items_get_their_departures_facts_when_the_columns_arrive(app, session):
    from survey.review_items import ReviewItem

    departure = make_departure(app, segment="enterprise", plan="scale")
    submit(app.test_client(), survey_path(app, departure), {"reason": "switched"})
    with app.app_context():
        config = alembic_config()
        command.downgrade(config, "7a36bb91de16")
        command.upgrade(config, "head")
    session.rollback()
    item = session.scalar(select(ReviewItem))
    assert (item.segment, item.plan) == ("enterprise", "scale")
    assert item.cancelled_at == departure.cancelled_at


def test_queued_messages_get_a_message_id_each_when_the_column_arrives(app, session):
    for _ in range(2):
        make_departure(app)
    with app.app_context():
        config = alembic_config()
        command.downgrade(config, "c3e5f7a9b1d2")
        command.upgrade(config, "head")
    session.rollback()
    msgids = session.scalars(select(OutboxMessage.msgid)).all()
    assert len(set(msgids)) == 2
    assert all(
        re.fullmatch(r"<outbox\.[0-9a-f]{16}\.\d+@localhost>", m) for m in msgids
    )


def _held_within(lock_path: Path, seconds: float) -> bool:
    """Return whether another process holds ``lock_path``'s flock within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lock_path.exists():
            with lock_path.open("rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(lock, fcntl.LOCK_UN)
        time.sleep(0.05)
    return False


def test_an_upgrade_waits_for_another_writer_instead_of_failing(tmp_path):
    # SQLite: a migration begun as a reader fails ("database is locked") when
    # another process commits a write meanwhile, e.g. an outbox worker.
    database = tmp_path / "busy.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as other:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE elsewhere (x INTEGER)")
        other.commit()
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO elsewhere VALUES (1)")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SURVEY_")},
            "SURVEY_ENV": "development",
            "SURVEY_DATABASE_URL": f"sqlite:///{database}",
            "SURVEY_INSTANCE_PATH": str(tmp_path / "instance"),
        }
        upgrade = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "survey", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Wait until the upgrade queues at the write gate (it holds the gate's
        # flock while SQLite makes it wait for ours), then commit.
        waited = _held_within(Path(f"{database}.writelock"), seconds=10)
        other.commit()
        output, _ = upgrade.communicate(timeout=120)
    assert upgrade.returncode == 0, output[-2000:]
    assert waited, "the upgrade never queued for the write lock"
    with contextlib.closing(sqlite3.connect(database)) as check:
        tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    assert {"departures", "alembic_version", "elsewhere"} <= tables


def test_departures_learn_their_invitation_s_sending_and_their_consent(
    app, session, clock
):
    """Written by the worker and the consent ledger as they happen; worked out
    from the outbox and the ledger when the columns arrive."""
    from survey import outbox
    from survey.consent import record_consent

    sent, granted, withdrawn = (make_consenting(app) for _ in range(3))
    with app.app_context():
        assert outbox.deliver_due().sent == 3
        with db.write_session() as writing:
            record_consent(
                writing,
                writing.get(Departure, withdrawn.id),
                granted=False,
                channel="withdrawal_link",
                wording="No.",
            )
            writing.commit()
    waiting = make_departure(app)  # its invitation still queued
    expected = {
        sent.id: (clock.current, True),
        granted.id: (clock.current, True),
        withdrawn.id: (clock.current, False),
        waiting.id: (None, False),
    }

    def facts():
        session.rollback()
        found = {
            d.id: (d.invitation_sent_at, d.consent_granted)
            for d in session.scalars(select(Departure))
        }
        session.rollback()  # no transaction left open: the downgrade alters
        return found

    assert facts() == expected
    with app.app_context():
        config = alembic_config()
        command.downgrade(config, "d4e6f8a0b2c3")
        command.upgrade(config, "head")
    assert facts() == expected


def test_departures_learn_how_long_their_answer_took(app, session, clock):
    """Noted with the first answer; worked out from the answers when the
    column arrives. An answer noted before its invitation's sending has none."""
    from survey import outbox
    from survey.answers.service import record_reason

    waited, early = make_departure(app), make_departure(app)
    with app.app_context():
        with db.write_session() as writing:
            record_reason(writing.connection(), early.public_id, "switched", None)
            writing.commit()
        clock.advance(seconds=1)
        assert outbox.deliver_due().sent == 2
        clock.advance(hours=2, seconds=5)
        with db.write_session() as writing:
            record_reason(writing.connection(), waited.public_id, "switched", None)
            record_reason(
                writing.connection(), waited.public_id, "other", None
            )  # not first
            writing.commit()

    def waits():
        session.rollback()
        query = select(Departure.id, Departure.answer_wait_seconds)
        found = dict(session.execute(query).all())
        session.rollback()
        return found

    assert waits() == {waited.id: 7205, early.id: None}
    with app.app_context():
        config = alembic_config()
        command.downgrade(config, "f6a8b0c2d4e5")
        command.upgrade(config, "head")
    assert waits() == {waited.id: 7205, early.id: None}


def test_the_win_back_list_is_worked_out_when_its_columns_arrive(app, session, clock):
    first = make_consenting(app, contact_email="sam@x.example", external_id="s1")
    second = make_consenting(app, contact_email="sam@x.example", external_id="s2")
    stays = make_consenting(app, contact_email="stays@x.example")
    with app.app_context():
        config = alembic_config()
        command.downgrade(config, "f3a5b7c9d1e2")
    # Before the columns, a withdrawal was not carried to the person's other
    # departures: it hid their grants from the list all the same.
    with app.app_context(), db.write_session() as writer:
        writer.execute(
            ConsentEvent.__table__.insert().values(
                departure_id=second.id,
                action="withdrawn",
                channel="withdrawal_link",
                wording="No",
                wording_version="v1",
                created_at=first.created_at,
            )
        )
        writer.commit()
    with app.app_context():
        command.upgrade(config, "head")
    session.rollback()
    grants = dict(
        session.execute(
            select(ConsentEvent.departure_id, func.max(ConsentEvent.id))
            .where(ConsentEvent.action == "granted")
            .group_by(ConsentEvent.departure_id)
        ).all()
    )
    listing = {
        row.id: (row.winback_grant_id, row.withdraw_token)
        for row in session.execute(
            select(Departure.id, Departure.winback_grant_id, Departure.withdraw_token)
        )
    }
    assert listing[first.id] == listing[second.id] == (None, None)
    grant, token = listing[stays.id]
    assert grant == grants[stays.id]
    # The migration signs at the real time; the app's clock moves on from its
    # start (a link signed after the clock's time would not be valid yet).
    clock.advance(minutes=1)
    client = app.test_client()
    assert client.get(f"/w/{token}").status_code == 200

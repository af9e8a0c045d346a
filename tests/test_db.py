"""The database helpers the busiest page relies on."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from survey import db
from survey.answers import service as answers
from survey.answers.models import Response
from survey.departures.models import Departure
from survey.public import service
from survey.review.models import ReviewItem
from tests.factories import make_consenting, make_departure, survey_path


def test_a_fast_select_gives_what_core_gives(app, client):
    answered = make_consenting(app)
    client.get(survey_path(app, answered))  # a first-opened time too
    fresh = make_departure(app)  # NULLs where the other has values
    statement = service.SURVEY_STATE.statement
    with app.app_context():
        for departure in (answered, fresh):
            params = {"public_id": departure.public_id}
            fast = service.SURVEY_STATE.first(params)
            with db.engine().connect() as connection:
                core = connection.execute(statement, params).one()
            assert fast._fields == tuple(core._fields)
            assert tuple(fast) == tuple(core)
        assert fast.first_opened_at is None and fast.answered_at is None
        assert service.SURVEY_STATE.first({"public_id": "nobody"}) is None


def test_a_fast_select_reads_timezone_aware_times(app, client, clock):
    departure = make_consenting(app)
    client.get(survey_path(app, departure))
    with app.app_context():
        state = service.SURVEY_STATE.first({"public_id": departure.public_id})
        with db.new_session() as session:
            stored = session.scalar(
                select(Departure.first_opened_at).where(Departure.id == departure.id)
            )
    assert state.first_opened_at == stored == clock()
    assert state.first_opened_at.tzinfo is not None
    assert state.consent_state == "granted"


def test_a_prepared_statement_refuses_to_write_null_for_a_forgotten_value(app):
    departure = make_departure(app)
    with app.app_context(), pytest.raises(ValueError, match="now"):
        service._MARK_OPENED.bind({"departure_id": departure.id})


def test_prepared_writes_store_what_the_orm_reads_back(app, clock, session):
    departure = make_departure(app, mrr_cents=12_345)
    with app.app_context(), db.writing() as writer:
        answers.reason_write(departure.public_id, "other", "  Paper  ")(writer)
    session.rollback()  # end the read snapshot (SQLite WAL keeps it)
    response = session.scalar(select(Response))
    assert (response.reason, response.reason_other, response.factors) == (
        "other",
        "Paper",
        [],
    )
    assert response.answered_at == response.updated_at == clock()
    item = session.scalar(select(ReviewItem))
    assert (item.departure_id, item.reason, item.mrr_cents, item.queued_at) == (
        departure.id,
        "other",
        12_345,
        clock(),
    )


def test_writes_of_many_threads_share_a_transaction_and_fail_alone(app, session):
    departures = [make_departure(app) for _ in range(6)]
    errors: dict[int, Exception] = {}
    batches = app.extensions["survey.db.engines"].batches
    queue_one_batch = batches is not None

    def answer(index: int) -> None:
        def work(writer) -> None:
            answers.reason_write(departures[index].public_id, "switched", None)(writer)
            if index == 3:
                raise ValueError("this one fails")

        with app.app_context():
            try:
                db.write_together(work)
            except ValueError as error:
                errors[index] = error

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(6)]
    if queue_one_batch:  # SQLite: hold the lead until all six are queued
        with batches._changed:
            batches._leading = True
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(batches._queue) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(batches._queue) == 6
        with batches._changed:
            batches._leading = False
            batches._changed.notify_all()
    else:
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join()

    assert list(errors) == [3]
    session.rollback()  # end the read snapshot (SQLite WAL keeps it)
    answered = set(session.scalars(select(Response.departure_id)))
    assert answered == {d.id for i, d in enumerate(departures) if i != 3}
    queued = set(session.scalars(select(ReviewItem.departure_id)))
    assert queued == answered


def test_a_fast_read_sees_every_commit_made_since(app, client):
    # On SQLite a thread keeps its connection: no read may leave a snapshot.
    departure = make_departure(app)
    path = survey_path(app, departure)
    params = {"public_id": departure.public_id}
    with app.app_context():
        for reason in ("switched", "too_expensive", "missing_features"):
            assert service.SURVEY_STATE.first(params).reason != reason
            with db.write_session() as other:  # another connection writes
                write = answers.reason_write(departure.public_id, reason, None)
                write(db.Writer.joining(other.connection()))
                other.commit()
            assert service.SURVEY_STATE.first(params).reason == reason
    assert 'value="missing_features" checked' in client.get(path).get_data(as_text=True)


def test_a_failed_commit_leaves_nothing_in_the_way(app):
    engines = app.extensions["survey.db.engines"]
    if engines.gate is None:
        pytest.skip("the write gate exists on SQLite only")
    departure = make_departure(app)
    with app.app_context():
        with pytest.raises(sqlite3.IntegrityError), db.writing() as writer:
            # A foreign key checked at COMMIT: the commit itself fails.
            writer.dbapi_connection.execute("PRAGMA defer_foreign_keys=ON")
            writer.dbapi_connection.execute(
                "INSERT INTO responses (departure_id, reason, factors, answered_at,"
                " updated_at) VALUES (999999, 'other', '[]', '2026-01-01',"
                " '2026-01-01')"
            )
        # Another process writes at once: no transaction is left holding the lock.
        with contextlib.closing(sqlite3.connect(engines.plain.url.database)) as other:
            other.execute("PRAGMA busy_timeout=0")
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        # And this thread writes again.
        db.write_together(answers.reason_write(departure.public_id, "switched", None))
        state = service.SURVEY_STATE.first({"public_id": departure.public_id})
        assert state.reason == "switched"


def test_database_errors_never_show_the_values_of_a_statement(app):
    query = text("SELECT no_such_column FROM departures WHERE company = :company")
    with (
        app.app_context(),
        db.engine().connect() as connection,
        pytest.raises(DBAPIError) as error,
    ):
        connection.execute(query, {"company": "Customer Secret Ltd"})
    assert "Customer Secret" not in str(error.value)

"""The database helpers the busiest page relies on."""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

import pytest
from sqlalchemy import literal_column, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from survey import db
from survey.answers import service as answers
from survey.answers.models import Response
from survey.db import fastpath
from survey.public import service
from survey.review_items import ReviewItem
from tests.factories import (
    login,
    make_consenting,
    make_departure,
    make_user,
    survey_path,
    withdraw_path,
)


def test_a_prepared_select_gives_what_core_gives(app, client):
    answered = make_consenting(app)
    assert client.get(survey_path(app, answered)).status_code == 200
    fresh = make_departure(app)  # NULLs where the other has values
    statement = service.SURVEY_STATE.statement
    with app.app_context(), db.engine().connect() as connection:
        for departure in (answered, fresh):
            params = {"public_id": departure.public_id}
            fast = service.SURVEY_STATE.first(connection, params)
            alone = service.SURVEY_STATE.read(db.engine(), params)
            core = connection.execute(statement, params).one()
            assert fast._fields == alone._fields == tuple(core._fields)
            assert tuple(fast) == tuple(alone) == tuple(core)
            # Both are flags: the opened departure's True, the fresh one's False.
            assert fast.opened is (departure is answered)
        assert fast.answered_at is None
        assert service.SURVEY_STATE.first(connection, {"public_id": "x"}) is None
        assert service.SURVEY_STATE.read(db.engine(), {"public_id": "x"}) is None


def test_page_one_s_read_leaves_no_connection_or_transaction_behind(app):
    departure = make_departure(app)
    with app.app_context():
        engine = db.engine()
        assert service.survey_state(engine, departure.public_id).reason is None
        assert engine.pool.checkedout() == 0
        db.write_together(
            lambda writing: answers.record_reason(
                writing, departure.public_id, "switched", None
            )
        )
        # No snapshot kept from the first read: the answer shows at once.
        assert service.survey_state(engine, departure.public_id).reason == "switched"


def test_page_one_s_read_leaves_no_snapshot_pinning_the_log(app):
    # On SQLite the read runs on a connection its thread keeps: a statement
    # left open there would hold its snapshot, and the write-ahead log could
    # no longer be copied into the database and started over.
    if "survey.db.fastpath" not in app.extensions:
        pytest.skip("the thread's own connections exist on SQLite only")
    departure = make_departure(app)
    with app.app_context():
        engine = db.engine()
        assert service.survey_state(engine, departure.public_id).reason is None
        db.write_together(
            lambda writing: answers.record_reason(
                writing, departure.public_id, "switched", None
            )
        )
        assert service.survey_state(engine, departure.public_id).reason == "switched"
        with contextlib.closing(sqlite3.connect(engine.url.database)) as other:
            busy, _pages, _copied = other.execute(
                "PRAGMA wal_checkpoint(TRUNCATE)"
            ).fetchone()
    assert busy == 0


def test_a_forked_process_reads_on_a_connection_of_its_own(app):
    # SQLite connections must not cross a fork (gunicorn forks its workers).
    if "survey.db.fastpath" not in app.extensions:
        pytest.skip("the thread's own connections exist on SQLite only")
    with app.app_context():
        readers = fastpath.Readers()
        inherited = readers.connection(db.engine())
        assert readers.connection(db.engine()) is inherited  # kept by the thread
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover  (the forked process)
            try:
                own = readers.connection(db.engine())
                fresh = own is not inherited and own.execute("SELECT 1").fetchone()
                os.write(write_end, b"own" if fresh == (1,) else b"inherited")
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        with os.fdopen(read_end) as pipe:
            assert pipe.read() == "own"


def test_connections_kept_outside_the_pool_go_with_it_and_the_engine(tmp_path):
    # The connections page 1 keeps outside the pool: let go when the pool is
    # disposed of, and when the engine goes.
    database = tmp_path / "gone.sqlite3"
    engine = db.make_engine(f"sqlite:///{database}")
    fast = fastpath.install(
        engine, fastpath.WriteGate(str(database), 5, lambda _: None)
    )
    statement = fastpath.Prepared(select(literal_column("1").label("one")))
    assert tuple(statement.read(engine, {})) == (1,)  # on the thread's connection
    fast.batches.run(lambda writing: None)  # on the batches' connection
    assert _held(database)
    engine.dispose()  # they are let go with the pool's
    gc.collect()
    gc.collect()
    assert not _held(database)
    assert tuple(statement.read(engine, {})) == (1,)  # on a new one
    assert _held(database)
    gone = weakref.ref(engine)
    del engine, fast
    gc.collect()  # the engine, and with it its readers: their connections
    gc.collect()  # (each in a cycle with its own statement cache) next
    assert gone() is None
    assert not _held(database)


def _held(database: Path) -> list[str]:
    """This process's open files of ``database`` (its log and index too; not
    the write gate's lock file)."""
    names = {str(database) + suffix for suffix in ("", "-wal", "-shm")}
    return [t for f in Path("/proc/self/fd").iterdir() if (t := _target(f)) in names]


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:  # closed meanwhile
        return ""


def test_a_batch_whose_commit_fails_opens_the_gate_for_the_next(app):
    if "survey.db.fastpath" not in app.extensions:
        pytest.skip("the batches exist on SQLite only")
    departure = make_departure(app)

    def orphan(writing) -> None:
        # A foreign key checked at COMMIT: the commit itself fails.
        writing.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        writing.exec_driver_sql(
            "INSERT INTO responses (departure_id, reason, factors, answered_at,"
            " updated_at) VALUES (999999, 'other', '[]', '2026-01-01', '2026-01-01')"
        )

    with app.app_context():
        with pytest.raises(IntegrityError):
            db.write_together(orphan)
        assert not app.extensions["survey.db.fastpath"].gate.lock.locked()
        db.write_together(
            lambda writing: answers.record_reason(
                writing, departure.public_id, "switched", None
            )
        )
        state = service.survey_state(db.engine(), departure.public_id)
    assert state.reason == "switched"


def test_a_prepared_statement_refuses_to_write_null_for_a_forgotten_value(app):
    departure = make_departure(app)
    forgotten = {"public_id": departure.public_id, "reason": "switched"}
    with (
        app.app_context(),
        db.write_session() as writing,
        pytest.raises(ValueError, match="now"),
    ):
        answers._QUEUE_ANSWER.execute(writing.connection(), forgotten)


def test_page_one_reads_timezone_aware_times(app, client, clock):
    departure = make_consenting(app)
    assert client.get(survey_path(app, departure)).status_code == 200
    with app.app_context(), db.new_session() as session:
        state = service.survey_state(db.engine(), departure.public_id)
        stored = session.scalar(
            select(Response.answered_at).where(Response.departure_id == departure.id)
        )
    assert state.answered_at == stored == clock()
    assert state.answered_at.tzinfo is not None
    assert state.consent_state == "granted"


def test_an_answer_stores_what_the_orm_reads_back(app, clock, session):
    departure = make_departure(app, mrr_cents=12_345)
    with app.app_context(), db.write_session() as writing:
        answers.record_reason(
            writing.connection(), departure.public_id, "other", "  Paper  "
        )
        writing.commit()
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
    fast = app.extensions.get("survey.db.fastpath")
    batches = fast.batches if fast is not None else None

    def answer(index: int) -> None:
        def work(writing) -> None:
            public_id = departures[index].public_id
            answers.record_reason(writing, public_id, "switched", None)
            if index == 3:
                raise ValueError("this one fails")

        with app.app_context():
            try:
                db.write_together(work)
            except ValueError as error:
                errors[index] = error

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(6)]
    if batches is not None:  # SQLite: hold the lead until all six are queued
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


def test_page_one_shows_every_answer_committed_since(app, client):
    departure = make_departure(app)
    path = survey_path(app, departure)
    for reason in ("switched", "too_expensive", "missing_features"):
        assert f'value="{reason}" checked' not in client.get(path).get_data(
            as_text=True
        )
        with app.app_context(), db.write_session() as other:  # another writer
            answers.record_reason(other.connection(), departure.public_id, reason, None)
            other.commit()
        page = client.get(path).get_data(as_text=True)
        assert f'value="{reason}" checked' in page


def test_a_failed_commit_leaves_nothing_in_the_way(app):
    if "survey.db.fastpath" not in app.extensions:
        pytest.skip("the write gate exists on SQLite only")
    departure = make_departure(app)
    with app.app_context():
        with pytest.raises(IntegrityError), db.write_session() as writing:
            # A foreign key checked at COMMIT: the commit itself fails.
            writing.execute(text("PRAGMA defer_foreign_keys=ON"))
            writing.execute(
                text(
                    "INSERT INTO responses (departure_id, reason, factors,"
                    " answered_at, updated_at) VALUES (999999, 'other', '[]',"
                    " '2026-01-01', '2026-01-01')"
                )
            )
            writing.commit()
        # Another process writes at once: no transaction is left holding the lock.
        with contextlib.closing(sqlite3.connect(db.engine().url.database)) as other:
            other.execute("PRAGMA busy_timeout=0")
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        # And this thread writes again.
        db.write_together(
            lambda writing: answers.record_reason(
                writing, departure.public_id, "switched", None
            )
        )
        state = service.survey_state(db.engine(), departure.public_id)
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


def test_a_request_filling_the_caches_holds_one_pooled_connection_at_a_time(
    app, client, pooled_connections
):
    """Seventy withdrawals at once exhausted the pool: each request held its
    session's connection while it took a second to read the brand (its cache
    had run out), and waited for it as long as every other one did."""
    from survey.branding import service as branding
    from survey.wording import service as wordings

    departure = make_consenting(app)
    login(client, make_user(app, "csm").email)
    one_click = {"List-Unsubscribe": "One-Click"}
    requests = {
        "withdrawal": lambda: client.post(
            withdraw_path(app, departure), data=one_click
        ),
        "page two": lambda: client.get(survey_path(app, departure) + "/more"),
        "review item": lambda: client.get(f"/review/{departure.public_id}"),
    }
    for name, send in requests.items():
        branding.forget(app)
        wordings.forget(app)
        assert send().status_code == 200, name
        assert pooled_connections.twice == [], name

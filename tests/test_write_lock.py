"""Writers on SQLite queue on a lock: nobody holds it while waiting on a client,
and nobody waits for it forever."""

from __future__ import annotations

import contextlib
import functools
import socket
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from survey import db
from tests.factories import csrf_token, make_departure, survey_path


@pytest.fixture
def busy_app(make_app) -> Flask:
    app = make_app(SQLITE_BUSY_TIMEOUT_SECONDS=0.5)
    started: defaultdict[str | None, threading.Event] = defaultdict(threading.Event)
    app.extensions["test.started"] = started

    @app.url_value_preprocessor
    def _note_start(endpoint: str | None, _values: Any) -> None:
        # Before any hook or view reads the body.
        started[endpoint].set()

    return app


def wait_until_started(app: Flask, endpoint: str) -> None:
    """Wait until a request for ``endpoint`` is in the app (its body unread)."""
    assert app.extensions["test.started"][endpoint].wait(10), f"no {endpoint}"


@pytest.fixture
def server(busy_app: Flask, served_by) -> str:
    """Serve ``busy_app`` on loopback with threads, like gunicorn's gthread."""
    host, port = served_by(busy_app)
    return f"{host}:{port}"


def _post_page_1(client, path: str) -> int:
    token = csrf_token(client.get(path).get_data(as_text=True))
    return client.post(
        path, data={"csrf_token": token, "reason": "switched"}
    ).status_code


def _within(seconds: float, action: Callable[[], Any]) -> Any:
    """Run ``action`` in a thread; fail (instead of hanging) if it takes longer."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(action()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0]


@contextlib.contextmanager
def _another_writer_of_ours(app: Flask) -> Iterator[None]:
    """Hold the write lock as a stuck writer of this service would."""
    with app.app_context(), db.write_session():
        yield


@contextlib.contextmanager
def _another_program(app: Flask) -> Iterator[None]:
    """Hold SQLite's write lock as another program (the sqlite3 shell, a
    backup) would: without queuing at our gate, so SQLite's own busy
    timeout runs out instead of the gate's."""
    with app.app_context():
        database = db.engine().url.database
    with contextlib.closing(sqlite3.connect(database)) as other:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.rollback()


@pytest.mark.parametrize("writer", [_another_writer_of_ours, _another_program])
def test_a_writer_that_waits_too_long_is_told_to_retry(busy_app, writer):
    if db_name(busy_app) != "sqlite":
        pytest.skip("the write queue exists on SQLite only")
    path = survey_path(busy_app, make_departure(busy_app))
    client = busy_app.test_client()
    token = csrf_token(client.get(path).get_data(as_text=True))
    with writer(busy_app):  # holds the write lock meanwhile
        answer = _within(
            5,
            lambda: client.post(path, data={"csrf_token": token, "reason": "switched"}),
        )
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert _post_page_1(client, path) == 303  # free again


def test_a_slow_client_does_not_hold_up_other_writers(busy_app, server):
    departure = make_departure(busy_app)
    path = survey_path(busy_app, departure)
    client = busy_app.test_client()
    assert _post_page_1(client, path) == 303
    host, port = server.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        # Page 2's form, announced at 1,000 bytes, of which 10 arrive.
        slow.sendall(
            f"POST {path}/more HTTP/1.1\r\nHost: {server}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 1000\r\n\r\ndetails=ab".encode()
        )
        wait_until_started(busy_app, "public.details")  # it reads that body now
        other = _within(5, lambda: survey_path(busy_app, make_departure(busy_app)))
        assert _within(5, lambda: _post_page_1(busy_app.test_client(), other)) == 303


def test_an_api_client_sending_slowly_does_not_hold_up_other_writers(busy_app, server):
    from tests.factories import auth, make_token

    headers = auth(make_token(busy_app, "departures:write"))
    host, port = server.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            f"POST /api/v1/departures HTTP/1.1\r\nHost: {server}\r\n"
            f"Authorization: {headers['Authorization']}\r\n"
            "Content-Type: application/json\r\n"
            'Content-Length: 1000\r\n\r\n{"external_id": '.encode()
        )
        wait_until_started(busy_app, "api.create_departure")
        path = _within(5, lambda: survey_path(busy_app, make_departure(busy_app)))
        assert _within(5, lambda: _post_page_1(busy_app.test_client(), path)) == 303


def db_name(app: Flask) -> str:
    return urlsplit(app.config["DATABASE_URL"]).scheme.split("+")[0]


def test_the_wal_is_checkpointed_as_the_writers_go(app):
    if db_name(app) != "sqlite":
        pytest.skip("a write-ahead log to checkpoint exists on SQLite only")
    from survey.answers import service as answers

    gate = app.extensions["survey.db.fastpath"].gate
    gate.CHECKPOINT_EVERY = 5  # this app's gate only

    def checkpoint_done() -> None:  # they run on a thread of their own
        assert gate.checkpointing.acquire(timeout=10)
        gate.checkpointing.release()

    departures = [make_departure(app) for _ in range(10)]
    with app.app_context():
        for round_ in range(10):
            for departure in departures:  # 100 commits, each a frame or more
                reason = "switched" if round_ % 2 else "too_expensive"
                db.write_together(
                    functools.partial(
                        answers.record_reason,
                        public_id=departure.public_id,
                        reason=reason,
                        reason_other=None,
                    )
                )
                checkpoint_done()
    database = gate.database
    with contextlib.closing(sqlite3.connect(database)) as connection:
        _busy, frames, _copied = connection.execute(
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
    # Left to SQLite (1,000 pages) none of the hundred commits would be
    # checkpointed yet; checkpointed every five, the log starts over.
    assert 0 <= frames < 50

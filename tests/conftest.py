"""Fixtures: one migrated database per backend, an app per test, a real SMTP server.

Every test runs on SQLite, and on PostgreSQL too when SURVEY_TEST_DATABASE_URL
is set. Tests commit for real (workers, threads and browsers need to see each
other's writes), so each test starts from empty tables instead of a rolled-back
transaction.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask, has_request_context, request
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from survey import create_app, db, logs
from survey.cli import alembic_config
from survey.models import Base
from tests.factories import CUSTOMER_WORDS, PASSWORD

PG_URL = os.environ.get("SURVEY_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
SECRET = "test-secret-key"


#: A signed survey or withdrawal link's token (a JSON string, a timestamp, a
#: signature): it opens a customer's answers, so no log line may hold one.
LINK_TOKEN = re.compile(r"I[\w-]{20,}\.[\w-]{5,8}\.[\w-]{20,}")
#: An email address: a person's, which no log line may hold either (logs are
#: kept apart from the database, where an erasure cannot reach them).
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


@pytest.fixture(scope="session", autouse=True)
def every_log_line_of_the_run(tmp_path_factory: Any) -> Iterator[None]:
    """Write our log lines of the whole run as JSON (SURVEY_LOG_FORMAT=json);
    then check that each line is one JSON object and none holds a link's
    token, a password, an email address or a customer's words."""
    path = tmp_path_factory.mktemp("logs") / "survey.jsonl"
    logger = logging.getLogger("survey")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # as the app sets it
    with path.open("w", encoding="utf-8") as stream:
        handler = logs.handler("json")
        handler.setStream(stream)
        handler.set_name("test-run-log")
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)
    leaks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record), line
        if (
            LINK_TOKEN.search(line)
            or PASSWORD in line
            or ADDRESS.search(line)
            or any(words in line for words in CUSTOMER_WORDS)
        ):
            leaks.append(line)
    assert not leaks, (
        "log lines holding a secret, an address or an answer:\n" + "\n".join(leaks[:20])
    )


class Clock:
    """An injectable clock: starts now, moves only when told."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """Return the URL of a database migrated to head, once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.sqlite3'}"
    else:
        assert PG_URL is not None
        url = PG_URL
        _reset_postgres(url)
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": SECRET,
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
        }
    )
    from alembic import command

    with app.app_context():
        command.upgrade(alembic_config(), "head")
        db.engine().dispose()
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock()


class PooledConnections:
    """Watches an app's pool: no request may hold two of its connections at
    once. One that waits for a second while holding one can wait for ever:
    with more requests than connections, each may hold one (seen with
    seventy withdrawals at once). A connection detached from the pool (a
    thread's own reader, see ``fastpath.Readers``) takes no place in it."""

    def __init__(self) -> None:
        self.twice: list[str] = []

    def watch(self, app: Flask) -> None:
        engine = app.extensions["survey.db"].kw["bind"]
        event.listen(engine, "checkout", self._checked_out)
        event.listen(engine, "checkin", self._checked_in)
        event.listen(engine, "detach", self._checked_in)

    def _checked_out(self, dbapi_connection: Any, *_: Any) -> None:
        if not has_request_context():
            return
        held = request.environ.setdefault("tests.pooled", set())
        held.add(id(dbapi_connection))
        if len(held) > 1:
            self.twice.append(f"{request.method} {request.url_rule}")

    def _checked_in(self, dbapi_connection: Any, *_: Any) -> None:
        if has_request_context():
            request.environ.get("tests.pooled", set()).discard(id(dbapi_connection))


@pytest.fixture
def pooled_connections() -> PooledConnections:
    return PooledConnections()


@pytest.fixture
def make_app(
    database_url: str,
    tmp_path: Path,
    clock: Clock,
    pooled_connections: PooledConnections,
) -> Iterator[Callable[..., Flask]]:
    """Return a factory of apps on the test database; tables are emptied after.

    Every request of every test holds one pooled connection at a time.
    """
    apps: list[Flask] = []
    pooled = pooled_connections

    def factory(**overrides: Any) -> Flask:
        config = {
            "TESTING": True,
            "SECRET_KEY": SECRET,
            "DATABASE_URL": database_url,
            "BASE_URL": "http://survey.test",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "CLOCK": clock,
            "MAIL_TIMEOUT_SECONDS": 5,
            # Cheap password hashing: the suite signs in hundreds of times.
            "PASSWORD_TIME_COST": 1,
            "PASSWORD_MEMORY_KIB": 8 * 1024,
            "PASSWORD_PARALLELISM": 1,
        }
        config.update(overrides)
        app = create_app(config)
        pooled.watch(app)
        apps.append(app)
        return app

    yield factory
    assert not pooled.twice, f"requests holding two connections: {pooled.twice}"
    with factory().app_context():
        engine = db.engine()
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
    for app in apps:
        with app.app_context():
            db.engine().dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """A session for looking at (and arranging) the database in a test.

    It holds no app context: requests made meanwhile get their own, as in
    production (an outer one would share ``g`` across requests).
    """
    with app.app_context():
        s = db.new_session()
    with s:
        yield s


@dataclass
class SmtpSink:
    """A real SMTP server on loopback that keeps what it receives."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            message = message_from_bytes(envelope.content)
            message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
            self.messages.append(message)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served_by() -> Iterator[Callable[[Flask], tuple[str, int]]]:
    """Serve apps on loopback, a thread per request; return their addresses."""
    servers = []

    def serve(app: Flask) -> tuple[str, int]:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return "127.0.0.1", server.server_port

    yield serve
    for server, thread in servers:
        server.shutdown()
        thread.join()


def wait_until_healthy(base: str, server: subprocess.Popen[Any]) -> None:
    """Wait (at most 30 s) until the server at ``base`` answers /healthz with 200."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                assert response.status == 200
                return
        except OSError:
            assert server.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def mail_app(make_app: Callable[..., Flask], smtp: SmtpSink) -> Flask:
    """An app that sends mail to the test SMTP server."""
    return make_app(MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port)

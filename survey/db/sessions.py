"""One engine and session factory per app; one session per request or command.

Every feature reads and writes through a session from here: ``session()``
in a request, ``write_session()`` in commands and workers. A request with
an unsafe method (POST...) opens its transaction for writing. On SQLite
that matters: a writing transaction takes the database's write lock when it
begins (``BEGIN IMMEDIATE``), since one that read first could not wait for
it later. The SQLite fast path (``survey.db.fastpath``) adds to this, never
replaces it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, g, has_app_context, has_request_context, request
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from survey.db import fastpath
from survey.errors import DatabaseBusy

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSIONS = "survey.db"
_FAST_PATH = "survey.db.fastpath"


def make_engine(
    url: str | URL,
    *,
    busy_timeout: float = 30,
    begin_writing: Callable[[Any], None] | None = None,
) -> Engine:
    """Create an engine; on SQLite: WAL, a busy timeout and real transactions.

    ``begin_writing`` begins a writing transaction on an SQLite DB-API
    connection (the fast path's write gate); by default ``BEGIN IMMEDIATE``.

    Errors leave out the values bound to a statement (``hide_parameters``):
    they are customers' data, and errors end up in logs. (The database's own
    message may still quote a value, e.g. the key of a unique violation.)
    """
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            hide_parameters=True,
        )
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling starts transactions late and
        # never for SELECT; we emit BEGIN ourselves (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    begin_writing = begin_writing or begin_immediate

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        dbapi_connection = connection.connection.dbapi_connection
        if connection.get_execution_options().get("sqlite_write"):
            begin_writing(dbapi_connection)
        else:
            dbapi_connection.execute("BEGIN")

    return engine


def begin_immediate(dbapi_connection: Any) -> None:
    """Begin a writing transaction on SQLite: the write lock is taken now.

    Raise DatabaseBusy if another writer held it for the whole busy timeout.
    """
    try:
        dbapi_connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        # Raised in SQLAlchemy's "begin" event, the driver's error would come
        # out unwrapped, as no caller expects it.
        if error.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            raise DatabaseBusy from error
        raise


def init_app(app: Flask) -> None:
    """Create the app's engine and session factory; close sessions per request."""
    url = make_url(app.config["DATABASE_URL"])
    busy_timeout = app.config["SQLITE_BUSY_TIMEOUT_SECONDS"]
    gate = None
    if url.get_backend_name() == "sqlite":
        gate = fastpath.WriteGate(url.database, busy_timeout, begin_immediate)
    engine = make_engine(
        url,
        busy_timeout=busy_timeout,
        begin_writing=gate.begin_writing if gate else None,
    )
    if gate is not None:
        app.extensions[_FAST_PATH] = fastpath.install(engine, gate)
    app.extensions[_SESSIONS] = sessionmaker(engine, expire_on_commit=False)
    # A request's session ends with the request, also when the request runs
    # inside an app context pushed before it (tests, commands), which would
    # otherwise carry the session, and its snapshot, into the next request.
    app.teardown_request(_close_session)
    app.teardown_appcontext(_close_session)


def engine() -> Engine:
    """Return the current app's engine."""
    bound: Engine = current_app.extensions[_SESSIONS].kw["bind"]
    return bound


def session(*, begin: bool = True) -> Session:
    """Return this request's (or app context's) session, opened on first use.

    In a request with an unsafe method, the transaction is opened for
    writing, unless ``begin`` is false on that first use (the caller begins
    its transactions itself).
    """
    if "db_session" not in g:
        g.db_session = new_session()
        if begin and has_request_context() and request.method not in _SAFE_METHODS:
            # Take the whole form in before holding the write lock: a slow
            # client must not keep every other writer waiting.
            request.form  # noqa: B018
            begin_write(g.db_session)
    result: Session = g.db_session
    return result


@contextmanager
def reading_session() -> Iterator[Session]:
    """Yield a session of its own (its own objects) for a short read beside
    the caller's unit of work, such as a cache filling up: on the request
    session's connection while that one's transaction holds one, else on a
    pooled connection of its own.

    A request never holds one pooled connection while waiting for another:
    with more requests than connections, each could hold one and wait for
    a second until the pool's timeout (seen with seventy withdrawals at once).
    """
    held: Session | None = g.get("db_session") if has_app_context() else None
    transaction = held.get_transaction() if held is not None else None
    if held is not None and transaction is not None and transaction.is_active:
        # In a savepoint: a read that fails leaves the request's work as it was.
        with Session(
            bind=held.connection(), join_transaction_mode="create_savepoint"
        ) as reader:
            yield reader
        return
    with new_session() as reader:
        yield reader


def begin_write(db_session: Session) -> None:
    """Start ``db_session``'s next transaction as a writing one.

    Call it with no transaction open (fresh, or just committed).
    """
    db_session.connection(execution_options={"sqlite_write": True})


def new_session() -> Session:
    """Return a new session of the current app, outside any request's."""
    db_session: Session = current_app.extensions[_SESSIONS]()
    return db_session


@contextmanager
def write_session() -> Iterator[Session]:
    """Yield a new session in a writing transaction, for commands and workers.

    The caller commits; anything uncommitted is rolled back on exit.
    """
    db_session = new_session()
    try:
        begin_write(db_session)
        yield db_session
    finally:
        db_session.close()


@contextmanager
def write_connection() -> Iterator[Connection]:
    """Yield a connection in a writing transaction, without an ORM session.

    The caller commits; anything uncommitted is rolled back on exit.
    """
    with engine().connect() as connection:
        connection.execution_options(sqlite_write=True)
        connection.begin()
        yield connection


def write_together(work: fastpath.Work) -> None:
    """Run ``work`` on a connection in a writing transaction and commit it;
    return once committed.

    For the busiest writes (page 1's answers and first opens), whose verbs
    take a connection: no ORM session is opened around them. On SQLite the
    transaction may be shared with other threads' work (see
    ``fastpath.Batches``): ``work`` then runs on another thread of this
    process, under the same app, and must only write through the connection
    it is given. Raises what ``work`` raised; its writes are then rolled back.
    """
    fast: fastpath.FastPath | None = current_app.extensions.get(_FAST_PATH)
    if fast is not None:
        fast.batches.run(work)
        return
    with write_connection() as connection:
        work(connection)
        connection.commit()


def _close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()

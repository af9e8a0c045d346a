"""Database: declarative base, column types, one engine and session per app."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple, TypeVar

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    MetaData,
    Select,
    String,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeDecorator

from survey.errors import DatabaseBusy

log = logging.getLogger(__name__)

#: Constraint names Alembic can refer to on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What a writer that waited for the write lock too long is told.
_BUSY_MESSAGE = "The service is busy; please try again in a moment."

T = TypeVar("T")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Str80 = Annotated[str, mapped_column(String(80))]
Str200 = Annotated[str, mapped_column(String(200))]
Str320 = Annotated[str, mapped_column(String(320))]


#: The largest value of an INTEGER column (our keys) on every database we run on.
INTEGER_MAX = 2**31 - 1
#: The largest value of a BIGINT column (amounts in minor units).
BIGINT_MAX = 2**63 - 1


def parse_int(text: str | None, maximum: int = INTEGER_MAX) -> int | None:
    """Return the whole number from 0 to ``maximum`` written in ``text``, or None.

    For ids, cursors and counts from a URL or a form. ASCII digits only
    (``int`` would also take "٣", " 7" or "1_0"), and no more than the column
    it is compared with holds: PostgreSQL refuses a larger value (a 500), it
    does not just find nothing.
    """
    if text and len(text) <= 20 and text.isascii() and text.isdecimal():
        number = int(text)
        if number <= maximum:
            return number
    return None


def per_dialect(build: Callable[[Any], T]) -> dict[str, T]:
    """Build a statement once for each database we run on, given its ``insert``.

    For upserts: ``on_conflict_do_update`` lives on each dialect's own insert.
    """
    return {"postgresql": build(postgresql.insert), "sqlite": build(sqlite.insert)}


def new_public_id() -> str:
    """Return a random, unguessable id (96 bits) for use in links."""
    return secrets.token_urlsafe(12)


class Base(DeclarativeBase):
    """Declarative base with the naming convention and shared column types."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    #: Every ``Mapped[datetime]`` is stored in UTC and read back timezone-aware.
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Engines(NamedTuple):
    """The app's ways into one database.

    All through one connection pool, but for ``own``: connections that
    threads took out of it for good.
    """

    #: For sessions: on SQLite every transaction begins for real, and writing
    #: ones (``sqlite_write``) queue for the write lock first.
    engine: Engine
    #: The same pool without transaction events, which SQLAlchemy would
    #: otherwise dispatch around every statement: for the busiest paths.
    plain: Engine
    #: SQLite's queue of writers (None on PostgreSQL).
    gate: _WriteGate | None
    #: SQLite's batches of the busiest writes (None on PostgreSQL).
    batches: _Batches | None
    #: SQLite: each thread's own connection for ``Prepared`` statements
    #: (None on PostgreSQL, where they come from the pool).
    own: _ThreadConnections | None

    @contextmanager
    def connection(self) -> Iterator[PoolProxiedConnection]:
        """Yield a connection for ``Prepared`` statements.

        On SQLite this thread's own (see ``_ThreadConnections``), else one
        borrowed from the pool and given back, which ends its transaction.
        """
        if self.own is None:
            with closing(self.plain.raw_connection()) as borrowed:
                yield borrowed
            return
        try:
            yield self.own.get()
        finally:
            self.own.check()


def make_engines(url: str, *, busy_timeout: float = 30) -> Engines:
    """Create the engines; on SQLite: WAL, a busy timeout and real transactions.

    Errors leave out the values bound to a statement (``hide_parameters``):
    they are customers' data, and errors end up in logs. (The database's own
    message may still quote a value, e.g. the key of a unique violation.)
    """
    if not url.startswith("sqlite"):
        plain = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            hide_parameters=True,
        )
        return Engines(plain, plain, None, None, None)

    plain = create_engine(
        url, connect_args={"timeout": busy_timeout}, hide_parameters=True
    )
    gate = _WriteGate(plain.url.database, busy_timeout)

    @event.listens_for(plain, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling starts transactions late and
        # never for SELECT; we emit BEGIN ourselves (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # The write gate has the WAL checkpointed instead (see _WriteGate).
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    # Listeners of an engine made by execution_options() stay its own.
    engine = plain.execution_options()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # BEGIN goes straight to the driver: it is on every request's path.
        dbapi_connection = connection.connection.dbapi_connection
        if connection.get_execution_options().get("sqlite_write"):
            _begin_writing(gate, dbapi_connection)
        else:
            dbapi_connection.execute("BEGIN")

    # The gate opens only once COMMIT or ROLLBACK is done (the engine's events
    # fire before them), also for the pool's rollback of a returned connection.
    dialect = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def _commit_then_open(dbapi_connection: Any) -> None:
        try:
            do_commit(dbapi_connection)
        except BaseException:
            # A failed COMMIT may leave the transaction, and SQLite's write
            # lock, in place: end it before the next writer goes in.
            with suppress(Exception):
                do_rollback(dbapi_connection)
            raise
        finally:
            gate.release(dbapi_connection)

    def _rollback_then_open(dbapi_connection: Any) -> None:
        try:
            do_rollback(dbapi_connection)
        finally:
            gate.release(dbapi_connection)

    dialect.do_commit = _commit_then_open  # type: ignore[method-assign]
    dialect.do_rollback = _rollback_then_open  # type: ignore[method-assign]
    return Engines(engine, plain, gate, _Batches(), _ThreadConnections(plain))


class _ThreadConnections(threading.local):
    """Each thread's own SQLite connection, taken out of the pool for good.

    For the busiest statements (``Prepared``): checking a connection out of
    SQLAlchemy's pool and back in costs about as much as page 1's whole
    query. A thread keeps its connection for as long as it lives, as Django
    keeps one per thread: SQLite closes it when the thread ends and drops
    it. ``Engine.dispose()`` does not reach these. Their statements leave
    no transaction open: a read is a lone statement, a write is committed
    or rolled back (see ``writing``).
    """

    pooled: PoolProxiedConnection | None = None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self) -> PoolProxiedConnection:
        """Return this thread's connection, made by the engine's pool at first use."""
        if self.pooled is None:
            pooled = self.engine.raw_connection()  # set up as all pool connections
            pooled.detach()  # then this thread's alone
            self.pooled = pooled
        return self.pooled

    def check(self) -> None:
        """Close this thread's connection if a transaction was left open on it.

        Only a failed rollback leaves one; the next use gets a new connection.
        """
        pooled = self.pooled
        if pooled is not None and pooled.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            self.pooled = None
            with suppress(Exception):
                pooled.close()  # detached: the connection itself is closed


def _begin_writing(gate: _WriteGate, dbapi_connection: Any) -> None:
    # A transaction that will write takes the write lock up front: a
    # deferred one that read first could not wait for it (SQLITE_BUSY).
    gate.acquire(dbapi_connection)
    try:
        dbapi_connection.execute("BEGIN IMMEDIATE")
    except BaseException as error:
        gate.release(dbapi_connection)
        # Another program that does not queue at the gate held the lock for
        # the whole busy timeout. Raised here, in SQLAlchemy's "begin" event,
        # the error would come out unwrapped, as no caller expects it.
        if (
            isinstance(error, sqlite3.OperationalError)
            and error.sqlite_errorcode == sqlite3.SQLITE_BUSY
        ):
            raise DatabaseBusy(_BUSY_MESSAGE) from error
        raise


class _WriteGate:
    """Queues the writers of one SQLite file, so none waits in SQLite's busy loop.

    SQLite makes a blocked writer sleep and retry (1 ms, 2 ms, 5 ms ... up to
    100 ms), which under load wastes most of the time the lock is free. Here
    writers wait their turn instead: the threads of a process on a lock, the
    processes (gunicorn workers, the outbox worker) on an ``flock`` of a file
    beside the database. The kernel drops the ``flock`` if a process dies.

    The gate also has the WAL checkpointed (copied into the database), every
    ``CHECKPOINT_EVERY`` writing transactions of this process or ``CHECKPOINT_SECONDS``
    after its last checkpoint, on a thread of its own. SQLite's own
    checkpoint runs inside a COMMIT, fsync included, so it would hold every
    writer of every process at the gate while it copies the whole log; run
    by a writer after the gate, it would still hold up the threads whose
    batch that writer leads. Here the gate is held only for the last few
    pages (see ``_checkpoint``).
    """

    CHECKPOINT_EVERY = 100
    CHECKPOINT_SECONDS = 10.0

    def __init__(self, database: str | None, timeout: float) -> None:
        self.database = database if database and database != ":memory:" else None
        self.path = f"{self.database}.writelock" if self.database else None
        self.timeout = timeout
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.pid = 0
        #: The DB-API connection whose transaction holds the gate, if any.
        self.holder: Any = None
        self.writes = 0  # transactions through the gate since the last checkpoint
        self.checkpointed_at = time.monotonic()
        self.checkpointing = threading.Lock()  # held while one runs

    def acquire(self, holder: Any) -> None:
        """Wait for the gate (at most the busy timeout), then hold it for ``holder``.

        Raise DatabaseBusy when the wait runs out.
        """
        if not self.lock.acquire(timeout=self.timeout):
            raise DatabaseBusy(_BUSY_MESSAGE)
        self.holder = holder
        if self.path is None:
            return
        if self.pid != os.getpid():  # opened again after a fork
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self.pid = os.getpid()
        try:
            # No timeout here: the holder is another process's short transaction
            # (none waits on a client), and a hung process is killed by
            # gunicorn's worker timeout, which frees its lock.
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # type: ignore[arg-type]
        except BaseException:
            self.holder = None
            self.lock.release()
            raise

    def release(self, holder: Any) -> None:
        """Open the gate if ``holder``'s transaction holds it; checkpoint if due."""
        # SQLAlchemy passes either the DB-API connection or the pool's proxy.
        if self.holder is not getattr(holder, "dbapi_connection", holder):
            return
        self.writes += 1
        due = self.database is not None and (
            self.writes >= self.CHECKPOINT_EVERY
            or time.monotonic() - self.checkpointed_at >= self.CHECKPOINT_SECONDS
        )
        self._open()
        # One at a time; while one runs, the writes count on towards the next.
        if due and self.checkpointing.acquire(blocking=False):
            self.writes, self.checkpointed_at = 0, time.monotonic()
            threading.Thread(
                target=self._checkpoint, name="wal-checkpoint", daemon=True
            ).start()

    def _open(self) -> None:
        self.holder = None
        if self.path is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        self.lock.release()

    def _checkpoint(self) -> None:
        # PASSIVE copies what no reader still needs and waits for no one. The
        # bulk is copied (and synced) while writers write on; what they wrote
        # meanwhile, a few pages, with the gate held, so the log is then all
        # copied and the next writer starts it over instead of growing it.
        # A failure loses nothing: the WAL keeps it all until the next try.
        assert self.database is not None
        try:
            # mode=rw: never create a database that has gone meanwhile.
            uri = f"{Path(self.database).resolve().as_uri()}?mode=rw"
            with closing(sqlite3.connect(uri, uri=True, timeout=self.timeout)) as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                self.acquire(db)
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                finally:
                    self._open()
        except (sqlite3.Error, DatabaseBusy):
            log.warning("WAL checkpoint failed", exc_info=True)
        finally:
            self.checkpointing.release()


def init_app(app: Flask) -> None:
    """Create the app's engine and session factory; close sessions per request."""
    engines = make_engines(
        app.config["DATABASE_URL"],
        busy_timeout=app.config["SQLITE_BUSY_TIMEOUT_SECONDS"],
    )
    app.extensions["survey.db"] = sessionmaker(engines.engine, expire_on_commit=False)
    app.extensions["survey.db.engines"] = engines
    # A request's session ends with the request, also when the request runs
    # inside an app context pushed before it (tests, commands), which would
    # otherwise carry the session, and its snapshot, into the next request.
    app.teardown_request(_close_session)
    app.teardown_appcontext(_close_session)


def _engines() -> Engines:
    engines: Engines = current_app.extensions["survey.db.engines"]
    return engines


def engine() -> Engine:
    """Return the current app's engine."""
    return _engines().engine


def session() -> Session:
    """Return this request's (or app context's) session, opened on first use.

    In a request with an unsafe method, the transaction is opened for writing.
    """
    if "db_session" not in g:
        g.db_session = current_app.extensions["survey.db"]()
        if has_request_context() and request.method not in _SAFE_METHODS:
            # Take the whole form in before holding the write lock: a slow
            # client must not keep every other writer waiting.
            request.form  # noqa: B018
            begin_write(g.db_session)
    result: Session = g.db_session
    return result


def begin_write(db_session: Session) -> None:
    """Start ``db_session``'s next transaction as a writing one.

    Call it with no transaction open (fresh, or just committed).
    """
    db_session.connection(execution_options={"sqlite_write": True})


class _Plan(NamedTuple):
    """A statement as one dialect runs it, with its values' processors."""

    sql: str
    #: Every bound name, with its built-in value as the database takes it
    #: (processed once, here); unused where the caller must give one.
    defaults: dict[str, Any]
    required: frozenset[str]  # bound names without a built-in value
    order: Sequence[str] | None  # bound names in order, for positional styles
    processors: Mapping[str, Callable[[Any], Any]]
    row: Callable[[Sequence[Any]], Any]  # DB-API row -> named, processed row


class Prepared:
    """A statement of the busiest page, run straight on a DB-API cursor.

    SQLAlchemy compiles it once per dialect; values go in and come out
    through the column types' own processors (public API), so the database
    sees, and a row holds, what a Core execution would send and give. What
    Core builds around each execution (context, result object) is skipped:
    on page 1 that was a fifth of the request. Use Core everywhere else.
    """

    def __init__(self, statement: ClauseElement | Mapping[str, ClauseElement]) -> None:
        #: One statement, or one per dialect name (see ``per_dialect``).
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def _statement(self, dialect: Dialect) -> ClauseElement:
        if isinstance(self.statement, Mapping):
            return self.statement[dialect.name]
        return self.statement

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self._statement(dialect).compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            # Every bound name, with its built-in value (None if it has none).
            state = compiled.construct_expanded_state(compiled.params)
            required = frozenset(n for n, b in compiled.binds.items() if b.required)
            processors = {
                name: process
                for name, bind in compiled.binds.items()
                if (process := bind.type.dialect_impl(dialect).bind_processor(dialect))
            }
            defaults = {
                name: value
                if name in required or name not in processors
                else processors[name](value)
                for name, value in state.parameters.items()
            }
            plan = self._plans[dialect.name] = _Plan(
                state.statement,
                defaults,
                required,
                state.positiontup,
                processors,
                self._row_maker(dialect),
            )
        return plan

    def _row_maker(self, dialect: Dialect) -> Callable[[Sequence[Any]], Any]:
        statement = self._statement(dialect)
        if not isinstance(statement, Select):
            return tuple
        columns = statement.selected_columns
        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in columns
        ]
        readers = [(index, read) for index, read in enumerate(processors) if read]
        shape = namedtuple("Row", list(columns.keys()))  # type: ignore[misc]

        def row(values: Sequence[Any]) -> Any:
            values = list(values)
            for index, read in readers:
                values[index] = read(values[index])
            return shape._make(values)

        return row

    def _arguments(self, plan: _Plan, params: Mapping[str, Any]) -> Any:
        if not plan.required <= params.keys():
            # As Core would: a forgotten value must not be written as NULL.
            missing = ", ".join(sorted(plan.required - params.keys()))
            raise ValueError(f"no value given for {missing}")
        values = dict(plan.defaults)
        for name, value in params.items():
            process = plan.processors.get(name)
            values[name] = value if process is None else process(value)
        return values if plan.order is None else [values[n] for n in plan.order]

    def first(self, params: Mapping[str, Any]) -> Any:
        """Return the first row (attributes named as the columns), or None.

        On a connection of its own, outside any transaction: a lone statement
        sees one consistent snapshot by itself.
        """
        engines = _engines()
        plan = self._plan(engines.plain.dialect)
        arguments = self._arguments(plan, params)
        with engines.connection() as connection:
            found = _execute(connection.dbapi_connection, plan.sql, arguments)
        return None if found is None else plan.row(found)

    def bind(self, params: Mapping[str, Any]) -> Bound:
        """Return the statement with ``params``, processed for the app's database.

        For writes: the values are processed before the write lock is taken,
        and ``Bound.execute`` only runs the statement.
        """
        plan = self._plan(_engines().plain.dialect)
        return Bound(plan.sql, self._arguments(plan, params))


def _execute(dbapi_connection: Any, sql: str, arguments: Any) -> Any:
    """Run ``sql`` on a DB-API cursor; return its first row, if it gives rows."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql, arguments)
        return None if cursor.description is None else cursor.fetchone()
    finally:
        cursor.close()


class Bound(NamedTuple):
    """A ``Prepared`` statement with its values, ready for a ``Writer``."""

    sql: str
    arguments: Any  # as the driver takes them: a dict, or a list in order

    def execute(self, writer: Writer) -> None:
        """Run the statement in ``writer``'s transaction (see ``writing``)."""
        _execute(writer.dbapi_connection, self.sql, self.arguments)


class Writer(NamedTuple):
    """A DB-API connection in a writing transaction.

    What ``Bound`` statements run on in ``writing`` and ``write_together``.
    """

    dbapi_connection: Any

    @classmethod
    def joining(cls, connection: Connection) -> Writer:
        """Return a writer in ``connection``'s transaction (a session's, say).

        The transaction must be a writing one (``begin_write``,
        ``write_session``): on SQLite, a deferred one that has read may be
        refused the write lock.
        """
        return cls(connection.connection.dbapi_connection)


@contextmanager
def writing() -> Iterator[Writer]:
    """Yield a writer: a connection in a writing transaction, committed at the end.

    For the busiest writes (``Bound`` statements): a DB-API connection
    (on SQLite, this thread's own; see ``_ThreadConnections``) without
    SQLAlchemy's connection and transaction objects, so the SQLite write
    lock (taken at the start, let go at the commit) is held as briefly as
    possible. On PostgreSQL there is no such lock; the transaction begins
    with the first statement. Rolled back if the block raises. Errors come
    as the driver raises them (``sqlite3.Error``, ``psycopg.Error``), not
    wrapped by SQLAlchemy.
    """
    engines = _engines()
    dialect = engines.plain.dialect
    with engines.connection() as connection:
        dbapi_connection = connection.dbapi_connection
        if engines.gate is not None:
            _begin_writing(engines.gate, dbapi_connection)
        try:
            yield Writer(dbapi_connection)
        except BaseException:
            dialect.do_rollback(connection)
            raise
        dialect.do_commit(connection)


class _Job:
    """One thread's write, waiting to run in a batch."""

    def __init__(self, work: Callable[[Writer], None]) -> None:
        self.work = work
        self.written = False  # committed
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether a leader has dealt with it: written, or failed."""
        return self.written or self.error is not None


class _Batches:
    """Runs the writes of a worker's threads together, one transaction a batch.

    SQLite takes one writer at a time across every process, and each call
    into it lets other threads take the interpreter while the lock is held:
    BEGIN and COMMIT cost as much lock time as the writes themselves. A
    thread queues its write; if no one is writing, it leads: once through
    the write gate it takes every write queued by then (also those queued
    while it waited there), runs them in one transaction, commits once and
    wakes the others, whose writes are then done (they return at once) or
    queued for the next leader. If one write fails, the batch is rolled back
    and each of its writes runs again in a transaction of its own, so only
    the failing one fails.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: list[_Job] = []
        self._leading = False  # a thread is writing a batch

    def run(self, work: Callable[[Writer], None]) -> None:
        job = _Job(work)
        with self._changed:
            self._queue.append(job)
            while self._leading and not job.done:
                self._changed.wait()
            lead = not job.done
            if lead:
                self._leading = True
        if lead:  # its own job is still queued: no one else leads
            try:
                self._lead()
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if job.error is not None:
            raise job.error

    def _take(self) -> list[_Job]:
        with self._changed:
            batch, self._queue = self._queue, []
        return batch

    def _lead(self) -> None:
        batch: list[_Job] = []
        try:
            with writing() as writer:  # through the gate first
                batch = self._take()
                for job in batch:
                    job.work(writer)
            for job in batch:
                job.written = True
        except BaseException as error:
            batch = batch or self._take()  # refused at the gate: none taken yet
            if isinstance(error, DatabaseBusy):
                for job in batch:  # an error of its own: each thread raises it
                    job.error = DatabaseBusy(*error.args)
            elif isinstance(error, Exception):
                self._write_each_alone(batch)  # so only the failing one fails
            else:
                raise
        finally:  # also when the leader itself is stopped midway
            for job in batch:
                if not job.done:
                    job.error = DatabaseBusy("The write was interrupted; try again.")

    @staticmethod
    def _write_each_alone(batch: list[_Job]) -> None:
        for job in batch:
            try:
                with writing() as writer:
                    job.work(writer)
                job.written = True
            except Exception as error:
                job.error = error


def write_together(work: Callable[[Writer], None]) -> None:
    """Run ``work`` in a writing transaction, possibly shared with other threads'.

    For the busiest writes (answers to page 1, first opens); returns once it is
    committed, raises what ``work`` raised. ``work`` must only write, through
    the ``Writer`` it is given, and may run on another thread of this process
    (under the same app). On PostgreSQL, writers do not queue: it is ``writing``.
    """
    batches = _engines().batches
    if batches is None:
        with writing() as writer:
            work(writer)
        return
    batches.run(work)


def new_session() -> Session:
    """Return a new session of the current app, outside any request's."""
    db_session: Session = current_app.extensions["survey.db"]()
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


def _close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()

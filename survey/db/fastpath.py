"""The fast path: what page 1 and the API's JSON export need beyond plain
SQLAlchemy, each piece measured.

Page 1 is the busiest page, and on SQLite it writes (every answer, every
first open) where one writer at a time gets in, across every process. Each
mechanism here stays because ``make bench`` showed what it buys. Figures:
page 1's requests per second as a ratio to the bare app's (median of three
interleaved rounds), as shipped and with the one mechanism switched off,
runs a few minutes apart (2026-12-03, two cores, SQLite unless said; the
shipped code measured 0.40x-0.51x GET and 0.24x-0.28x POST in four runs):

============  =================================  ==================================
mechanism     what it does                       switched off
============  =================================  ==================================
``Prepared``  page 1's three statements          page-1 POST 0.19x, GET 0.45x
              compiled once and run on the       (PostgreSQL: POST 0.13x -> 0.10x,
              DB-API cursor of the SQLAlchemy    GET 0.20x -> 0.15x)
              connection given
``Batches``   a worker's queued page-1 writes    page-1 POST 0.21x; 19 % fewer
              share one transaction and commit   requests a second in an A/B
                                                 (2026-12-04: 2.5 writes a
                                                 commit under the bench's load)
``WriteGate`` SQLite writers queue in turn (a    page-1 POST 0.24x: throughput
              lock per process, an ``flock``     within the noise (about 9 % fewer
              across processes), not in          requests a second), but p95
              SQLite's sleeping busy loop; the   133-161 ms instead of 68-109 ms
              WAL is checkpointed off their      and p99 230-335 ms instead of
              path                               110-150 ms: kept for the tail
``read``      page 1's one read runs alone,      survey GET about 10 % fewer
              outside any transaction: no BEGIN  requests a second (interleaved
              and ROLLBACK, each a call that     A/B under the same load,
              lets other threads take the GIL    2026-12-04); POST unchanged
``Readers``   on SQLite, that read runs on a     survey GET 14 % slower in
              connection its thread keeps, not   process (pool checkout and
              one checked out of the pool and    return: 20 us of 145 us;
              back each time                     interleaved A/B, 2026-12-04)
kept batch    the batches' leaders write on one  page-1 POST 14 % slower in
connection    connection the process keeps,      process (70 us of 475 us; same
              not one from the pool per batch    A/B); under load 5 % fewer
============  =================================  ==================================

The batches run their writes on a Core connection, without an ORM session
around them: a session's open, ``connection()``, commit and close cost
69 us a write, the connection's 25 us; page-1 POST 6 % fewer requests a
second with a session (A/B, 2026-12-04). A wake-up per waiting thread
instead of one for all of them was tried and measured 6 % slower; not kept.

``Prepared.stream`` serves the win-back list's JSON pages (10,000 contacts
each): on PostgreSQL the rows come as psycopg streams them, so the database
works on while the page goes out. Reading a million contacts page by page
through gunicorn took 7.05-7.18 s with it and 7.80-7.90 s with the DB-API's
``fetchmany`` after a whole result (three walks each, ``bench_export.py``'s
JSON walk, 2026-12-05); the target is 8 s.

``Prepared`` also serves PostgreSQL; the gate and the batches are installed
on SQLite engines only. None of them changes what is written or read: the
verbs (``answers.record_reason``...) take a SQLAlchemy connection, and
their transaction is SQLAlchemy's, whoever commits it.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Select, event
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from survey.errors import DatabaseBusy

log = logging.getLogger(__name__)

#: Work written on a connection in a writing transaction (see
#: ``survey.db.write_together``).
Work = Callable[[Connection], None]


class FastPath(NamedTuple):
    """An SQLite engine's write gate and batches."""

    gate: WriteGate
    batches: Batches


class Readers:
    """One DB-API connection per thread for ``Prepared.read`` on an SQLite engine.

    Taken from the engine's pool once (configured as every connection is)
    and detached from it: the thread keeps it until the thread ends, the
    engine is disposed of or goes. A read on it runs in autocommit (the
    engine's connections leave transactions to SQLAlchemy), so it sees
    every commit made before it and holds no snapshot after it. A process
    forked with connections open does not use them: SQLite connections must
    not cross a fork.
    """

    def __init__(self) -> None:
        self.local = threading.local()

    def connection(self, engine: Engine) -> Any:
        """Return this thread's connection to ``engine``, opened on first use."""
        kept = getattr(self.local, "kept", None)
        if kept is None or kept[0] != os.getpid():
            pooled = engine.raw_connection()
            pooled.detach()  # the thread's now, not the pool's
            kept = self.local.kept = (os.getpid(), pooled.dbapi_connection)
        return kept[1]


#: The readers of each SQLite engine the fast path is installed on (weakly:
#: an engine that goes takes its readers, and their connections, with it).
_READERS: weakref.WeakKeyDictionary[Engine, Readers] = weakref.WeakKeyDictionary()


def install(engine: Engine, gate: WriteGate) -> FastPath:
    """Have ``gate`` opened after each COMMIT and ROLLBACK of ``engine`` (whose
    writing transactions begin with ``gate.begin_writing``) and the WAL
    checkpointed by it; give ``Prepared.read`` a connection per thread on it;
    return the gate with the batches for ``write_together``."""
    _READERS[engine] = Readers()
    batches = Batches(engine)

    @event.listens_for(engine, "engine_disposed")
    def _let_go(_engine: Engine) -> None:
        # Connections kept outside the pool are let go with it (each closes
        # when no thread holds it any longer).
        _READERS[engine] = Readers()
        batches.let_go()

    @event.listens_for(engine, "connect")
    def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
        # The gate has the WAL checkpointed instead (see WriteGate).
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0").close()

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
    return FastPath(gate, batches)


class WriteGate:
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

    def __init__(
        self,
        database: str | None,
        timeout: float,
        begin_immediate: Callable[[Any], None],
    ) -> None:
        self.begin_immediate = begin_immediate
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

    def begin_writing(self, dbapi_connection: Any) -> None:
        """Wait for the gate, then begin a writing transaction on the connection.

        The gate opens when the transaction ends, or, if it could not begin
        (another program held SQLite's lock), when the pool rolls the
        connection back on its return (see ``install``).
        """
        self.acquire(dbapi_connection)
        self.begin_immediate(dbapi_connection)

    def acquire(self, holder: Any) -> None:
        """Wait for the gate (at most the busy timeout), then hold it for ``holder``.

        Raise DatabaseBusy when the wait runs out.
        """
        if not self.lock.acquire(timeout=self.timeout):
            raise DatabaseBusy
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


class _Job:
    """One thread's write, waiting to run in a batch."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.written = False  # committed
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether a leader has dealt with it: written, or failed."""
        return self.written or self.error is not None


class Batches:
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

    The leaders write on one connection the process keeps (one leads at a
    time), detached from the pool, instead of one checked out of it and back
    for each batch. A batch that fails closes it (rolled back, the gate
    opened) and the next one opens another; so does a forked process.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._changed = threading.Condition()
        self._queue: list[_Job] = []
        self._leading = False  # a thread is writing a batch
        self._kept: tuple[int, Connection] | None = None  # (pid, connection)

    def run(self, work: Work) -> None:
        """Run ``work`` in a batch; return once it is committed, or raise its error."""
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

    def let_go(self) -> None:
        """Open a new connection for the next batch (the engine was disposed of)."""
        self._kept = None

    def _take(self) -> list[_Job]:
        with self._changed:
            batch, self._queue = self._queue, []
        return batch

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """Yield the kept connection in a writing transaction (through the
        gate first); the caller commits. On any error it is closed."""
        kept = self._kept
        if kept is None or kept[0] != os.getpid():
            connection = self.engine.connect()
            connection.detach()  # the batches' now, not the pool's
            connection.execution_options(sqlite_write=True)
            kept = self._kept = (os.getpid(), connection)
        connection = kept[1]
        try:
            connection.begin()
            yield connection
        except BaseException:
            self._kept = None
            connection.close()  # rolls back whatever began: the gate opens
            raise

    def _lead(self) -> None:
        batch: list[_Job] = []
        try:
            with self._writing() as connection:
                batch = self._take()
                for job in batch:
                    job.work(connection)
                connection.commit()
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

    def _write_each_alone(self, batch: list[_Job]) -> None:
        for job in batch:
            try:
                with self._writing() as connection:
                    job.work(connection)
                    connection.commit()
                job.written = True
            except Exception as error:
                job.error = error


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
    """A statement run straight on the DB-API cursor of a connection (page 1's,
    made once; a JSON page's, made per page).

    SQLAlchemy compiles it once per dialect; values go in and come out
    through the column types' own processors (public API), so the database
    sees, and a row holds, what a Core execution would send and give. What
    Core builds around each execution (context, parameters, result object)
    is skipped. It runs in the transaction of the SQLAlchemy connection it
    is given (a session's: ``session.connection()``), without autoflush.
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

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run the statement with ``params`` in ``connection``'s transaction."""
        plan = self._plan(connection.dialect)
        _execute(_dbapi(connection), plan.sql, self._arguments(plan, params))

    def first(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """Return the first row (attributes named as the columns), or None."""
        plan = self._plan(connection.dialect)
        found = _execute(_dbapi(connection), plan.sql, self._arguments(plan, params))
        return None if found is None else plan.row(found)

    def read(self, engine: Engine, params: Mapping[str, Any]) -> Any:
        """Return the first row of this read-only statement, or None, run alone
        outside any transaction of ours: on the thread's own connection where
        the fast path is installed (``Readers``), else on a pooled one.

        One statement reads one consistent snapshot without a transaction
        around it: SQLite runs it in autocommit, PostgreSQL in the transaction
        the driver opens and the pool rolls back when the connection returns.
        """
        plan = self._plan(engine.dialect)
        arguments = self._arguments(plan, params)
        readers = _READERS.get(engine)
        if readers is not None:
            found = _execute(readers.connection(engine), plan.sql, arguments)
        else:
            with closing(engine.raw_connection()) as connection:
                found = _execute(connection, plan.sql, arguments)
        return None if found is None else plan.row(found)

    def stream(
        self, connection: Connection, params: Mapping[str, Any], size: int
    ) -> Generator[list[Any]]:
        """Yield the rows in lists of up to ``size`` as the database sends
        them, in ``connection``'s transaction.

        On PostgreSQL, psycopg's ``Cursor.stream`` (in chunks of ``size``):
        the server goes on making rows while the caller writes out the ones
        it has. Core's server-side cursor (``yield_per``) would leave the
        server idle between one ``FETCH`` and the next. Elsewhere, the
        DB-API's ``fetchmany``. Closed early, the rest of the query is
        cancelled (psycopg) or left unread.
        """
        plan = self._plan(connection.dialect)
        arguments = self._arguments(plan, params)
        with closing(_dbapi(connection).cursor()) as cursor:
            if not hasattr(cursor, "stream"):
                cursor.execute(plan.sql, arguments)
                while rows := cursor.fetchmany(size):
                    yield [plan.row(row) for row in rows]
                return
            chunk = size if _chunked_streams() else 1  # chunks need libpq 17
            with closing(cursor.stream(plan.sql, arguments, size=chunk)) as sent:
                batch: list[Any] = []
                for row in sent:
                    batch.append(plan.row(row))
                    if len(batch) == size:
                        yield batch
                        batch = []
                if batch:
                    yield batch


@functools.cache
def _chunked_streams() -> bool:
    import psycopg

    return psycopg.capabilities.has_stream_chunked()


def _dbapi(connection: Connection) -> Any:
    # Through SQLAlchemy's own begin, so its transaction (and events) stand.
    if not connection.in_transaction():
        connection.begin()
    return connection.connection.dbapi_connection


def _execute(dbapi_connection: Any, sql: str, arguments: Any) -> Any:
    """Run ``sql`` on a DB-API cursor; return its first row, if it gives rows."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql, arguments)
        return None if cursor.description is None else cursor.fetchone()
    finally:
        cursor.close()

"""SQLite's fast path: what the busiest writes need beyond the plain engine.

SQLite lets one writer in at a time, across every process, and page 1
writes on every answer and every first open. Two mechanisms make those
writes fast enough. Each stays because ``make bench`` showed what it buys
(ratios to the bare app, median of three interleaved rounds, with and
without the mechanism, everything else as shipped; 2026-12-03, two cores):

=============  ============================  ===============  ===============
mechanism      what it does                  survey GET       page-1 POST
=============  ============================  ===============  ===============
``WriteGate``  writers queue in turn (a       0.30x -> 0.38x   0.14x -> 0.23x
               lock per process, an           (+27 %)          (+64 %)
               ``flock`` across processes)
               instead of in SQLite's
               sleeping busy loop; the WAL
               is checkpointed off the
               writers' path
``Batches``    a worker's queued page-1       0.38x -> 0.38x   0.15x -> 0.23x
               writes share one               (first opens     (+53 %)
               transaction and one commit     only)
=============  ============================  ===============  ===============

Nothing here changes what is written or read: without this module the
service works the same, only slower under load. PostgreSQL needs none of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, suppress
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from survey.errors import DatabaseBusy

log = logging.getLogger(__name__)

#: Work written in a writing session (see ``survey.db.write_together``).
Work = Callable[[Session], None]
#: Opens a writing session, closed (and so rolled back if uncommitted) on exit.
OpenSession = Callable[[], AbstractContextManager[Session]]


class FastPath(NamedTuple):
    """An SQLite engine's write gate and batches."""

    gate: WriteGate
    batches: Batches


def install(engine: Engine, gate: WriteGate) -> FastPath:
    """Have ``gate`` opened after each COMMIT and ROLLBACK of ``engine`` (whose
    writing transactions begin with ``gate.begin_writing``) and the WAL
    checkpointed by it; return it with the batches for ``write_together``."""

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
    return FastPath(gate, Batches())


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
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: list[_Job] = []
        self._leading = False  # a thread is writing a batch

    def run(self, work: Work, open_session: OpenSession) -> None:
        """Run ``work`` in a batch; return once it is committed, or raise its error.

        ``open_session`` opens a writing session (through the gate).
        """
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
                self._lead(open_session)
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

    def _lead(self, open_session: OpenSession) -> None:
        batch: list[_Job] = []
        try:
            with open_session() as session:  # through the gate first
                batch = self._take()
                for job in batch:
                    job.work(session)
                session.commit()
            for job in batch:
                job.written = True
        except BaseException as error:
            batch = batch or self._take()  # refused at the gate: none taken yet
            if isinstance(error, DatabaseBusy):
                for job in batch:  # an error of its own: each thread raises it
                    job.error = DatabaseBusy(*error.args)
            elif isinstance(error, Exception):
                # So only the failing one fails.
                self._write_each_alone(batch, open_session)
            else:
                raise
        finally:  # also when the leader itself is stopped midway
            for job in batch:
                if not job.done:
                    job.error = DatabaseBusy("The write was interrupted; try again.")

    @staticmethod
    def _write_each_alone(batch: list[_Job], open_session: OpenSession) -> None:
        for job in batch:
            try:
                with open_session() as session:
                    job.work(session)
                    session.commit()
                job.written = True
            except Exception as error:
                job.error = error

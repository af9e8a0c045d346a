"""Outbox throughput: 20,000 queued messages through real workers.

What it does, for each setup (SQLite with one worker; with ``--postgres URL``
also PostgreSQL with one worker and with two):

1. creates a fresh database with the project's migrations;
2. queues the messages through the app's own functions: departures recorded
   (each queues its invitation and a ``departure.recorded`` webhook to one
   endpoint), and reminders for half of them: invitations, webhook deliveries
   and reminders in the proportion 2:2:1;
3. starts the workers (``flask --app survey outbox send``, as in production)
   against a local aiosmtpd sink and a local HTTP receiver, both in this
   process, and times them until every message has arrived;
4. checks that each message arrived exactly once (by ``Message-ID`` and
   ``webhook-id``) and that the database marks all of them sent.

Prints messages per minute per worker. Target (from the issue): at least
20,000 per minute per worker. Exit 0 when every setup meets it and every
message arrived once, 1 otherwise, 2 when it could not run.

Usage::

    .venv/bin/python benchmarks/bench_outbox.py [--messages 20000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench_outbox]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from bench_export import reset_postgres  # noqa: E402
from bench_survey import free_port, migrate, survey_env, tool  # noqa: E402

TARGET_PER_MINUTE_PER_WORKER = 20_000
TIMEOUT_S = 900


class Arrivals:
    """What the sink and the receiver got, by message id."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.count = 0  # kept apart: summing 20,000 counts every 50 ms took CPU
        self.lock = threading.Lock()

    def add(self, message_id: str) -> None:
        with self.lock:
            self.ids[message_id] += 1
            self.count += 1

    def total(self) -> int:
        with self.lock:
            return self.count


# The sink stands in for a mail server on another machine; parsing each
# message with the email package cost this process a fifth of its CPU, taken
# from the workers on a two-core machine.
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class SmtpSink:
    """aiosmtpd handler: counts each message by its Message-ID."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        headers = envelope.content.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(headers)
        self.arrivals.add(found.group(1).decode() if found else "(none)")
        return "250 OK"


def start_receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    """An HTTP server that counts each webhook delivery by its webhook-id."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers allow

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            arrivals.add(self.headers["webhook-id"])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def queue_messages(count: int, receiver_url: str) -> set[str]:
    """Queue ``count`` messages through the app (this process's SURVEY_*
    variables name the database); return their ids."""
    from sqlalchemy import select

    from survey import create_app, db, outbox, webhooks
    from survey.departures.schemas import DepartureIn
    from survey.departures.service import queue_reminder, record_departure

    app = create_app()
    logging.getLogger("survey").setLevel(logging.WARNING)  # 8,000 "recorded" lines
    departures = count * 2 // 5
    with app.app_context():
        with db.write_session() as session:
            webhooks.add_endpoint(session, receiver_url, ["departure.recorded"])
            session.commit()
        recorded = []
        with db.write_session() as session:
            for number in range(1, departures + 1):
                data = DepartureIn(
                    external_id=f"outbox_{number:06d}",
                    contact_email=f"customer{number}@example.com",
                    contact_name=f"Customer {number}",
                    company=f"Outbox Company {number}",
                    plan="growth",
                    mrr_cents=10_000 + number,
                    segment="smb",
                )
                departure, _ = record_departure(session, data, source="api")
                recorded.append(departure)
                if number % 500 == 0:
                    session.commit()
            session.commit()
        with db.write_session() as session:
            left = count - 2 * departures
            for departure in recorded[:left]:
                queue_reminder(session, session.merge(departure, load=False))
            session.commit()
        with db.new_session() as session:
            ids = set(session.scalars(select(outbox.OutboxMessage.msgid)))
        db.engine().dispose()
    return ids


@dataclass(frozen=True)
class Outcome:
    """One setup, measured."""

    name: str
    workers: int
    messages: int
    seconds: float
    duplicates: int
    missing: int
    unsent_in_db: int

    @property
    def per_minute_per_worker(self) -> float:
        return self.messages / self.seconds * 60 / self.workers

    def problems(self) -> list[str]:
        found = []
        if self.per_minute_per_worker < TARGET_PER_MINUTE_PER_WORKER:
            found.append(
                f"{self.per_minute_per_worker:,.0f}/min/worker < "
                f"{TARGET_PER_MINUTE_PER_WORKER:,}"
            )
        if self.duplicates:
            found.append(f"{self.duplicates} messages arrived more than once")
        if self.missing:
            found.append(f"{self.missing} messages never arrived")
        if self.unsent_in_db:
            found.append(f"{self.unsent_in_db} messages not marked sent")
        return found


def run(name: str, database_url: str | None, workers: int, count: int) -> Outcome:
    """Queue ``count`` messages on a fresh database, then time ``workers``."""
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as folder:
        instance = Path(folder)
        if database_url and database_url.startswith("postgresql"):
            reset_postgres(database_url)
        env = survey_env(instance, free_port(), database_url)
        arrivals = Arrivals()
        sink = Controller(SmtpSink(arrivals), hostname="127.0.0.1", port=free_port())
        sink.start()
        receiver = start_receiver(arrivals)
        env.update(
            SURVEY_MAIL_SERVER="127.0.0.1",
            SURVEY_MAIL_PORT=str(sink.port),
            SURVEY_WEBHOOKS_ALLOW_PRIVATE="true",
            SURVEY_OUTBOX_POLL_SECONDS="0.2",
        )
        try:
            migrate(env)
            saved = dict(os.environ)
            os.environ.update(env)
            try:
                print(f"  {name}: queuing {count:,} messages ...", flush=True)
                ids = queue_messages(
                    count, f"http://127.0.0.1:{receiver.server_port}/hook"
                )
            finally:
                os.environ.clear()
                os.environ.update(saved)
            assert len(ids) == count, f"queued {len(ids)} messages, not {count}"
            started = time.monotonic()
            processes = [
                subprocess.Popen(
                    [tool("flask"), "--app", "survey", "outbox", "send"],
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(workers)
            ]
            try:
                while arrivals.total() < count:
                    if time.monotonic() - started > TIMEOUT_S:
                        break
                    if any(p.poll() is not None for p in processes):
                        break
                    time.sleep(0.05)
                seconds = time.monotonic() - started
                time.sleep(1)  # anything sent twice arrives now
            finally:
                for process in processes:
                    process.send_signal(signal.SIGTERM)
                for process in processes:
                    try:
                        _, errors = process.communicate(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        _, errors = process.communicate()
                    if process.returncode not in (0, -signal.SIGTERM):
                        print(errors[-3000:], file=sys.stderr)
            engine = create_engine(env["SURVEY_DATABASE_URL"])
            with engine.connect() as connection:
                unsent = connection.scalar(
                    text("SELECT count(*) FROM outbox_messages WHERE status != 'sent'")
                )
            engine.dispose()
            with arrivals.lock:
                received = dict(arrivals.ids)
        finally:
            sink.stop()
            receiver.shutdown()
            receiver.server_close()
    return Outcome(
        name=name,
        workers=workers,
        messages=sum(received.values()),
        seconds=seconds,
        duplicates=sum(n - 1 for n in received.values() if n > 1),
        missing=len(ids - set(received)),
        unsent_in_db=int(unsent or 0),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL (emptied first)")
    args = parser.parse_args(argv)
    setups: list[tuple[str, str | None, int]] = [("SQLite", None, 1)]
    if args.postgres:
        setups += [
            ("PostgreSQL", args.postgres, 1),
            ("PostgreSQL", args.postgres, 2),
        ]
    outcomes = []
    for name, url, workers in setups:
        print(f"{name}, {workers} worker(s):", flush=True)
        outcome = run(name, url, workers, args.messages)
        outcomes.append(outcome)
        print(
            f"  {outcome.messages:,} arrived in {outcome.seconds:.1f} s: "
            f"{outcome.per_minute_per_worker:,.0f} messages/min/worker "
            f"(target >= {TARGET_PER_MINUTE_PER_WORKER:,}); "
            f"{outcome.duplicates} twice, {outcome.missing} missing, "
            f"{outcome.unsent_in_db} unsent in the database",
            flush=True,
        )
    failed = False
    for outcome in outcomes:
        for problem in outcome.problems():
            failed = True
            print(f"MISSED {outcome.name} x{outcome.workers}: {problem}")
    if not failed:
        print("All targets met; every message arrived exactly once.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

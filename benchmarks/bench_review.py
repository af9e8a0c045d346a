"""Time the review queue and the item page on a big database (see seed_review.py).

What it measures, through the Flask test client (the whole app: routing,
sign-in check, SQL, templates; no HTTP server, no network), signed in as a
CSM it creates:

* **first page**: ``GET /review`` (open items, biggest lost MRR first);
* **status+reason**: ``GET /review?status=new&reason=too_expensive``;
* **segment**: ``GET /review?segment=<--segment>`` (a departure's fact,
  copied onto the queue item and indexed with the lost MRR);
* **page 50**: the 50th keyset page of ``/review``, reached by following the
  ``rel="next"`` links 49 times, then fetched again and again by its URL;
* **item**: ``GET /review/<public_id>`` of an item with a postmortem (root
  causes and action items), the one with the most notes and audit events.

``--extra-url`` adds pages of your choice (timed and judged the same way).

Each scenario: ``--warmup`` untimed requests, then ``--requests`` timed ones,
one after another. It prints the median and p95 wall time per scenario, and
the median time spent executing SQL (around each ``cursor.execute``: on
PostgreSQL the whole query; on SQLite only up to the first row, as rows are
computed while fetched, so there it understates).

Target: each scenario's median below 50 ms, on SQLite and on PostgreSQL.

The app is configured as in production (``ENV`` production, a random
``SECRET_KEY``, ``BASE_URL`` set, argon2 at its production cost); the client
talks HTTPS so the secure session cookie is sent back. Signing in creates one
staff user (``bench-…@staff.example``) in the database, left there.

With ``--explain`` it prints, for every scenario that misses the target (with
``--explain all``: for every scenario), the slowest SQL statements of one
request with their plans (SQLite: ``EXPLAIN QUERY PLAN``; PostgreSQL:
``EXPLAIN (ANALYZE, BUFFERS)``).

It exits 0 when every target is met, 1 when one is not, 2 when it could not
run (an empty database, a failed sign-in, a page that did not answer 200).

Usage::

    .venv/bin/python benchmarks/bench_review.py \\
        --database-url sqlite:////tmp/bench/review.sqlite3 \\
        [--requests 30] [--warmup 5] [--segment smb] [--explain [all]]
        [--extra-url '/review?q=acme' ...]
"""

from __future__ import annotations

import argparse
import html
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import make_url

TARGET_MS = 50.0
NEXT_RE = re.compile(r'<a\s[^>]*rel="next"[^>]*>')
HREF_RE = re.compile(r'href="([^"]+)"')
HIDDEN_RE = re.compile(r'<input[^>]*type="hidden"[^>]*>')
PASSWORD = secrets.token_urlsafe(16)


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why."""


@dataclass
class Statement:
    """One SQL statement run during a request, and how long it took."""

    sql: str
    parameters: Any
    seconds: float


@dataclass
class SqlLog:
    """Collects statements while ``on`` is set (engine events feed it)."""

    on: bool = False
    statements: list[Statement] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, _cursor: Any, *_args: Any) -> None:
            conn.info.setdefault("bench_started", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(
            conn: Any,
            _cursor: Any,
            statement: str,
            parameters: Any,
            _context: Any,
            _many: bool,
        ) -> None:
            started = conn.info["bench_started"].pop()
            if self.on:
                self.statements.append(
                    Statement(statement, parameters, time.perf_counter() - started)
                )

    def take(self) -> list[Statement]:
        taken, self.statements = self.statements, []
        return taken


@dataclass
class Result:
    """The timings of one scenario."""

    name: str
    url: str
    wall_ms: list[float]
    sql_ms: list[float]
    statements: list[Statement]  # of the last timed request

    @property
    def median(self) -> float:
        return statistics.median(self.wall_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.wall_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def sql_median(self) -> float:
        return statistics.median(self.sql_ms)

    @property
    def met(self) -> bool:
        return self.median < TARGET_MS


# --- setup ------------------------------------------------------------------


def build_app(database_url: str, instance: str) -> Flask:
    from survey import create_app

    return create_app(
        {
            "ENV": "production",
            "SECRET_KEY": secrets.token_hex(32),
            "BASE_URL": "https://survey.example.com",
            "DATABASE_URL": database_url,
            "INSTANCE_PATH": instance,
        }
    )


def check_seeded(app: Flask) -> tuple[int, int]:
    """Return (departures, review items); raise BenchError when empty."""
    from survey import db
    from survey.departures.models import Departure
    from survey.review_items import ReviewItem

    with app.app_context():
        session = db.session()
        try:
            departures = session.scalar(select(func.count()).select_from(Departure))
            items = session.scalar(select(func.count()).select_from(ReviewItem))
        except Exception as error:
            raise BenchError(f"cannot read the database: {error}") from error
    if not departures or not items:
        raise BenchError("the database has no review items; run seed_review.py")
    return departures or 0, items or 0


def create_reviewer(app: Flask) -> str:
    """Create a CSM through the app's own service; return the address."""
    from survey import db
    from survey.staff import service

    email = f"bench-{secrets.token_hex(4)}@staff.example"
    with app.app_context(), db.write_session() as session:
        service.create_user(
            session, email=email, name="Bench Reviewer", role="csm", password=PASSWORD
        )
        session.commit()
    return email


def sign_in(client: FlaskClient, email: str) -> None:
    """Sign in through the login form, like a browser."""
    page = client.get("/login")
    if page.status_code != 200:
        raise BenchError(f"GET /login answered {page.status_code}")
    fields: dict[str, str] = {}
    for tag in HIDDEN_RE.findall(page.get_data(as_text=True)):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[name.group(1)] = html.unescape(value.group(1)) if value else ""
    answer = client.post(
        "/login", data={**fields, "email": email, "password": PASSWORD}
    )
    if answer.status_code not in (302, 303):
        raise BenchError(f"sign-in answered {answer.status_code}, not a redirect")
    if client.get("/review").status_code != 200:
        raise BenchError("signed in, but GET /review did not answer 200")


def item_with_postmortem(app: Flask) -> str:
    """Return the public id of the reviewed item with the most history."""
    from survey import db
    from survey.audit import AuditEvent
    from survey.departures.models import Departure
    from survey.review.models import ActionItem, Postmortem

    with app.app_context():
        session = db.session()
        events = (
            select(func.count())
            .where(AuditEvent.departure_id == Postmortem.departure_id)
            .scalar_subquery()
        )
        actions = (
            select(func.count())
            .where(ActionItem.postmortem_id == Postmortem.id)
            .scalar_subquery()
        )
        public_id = session.scalar(
            select(Departure.public_id)
            .join(Postmortem, Postmortem.departure_id == Departure.id)
            .where(Postmortem.done_at.is_not(None))
            .order_by(actions.desc(), events.desc(), Postmortem.id)
            .limit(1)
        )
    if public_id is None:
        raise BenchError("no item has a postmortem; seed with --postmortems")
    return public_id


def get_ok(client: FlaskClient, url: str) -> str:
    answer = client.get(url)
    body = answer.get_data(as_text=True)
    if answer.status_code != 200:
        raise BenchError(f"GET {url} answered {answer.status_code}")
    return body


def page_url(client: FlaskClient, start: str, page: int) -> str:
    """Follow ``rel="next"`` from ``start`` until page ``page``; return its URL."""
    url = start
    for number in range(1, page):
        tag = NEXT_RE.search(get_ok(client, url))
        href = HREF_RE.search(tag.group(0)) if tag else None
        if href is None:
            raise BenchError(f"page {number} of {start} has no next link")
        url = html.unescape(href.group(1))
    return url


# --- measuring --------------------------------------------------------------


def measure(
    name: str,
    url: str,
    client: FlaskClient,
    log: SqlLog,
    args: argparse.Namespace,
    check: Callable[[str], bool],
) -> Result:
    for _ in range(args.warmup):
        get_ok(client, url)
    wall: list[float] = []
    sql: list[float] = []
    statements: list[Statement] = []
    for _ in range(args.requests):
        log.on = True
        started = time.perf_counter()
        answer = client.get(url)
        body = answer.get_data(as_text=True)
        wall.append((time.perf_counter() - started) * 1000)
        log.on = False
        statements = log.take()
        sql.append(sum(s.seconds for s in statements) * 1000)
        if answer.status_code != 200 or not check(body):
            raise BenchError(f"GET {url} answered {answer.status_code} or looked wrong")
    result = Result(name, url, wall, sql, statements)
    print(
        f"  {name[:40]:<14} median {result.median:7.1f} ms  p95 {result.p95:7.1f} ms  "
        f"SQL {result.sql_median:6.1f} ms in {len(statements)} statements",
        flush=True,
    )
    return result


def has_rows(body: str) -> bool:
    """Whether a queue page lists items (each has a checkbox named items)."""
    return 'name="items"' in body


def explain(app: Flask, result: Result, top: int = 3) -> None:
    """Print the slowest statements of ``result``'s last request, with plans."""
    from survey import db

    print(f"\n=== {result.name}: {result.url}")
    slowest = sorted(result.statements, key=lambda s: -s.seconds)[:top]
    with app.app_context():
        engine = db.engine()
        postgres = engine.dialect.name == "postgresql"
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
        with engine.connect() as connection:
            for statement in slowest:
                print(f"\n--- {statement.seconds * 1000:.1f} ms")
                print(statement.sql)
                print(f"parameters: {statement.parameters}")
                cursor = connection.connection.cursor()
                try:
                    cursor.execute(prefix + statement.sql, statement.parameters)
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
                print("plan:")
                for row in rows:
                    print("  " + (row[0] if postgres else f"{row[1]:>3} {row[3]}"))
            connection.rollback()


# --- main -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the review queue pages on a seeded database."
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=30, help="timed, each (30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed, each (5)")
    parser.add_argument("--page", type=int, default=50, help="keyset page (50)")
    parser.add_argument("--segment", default="smb", help="segment filter (smb)")
    parser.add_argument(
        "--extra-url",
        action="append",
        default=[],
        metavar="URL",
        help="also time this page (repeatable), e.g. '/review?q=acme'",
    )
    parser.add_argument(
        "--explain",
        nargs="?",
        const="missed",
        choices=("missed", "all"),
        help="print the plans of the slowest statements",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.page < 2:
        parser.error("--requests >= 1, --warmup >= 0, --page >= 2")
    return args


def run(args: argparse.Namespace) -> int:
    from survey import db

    url = make_url(args.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise BenchError(f"no database file at {url.database}; run seed_review.py")
    with tempfile.TemporaryDirectory(prefix="bench-review-") as instance:
        app = build_app(args.database_url, instance)
        departures, items = check_seeded(app)
        with app.app_context():
            engine = db.engine()
        log = SqlLog()
        log.attach(engine)
        print(
            f"{engine.dialect.name}: {departures:,} departures, {items:,} review "
            f"items; {args.warmup} warm-up + {args.requests} timed requests each",
            flush=True,
        )
        email = create_reviewer(app)
        client = app.test_client()
        client.environ_base["wsgi.url_scheme"] = "https"  # secure cookie comes back
        sign_in(client, email)
        public_id = item_with_postmortem(app)
        started = time.perf_counter()
        deep = page_url(client, "/review", args.page)
        print(
            f"  (followed {args.page - 1} next links in "
            f"{time.perf_counter() - started:.1f}s)",
            flush=True,
        )
        scenarios = [
            ("first page", "/review", has_rows),
            (
                "status+reason",
                "/review?status=new&reason=too_expensive",
                has_rows,
            ),
            ("segment", f"/review?segment={args.segment}", has_rows),
            (f"page {args.page}", deep, has_rows),
            ("item", f"/review/{public_id}", lambda body: "postmortem" in body),
            *((url, url, lambda _body: True) for url in args.extra_url),
        ]
        results = [
            measure(name, url, client, log, args, check)
            for name, url, check in scenarios
        ]

        print(f"\n{'scenario':<15}{'median ms':>10}{'p95 ms':>9}{'SQL ms':>8}  target")
        for r in results:
            verdict = "met" if r.met else "MISSED"
            print(
                f"{r.name[:40]:<15}{r.median:>10.1f}{r.p95:>9.1f}{r.sql_median:>8.1f}  "
                f"< {TARGET_MS:.0f} ms {verdict}"
            )
        if args.explain:
            for r in results:
                if args.explain == "all" or not r.met:
                    explain(app, r)
        engine.dispose()
    passed = all(r.met for r in results)
    print("\nAll targets met." if passed else "\nSome targets were missed.")
    return 0 if passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Time the insights dashboard and its API on a big database (see seed_review.py).

What it measures, for the last 365 days (the data were seeded up to today, so
it runs on the real clock, ``survey.clock.now()``):

* **page**: ``GET /insights?days=365`` through the Flask test client (the
  whole app: routing, sign-in check, every panel's SQL, charts, template),
  signed in as a CSM it creates;
* **API**: ``GET /api/v1/insights?from=…&to=…`` for the same days, with an
  API token of scope ``insights:read`` it creates (and revokes at the end);
* **each panel** of ``insights.service.PANELS`` alone, through
  ``panel(session, scope, name, now=)`` for the same scope, in one session
  per round as the page has one per request: its median and its share of
  the sum of the panels' medians, which says where the page's time goes.

Each: ``--warmup`` untimed rounds, then ``--rounds`` timed ones. It prints
one table: median and p95 wall time, the median time spent executing SQL
(around each ``cursor.execute``: on PostgreSQL the whole query; on SQLite
only up to the first row, which for an aggregate is most of it) and the
number of statements. Progress goes to stderr, the report to stdout.

Target: the page's median and the API's median each below 1 s, on SQLite and
on PostgreSQL. The panels have no target of their own.

The app is configured as bench_review.py does it (production settings, the
given database; ``SURVEY_*`` variables of the environment are ignored). It
leaves one staff user (``bench-…@staff.example``) and one revoked API token
(``bench-insights-…``) in the database.

With ``--explain [N]`` it prints, for the N slowest panels (3 when no number
is given), the time of each of its statements and the plan of its slowest
one, and of up to two more that take a fifth of its SQL time each (SQLite:
``EXPLAIN QUERY PLAN``; PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)``, which
runs the statement again).

It exits 0 when both targets are met, 1 when one is not, 2 when it could not
run (no database, an empty one or one not at the code's migration head, a
failed sign-in, an answer other than 200).

Usage::

    .venv/bin/python benchmarks/bench_insights.py \\
        --database-url sqlite:////tmp/bench/insights.sqlite3 \\
        [--rounds 7] [--warmup 1] [--explain [N]]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_review import (  # noqa: E402
    BenchError,
    Result,
    SqlLog,
    Statement,
    build_app,
    create_reviewer,
    sign_in,
)

if TYPE_CHECKING:
    from survey.insights.service import Scope

TARGET_MS = 1000.0
DAYS = 365


class Timing(Result):
    """The rounds of one thing measured, against this benchmark's target."""

    def __init__(
        self,
        name: str,
        wall_ms: list[float],
        sql_ms: list[float],
        statements: list[Statement],
    ) -> None:
        super().__init__(name, name, wall_ms, sql_ms, statements)

    @property
    def met(self) -> bool:
        return self.median < TARGET_MS


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- setup ------------------------------------------------------------------


def without_survey_env() -> None:
    """Drop ``SURVEY_*`` variables: the app reads them, and they could point
    it at another database or instance folder."""
    for name in [name for name in os.environ if name.startswith("SURVEY_")]:
        del os.environ[name]


def check_schema(engine: Engine) -> None:
    """Raise BenchError unless the database is at the code's migration head
    (a model ahead of the seeded schema fails on its first query)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from survey import resource_dir

    expected = set(ScriptDirectory(str(resource_dir("migrations"))).get_heads())
    try:
        with engine.connect() as connection:
            found = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as error:
        raise BenchError(f"cannot read the database: {error}") from error
    if found != expected:
        raise BenchError(
            f"the database is at migration {', '.join(sorted(found)) or 'none'}, "
            f"the code at {', '.join(sorted(expected))}: upgrade it (flask db "
            "upgrade) or run the code it was seeded with"
        )


def describe_data(app: Flask, since: datetime, until: datetime) -> str:
    """Say how many departures there are, in the period and in all; raise
    BenchError when there are none."""
    from survey import db
    from survey.departures.models import Departure

    when = Departure.cancelled_at
    with app.app_context():
        check_schema(db.engine())
        try:
            total, in_period, latest = (
                db.session()
                .execute(
                    select(
                        func.count(Departure.id),
                        func.count(Departure.id).filter(when >= since, when < until),
                        func.max(when),
                    )
                )
                .one()
            )
        except Exception as error:
            raise BenchError(f"cannot read the database: {error}") from error
    if not total:
        raise BenchError("the database has no departures; run seed_review.py")
    return (
        f"{total:,} departures, {in_period:,} of them in the period; "
        f"the latest cancelled {latest:%Y-%m-%d %H:%M} UTC"
    )


def create_api_token(app: Flask) -> tuple[str, str]:
    """Create an ``insights:read`` token; return its shown prefix and secret."""
    from survey import db
    from survey.api.auth import create_token

    with app.app_context(), db.write_session() as session:
        token, secret = create_token(
            session, f"bench-insights-{os.getpid()}", ["insights:read"]
        )
        session.commit()
        return token.display_prefix, secret


def revoke_api_token(app: Flask, prefix: str) -> None:
    from survey import db
    from survey.api.auth import revoke_token

    with app.app_context(), db.write_session() as session:
        revoke_token(session, prefix)
        session.commit()


# --- measuring --------------------------------------------------------------


def time_requests(
    name: str,
    url: str,
    client: FlaskClient,
    log: SqlLog,
    args: argparse.Namespace,
    check: Callable[[Any], bool],
    headers: dict[str, str] | None = None,
) -> Timing:
    """GET ``url`` ``--warmup`` + ``--rounds`` times; time the latter."""
    wall: list[float] = []
    sql: list[float] = []
    statements: list[Statement] = []
    for round_ in range(args.warmup + args.rounds):
        log.on = True
        started = time.perf_counter()
        answer = client.get(url, headers=headers)
        answer.get_data()
        elapsed = (time.perf_counter() - started) * 1000
        log.on = False
        statements = log.take()
        if answer.status_code != 200 or not check(answer):
            raise BenchError(f"GET {url} answered {answer.status_code} or looked wrong")
        if round_ >= args.warmup:
            wall.append(elapsed)
            sql.append(sum(s.seconds for s in statements) * 1000)
    timing = Timing(name, wall, sql, statements)
    progress(f"  {name:<10} median {timing.median:8.1f} ms  p95 {timing.p95:8.1f} ms")
    return timing


def time_panels(
    app: Flask, scope: Scope, log: SqlLog, args: argparse.Namespace
) -> list[Timing]:
    """Time every entry of ``PANELS`` alone, one session per round."""
    from survey import clock, db
    from survey.insights import service as insights

    names = list(insights.PANELS)
    wall: dict[str, list[float]] = {name: [] for name in names}
    sql: dict[str, list[float]] = {name: [] for name in names}
    last: dict[str, list[Statement]] = {}
    with app.app_context():
        for round_ in range(args.warmup + args.rounds):
            now = clock.now()
            with db.new_session() as session:
                for name in names:
                    log.on = True
                    started = time.perf_counter()
                    insights.panel(session, scope, name, now=now)
                    elapsed = (time.perf_counter() - started) * 1000
                    log.on = False
                    statements = log.take()
                    if round_ >= args.warmup:
                        wall[name].append(elapsed)
                        sql[name].append(sum(s.seconds for s in statements) * 1000)
                        last[name] = statements
            progress(f"  panels, round {round_ + 1} of {args.warmup + args.rounds}")
    return [Timing(name, wall[name], sql[name], last[name]) for name in names]


def is_page(answer: Any) -> bool:
    return "<h1>Insights</h1>" in answer.get_data(as_text=True)


def is_json(answer: Any) -> bool:
    data = answer.get_json(silent=True)
    return isinstance(data, dict) and "reasons" in data


# --- reporting --------------------------------------------------------------


def report(requests: list[Timing], panels: list[Timing]) -> None:
    """Print the one table: the two requests against the target, then the
    panels, slowest first, with their share of the panels' sum."""
    total = sum(p.median for p in panels)
    print(
        f"\n{'':<22}{'median ms':>10}{'p95 ms':>10}{'SQL ms':>10}{'stmts':>7}"
        f"{'share':>8}  target"
    )
    for r in requests:
        verdict = "met" if r.met else "MISSED"
        print(
            f"{r.name:<22}{r.median:>10.1f}{r.p95:>10.1f}{r.sql_median:>10.1f}"
            f"{len(r.statements):>7}{'':>8}  < {TARGET_MS:.0f} ms {verdict}"
        )
    for p in sorted(panels, key=lambda p: -p.median):
        share = p.median * 100 / total if total else 0.0
        print(
            f"{'panel ' + p.name:<22}{p.median:>10.1f}{p.p95:>10.1f}"
            f"{p.sql_median:>10.1f}{len(p.statements):>7}{share:>7.1f}%"
        )
    print(
        f"{'panels, sum':<22}{total:>10.1f}{'':>10}"
        f"{sum(p.sql_median for p in panels):>10.1f}"
        f"{sum(len(p.statements) for p in panels):>7}{100:>7.1f}%"
    )


def explain(app: Flask, panels: list[Timing], count: int) -> None:
    """Print, for each of the ``count`` slowest panels (their last timed
    round), the time of every statement and the plans of the slowest ones:
    the slowest, and up to two more taking a fifth of the panel's SQL each."""
    from survey import db

    with app.app_context():
        engine = db.engine()
        postgres = engine.dialect.name == "postgresql"
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
        with engine.connect() as connection:
            for timing in sorted(panels, key=lambda p: -p.median)[:count]:
                ordered = sorted(timing.statements, key=lambda s: -s.seconds)
                sql_seconds = sum(s.seconds for s in ordered)
                print(
                    f"\n=== panel {timing.name}: {len(ordered)} statements, "
                    f"ms: {', '.join(f'{s.seconds * 1000:.1f}' for s in ordered)}"
                )
                shown = ordered[:1] + [
                    s for s in ordered[1:3] if s.seconds >= sql_seconds / 5
                ]
                for statement in shown:
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
                    for line in plan_lines(rows, postgres):
                        print("  " + line)
            connection.rollback()


def plan_lines(rows: Sequence[Any], postgres: bool) -> list[str]:
    """PostgreSQL's plan as it comes; SQLite's (id, parent, _, detail) rows
    indented as a tree."""
    if postgres:
        return [row[0] for row in rows]
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


# --- main -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the insights page, its API and each panel, "
        f"for the last {DAYS} days, on a seeded database."
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rounds", type=int, default=7, help="timed, each (7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed, each (1)")
    parser.add_argument(
        "--explain",
        type=int,
        nargs="?",
        const=3,
        metavar="N",
        help="print the plans of the slowest statements of the N slowest panels (3)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or (args.explain or 1) < 1:
        parser.error("--rounds >= 1, --warmup >= 0, --explain >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    from survey import clock, db
    from survey.insights import service as insights

    without_survey_env()
    url = make_url(args.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise BenchError(f"no database file at {url.database}; run seed_review.py")
    with tempfile.TemporaryDirectory(prefix="bench-insights-") as instance:
        app = build_app(args.database_url, instance)
        with app.app_context():
            today: date = clock.now().date()
            engine = db.engine()
        scope = insights.scope_from({"days": str(DAYS)}, today)
        if scope.end - scope.start != timedelta(days=DAYS - 1):
            raise BenchError(f"days={DAYS} gave {scope.start}..{scope.end}")
        page_url = f"/insights?days={DAYS}"
        api_url = f"/api/v1/insights?from={scope.start}&to={scope.end}"
        log = SqlLog()
        log.attach(engine)
        print(
            f"{engine.dialect.name}: {describe_data(app, scope.since, scope.until)}\n"
            f"period {scope.start} to {scope.end}: {page_url} and {api_url}\n"
            f"{args.warmup} warm-up + {args.rounds} timed rounds each",
            flush=True,
        )
        client = app.test_client()
        client.environ_base["wsgi.url_scheme"] = "https"  # secure cookie comes back
        sign_in(client, create_reviewer(app))
        machine = app.test_client()  # no staff session: the token only
        machine.environ_base["wsgi.url_scheme"] = "https"
        prefix, secret = create_api_token(app)
        try:
            requests = [
                time_requests("page", page_url, client, log, args, is_page),
                time_requests(
                    "API",
                    api_url,
                    machine,
                    log,
                    args,
                    is_json,
                    {"Authorization": f"Bearer {secret}"},
                ),
            ]
        finally:
            revoke_api_token(app, prefix)
        panels = time_panels(app, scope, log, args)
        report(requests, panels)
        if args.explain:
            explain(app, panels, args.explain)
        engine.dispose()
    passed = all(r.met for r in requests)
    print("\nBoth targets met." if passed else "\nA target was missed.")
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

"""Load benchmark of the public survey pages, against a bare Flask baseline.

What it measures, in one run, on loopback with ``wrk``:

* **bare GET**: ``benchmarks/bare_app.py`` (one route answering ``ok``) under
  gunicorn. This is the ceiling of server + Flask + wrk on this machine.
* **survey GET**: page 1 of the survey (``GET /s/<token>``), rotating over
  every seeded departure: token check, database reads, template, CSRF token.
  The first open of each departure also stamps its first-opened time.
* **page-1 POST**: the answer to page 1 (``POST /s/<token>``, reason
  ``too_expensive``) with the page's CSRF token (bound to the link; the survey
  uses no cookie), rotating over
  the departures: a writing transaction per request. It must answer 303;
  anything else counts as an error. Answering the same departure again is an
  edit, which is fine.

Both apps run under the same gunicorn settings (gthread, 2 workers x 4
threads, ``--reuse-port`` as the README advises for production) against a
fresh SQLite database (WAL) in a temporary instance folder, configured as in
production (random ``SURVEY_SECRET_KEY``, no ``SURVEY_ENV``).

The three are measured in rounds (``--rounds``, 3 by default): bare, survey
GET, page-1 POST, then again. A round's ratios compare runs a few seconds
apart, and the median round's ratio is judged: on a shared virtual machine
the bare app alone was seen to vary by half within minutes, and a single
pair of runs inherits all of it. Every round is printed, with the ratios
against the fastest bare run of all as the most severe reading.

Targets, as ratios to the bare baseline so they hold on any hardware
(medians over the rounds):

* survey GET  >= 0.45 x bare requests/second;
* page-1 POST >= 0.25 x bare requests/second, with zero errors;
* no ``database is locked`` in the survey app's gunicorn stderr;
* (sanity) no errors in the GET scenarios either.

It exits 0 when every target is met, 1 when one is not, 2 when it could not
run (no ``wrk``: ``apt-get install wrk``; a server that would not start).

Usage::

    .venv/bin/python benchmarks/bench_survey.py [--duration 10s] [--rounds 3]
        [--connections 64] [--departures 2000] [--postgres URL]

``make bench`` runs it on SQLite, then on PostgreSQL too when ``BENCH_PG``
names an empty database of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlencode, urlsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "rotate.lua"
BIN = Path(sys.executable).parent  # the virtualenv's bin/ when run as asked

WORKERS = 2
THREADS = 4
WRK_THREADS = 2
WRK_TIMEOUT = "5s"

SURVEY_GET_TARGET = 0.45
POST_TARGET = 0.25
LOCKED = "database is locked"
NAME_WIDTH = len("page-1 POST #10")  # of the report's scenario column


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why."""


@dataclass(frozen=True)
class Result:
    """One wrk run, as reported by ``rotate.lua``."""

    name: str
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    socket_errors: int
    statuses: dict[int, int]
    expected_class: int  # first digit of a good status: 2 (200) or 3 (303)
    first_opens: int | None = None  # survey GETs that stamped a first open

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bad_statuses(self) -> dict[int, int]:
        return {
            status: count
            for status, count in self.statuses.items()
            if status // 100 != self.expected_class
        }

    @property
    def errors(self) -> int:
        return self.socket_errors + sum(self.bad_statuses.values())


@dataclass(frozen=True)
class Round:
    """The bare app, the survey's GET and its page-1 POST, measured back to back."""

    bare: Result
    get: Result
    post: Result

    @property
    def get_ratio(self) -> float:
        return _ratio(self.get.rps, self.bare.rps)

    @property
    def post_ratio(self) -> float:
        return _ratio(self.post.rps, self.bare.rps)


def _ratio(rps: float, bare_rps: float) -> float:
    return rps / bare_rps if bare_rps else 0.0


def median_ratios(rounds: Sequence[Round]) -> tuple[float, float]:
    """Return the median round's GET / bare and POST / bare: what is judged."""
    return (
        statistics.median(r.get_ratio for r in rounds),
        statistics.median(r.post_ratio for r in rounds),
    )


@dataclass(frozen=True)
class Server:
    """A gunicorn process and where its stderr goes."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    stderr_path: Path


# --- setup ------------------------------------------------------------------


def tool(name: str) -> str:
    """Return the virtualenv's ``name`` (next to this Python), else PATH's."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def survey_env(tmp: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """Return the environment of a production-like survey app in ``tmp``.

    The database is a SQLite file in ``tmp`` unless ``database_url`` is given.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEY_")}
    env.update(
        SURVEY_SECRET_KEY=secrets.token_hex(32),
        SURVEY_INSTANCE_PATH=str(tmp),
        SURVEY_DATABASE_URL=database_url or f"sqlite:///{tmp / 'bench.sqlite3'}",
        SURVEY_BASE_URL=f"http://127.0.0.1:{port}",
    )
    return env


def flask(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a ``flask --app survey`` command; return what it printed."""
    done = subprocess.run(
        [tool("flask"), "--app", "survey", *args],
        env=env,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def migrate(env: dict[str, str]) -> None:
    """Apply the migrations with the project's own command."""
    done = subprocess.run(
        [tool("flask"), "--app", "survey", "db", "upgrade"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"flask db upgrade failed:\n{done.stdout}{done.stderr}")


def seed(count: int) -> tuple[list[str], list[str]]:
    """Record ``count`` departures in-process; return their survey paths and
    the page-1 answers (form bodies with each link's CSRF token) to post.

    Reads the ``SURVEY_*`` variables of this process (set by ``main``).
    """
    from survey import create_app, db, links, tokens
    from survey.departures.schemas import DepartureIn
    from survey.departures.service import record_departure

    app = create_app()
    # One "recorded departure" line per seeded departure would bury the report.
    logging.getLogger("survey").setLevel(logging.WARNING)
    paths: list[str] = []
    answers: list[str] = []
    with app.app_context():
        with db.write_session() as session:
            for number in range(1, count + 1):
                data = DepartureIn(
                    external_id=f"bench_{number:06d}",
                    contact_email=f"customer{number}@example.com",
                    contact_name=f"Customer {number}",
                    company=f"Bench Company {number}",
                    plan="growth",
                    mrr_cents=10_000 + number,
                    segment="smb",
                )
                departure, _ = record_departure(session, data, source="api")
                paths.append(urlsplit(links.survey_url(departure.public_id)).path)
                # What the page's hidden csrf_token field holds for this link.
                form_token = tokens.form_token(departure.public_id)
                answers.append(
                    urlencode({"csrf_token": form_token, "reason": "too_expensive"})
                )
            session.commit()
        db.engine().dispose()
    return paths, answers


def opened_counter(database_url: str) -> Callable[[], int]:
    """Return a function counting departures whose link has been opened."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(database_url, poolclass=NullPool)
    query = text("SELECT count(*) FROM departures WHERE first_opened_at IS NOT NULL")

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    return count


def start_gunicorn(
    name: str, app: str, port: int, env: dict[str, str], tmp: Path
) -> Server:
    """Start gunicorn serving ``app`` on ``port``; stderr goes to a file."""
    stderr_path = tmp / f"gunicorn-{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                tool("gunicorn"),
                app,
                "--pythonpath",
                str(BENCH_DIR),  # for bare_app; the survey package is installed
                "--worker-class",
                "gthread",
                "--workers",
                str(WORKERS),
                "--threads",
                str(THREADS),
                # Each worker listens on a socket of its own, and the kernel
                # shares the connections out between them. On one shared
                # socket they race to accept wrk's 64 keep-alive connections
                # at once: a worker whose threads hold its GIL loses, and the
                # other may take all 64 and serve them on one core.
                "--reuse-port",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # stopped by us, in order, also on Ctrl-C
        )
    return Server(name, process, f"http://127.0.0.1:{port}", stderr_path)


def stop(server: Server) -> None:
    """Stop gunicorn gracefully; kill it if it lingers."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def wait_until_up(server: Server, path: str, timeout: float = 30) -> None:
    """Poll ``path`` until it answers 200."""
    deadline = time.monotonic() + timeout
    url = server.base_url + path
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(
                f"gunicorn ({server.name}) exited with {server.process.returncode}:"
                f"\n{server.stderr_path.read_text(errors='replace')}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f}s")


def check_post(base_url: str, path: str, body: str) -> None:
    """POST page 1 once, as wrk will, and insist on the 303 it should get."""
    host, _, port = urlsplit(base_url).netloc.partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    if answer.status != 303:
        raise BenchError(f"a single page-1 POST answered {answer.status}, not 303")


# --- load -------------------------------------------------------------------


def run_wrk(
    url: str,
    duration: str,
    connections: int,
    paths_file: Path,
    method: str = "GET",
) -> dict[str, str]:
    """Run wrk with ``rotate.lua``; return the fields of its ``BENCH`` line."""
    command = [
        "wrk",
        f"-t{min(WRK_THREADS, connections)}",
        f"-c{connections}",
        f"-d{duration}",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(paths_file),
        method,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next(
        (ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None
    )
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return dict(field.split("=", 1) for field in line.split()[1:])


def measure(
    name: str,
    url: str,
    paths: Sequence[str],
    expected_class: int,
    args: argparse.Namespace,
    tmp: Path,
    bodies: Sequence[str] = (),
    opened: Callable[[], int] | None = None,
) -> Result:
    """Warm up, then load ``url`` + rotating ``paths`` for the set duration.

    With ``bodies`` (one per path, form-encoded), the requests are POSTs.
    ``opened``, if given, counts first opens before and after the measured run.
    """
    paths_file = tmp / f"paths-{name.replace(' ', '-')}.txt"
    if bodies:
        lines = [f"{path}\t{body}" for path, body in zip(paths, bodies, strict=True)]
    else:
        lines = list(paths)
    paths_file.write_text("\n".join(lines) + "\n")
    method = "POST" if bodies else "GET"
    print(f"  {name}: warm-up {args.warmup} ...", flush=True)
    run_wrk(url, args.warmup, args.connections, paths_file, method)
    print(f"  {name}: measuring {args.duration} ...", flush=True)
    opened_before = opened() if opened else 0
    fields = run_wrk(url, args.duration, args.connections, paths_file, method)
    first_opens = opened() - opened_before if opened else None
    statuses = {
        int(code): int(count)
        for code, count in (
            pair.split(":") for pair in fields["statuses"].split(",") if pair
        )
    }
    result = Result(
        name=name,
        requests=int(fields["requests"]),
        seconds=int(fields["duration_us"]) / 1e6,
        p50_ms=int(fields["p50_us"]) / 1e3,
        p95_ms=int(fields["p95_us"]) / 1e3,
        p99_ms=int(fields["p99_us"]) / 1e3,
        socket_errors=sum(
            int(fields[key]) for key in ("connect", "read", "write", "timeout")
        ),
        statuses=statuses,
        expected_class=expected_class,
        first_opens=first_opens,
    )
    print(
        f"  {name}: {result.rps:,.0f} req/s, statuses {statuses}, "
        f"socket errors {result.socket_errors}",
        flush=True,
    )
    return result


# --- report -----------------------------------------------------------------


def print_table(results: Sequence[Result]) -> None:
    header = (
        f"{'scenario':<{NAME_WIDTH}}{'requests':>10}{'req/s':>10}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<{NAME_WIDTH}}{r.requests:>10,}{r.rps:>10,.0f}{r.p50_ms:>9.1f}"
            f"{r.p95_ms:>9.1f}{r.p99_ms:>9.1f}{r.errors:>8,}"
        )
        if r.errors:
            detail = ", ".join(f"{s}: {n:,}" for s, n in r.bad_statuses.items())
            print(
                f"{'':<{NAME_WIDTH}}  unexpected statuses: {detail or 'none'}; "
                f"socket errors: {r.socket_errors:,}"
            )
        if r.first_opens is not None:
            print(
                f"{'':<{NAME_WIDTH}}  of which first opens (a write each): "
                f"{r.first_opens:,} of {r.requests:,}"
            )


def stderr_report(server: Server, max_lines: int = 80) -> int:
    """Print the server's stderr (abridged); return its ``database is locked``s."""
    text = server.stderr_path.read_text(errors="replace")
    lines = text.splitlines()
    print(f"\ngunicorn stderr ({server.name}): {len(lines)} lines", end="")
    if lines:
        shown = lines[:max_lines]
        print(f", first {len(shown)}:")
        for line in shown:
            print(f"  | {line}")
    else:
        print()
    return text.count(LOCKED)


def print_ratios(rounds: Sequence[Round]) -> None:
    """Print each round's ratios, and against the fastest bare run of all."""
    fastest = max(r.bare.rps for r in rounds)
    print(f"\n{'round':<8}{'bare req/s':>12}{'GET / bare':>12}{'POST / bare':>13}")
    for number, r in enumerate(rounds, 1):
        print(
            f"{number:<8}{r.bare.rps:>12,.0f}{r.get_ratio:>11.2f}x{r.post_ratio:>12.2f}x"
        )
    get_ratio, post_ratio = median_ratios(rounds)
    print(f"{'median':<8}{'':>12}{get_ratio:>11.2f}x{post_ratio:>12.2f}x")
    severe_get = _ratio(statistics.median(r.get.rps for r in rounds), fastest)
    severe_post = _ratio(statistics.median(r.post.rps for r in rounds), fastest)
    print(
        f"{'severe':<8}{fastest:>12,.0f}{severe_get:>11.2f}x{severe_post:>12.2f}x"
        "   (median survey run / fastest bare run; not judged)"
    )


def judge(rounds: Sequence[Round], locked: int) -> list[tuple[str, bool]]:
    """Return each target with whether it is met; ratios are medians of rounds."""
    get_ratio, post_ratio = median_ratios(rounds)
    post_errors = sum(r.post.errors for r in rounds)
    bare_errors = sum(r.bare.errors for r in rounds)
    get_errors = sum(r.get.errors for r in rounds)
    return [
        (
            f"survey GET / bare = {get_ratio:.3f}x, median of {len(rounds)} rounds"
            f"  (target >= {SURVEY_GET_TARGET}x)",
            get_ratio >= SURVEY_GET_TARGET,
        ),
        (
            f"page-1 POST / bare = {post_ratio:.3f}x, median of {len(rounds)} rounds"
            f"  (target >= {POST_TARGET}x)",
            post_ratio >= POST_TARGET,
        ),
        (f"page-1 POST errors = {post_errors:,}  (target 0)", post_errors == 0),
        (
            f"GET errors = bare {bare_errors:,}, survey {get_errors:,}  (target 0)",
            bare_errors == 0 and get_errors == 0,
        ),
        (f'"{LOCKED}" in gunicorn stderr = {locked:,}  (target 0)', locked == 0),
    ]


# --- main -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load-test the survey pages against a bare Flask app (wrk)."
    )
    parser.add_argument(
        "--duration", default="10s", help="wrk duration per scenario (10s)"
    )
    parser.add_argument(
        "--warmup", default="2s", help="wrk warm-up before each scenario (2s)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="open connections (64): the kernel shares them out between "
        "gunicorn's workers (--reuse-port) by a hash, unevenly; with too few, one "
        "worker may get most of them and the other idle",
    )
    parser.add_argument(
        "--departures", type=int, default=2000, help="departures to seed (2000)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of bare, survey GET and page-1 POST (3); the median counts",
    )
    parser.add_argument(
        "--postgres",
        help="run on this PostgreSQL database instead of SQLite (its schema is "
        "dropped); the targets are judged on SQLite only",
    )
    args = parser.parse_args(argv)
    if min(args.connections, args.departures, args.rounds) < 1:
        parser.error("--connections, --departures and --rounds must be at least 1")
    return args


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
    survey_port = bare_port = free_port()
    while bare_port == survey_port:
        bare_port = free_port()
    database_url = args.postgres or f"sqlite:///{tmp / 'bench.sqlite3'}"
    if args.postgres:
        from bench_export import reset_postgres

        reset_postgres(args.postgres)
    env = survey_env(tmp, survey_port, database_url)
    os.environ.update(env)  # seed() builds the app from the same variables

    database = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{database}; instance folder {tmp}; migrating and seeding ...")
    started = time.monotonic()
    migrate(env)
    paths, answers = seed(args.departures)
    print(f"  seeded in {time.monotonic() - started:.1f}s")

    servers: list[Server] = []

    def stop_all() -> None:
        for server in servers:
            stop(server)

    stack.callback(stop_all)  # runs before the temporary folder goes
    survey = start_gunicorn("survey", "survey:create_app()", survey_port, env, tmp)
    servers.append(survey)
    bare = start_gunicorn("bare", "bare_app:app", bare_port, env, tmp)
    servers.append(bare)
    wait_until_up(survey, "/healthz")
    wait_until_up(bare, "/")

    check_post(survey.base_url, paths[0], answers[0])

    print(
        f"Loading: wrk -t{min(WRK_THREADS, args.connections)} "
        f"-c{args.connections} -d{args.duration} (warm-up {args.warmup}); "
        f"{args.rounds} rounds; "
        f"gunicorn gthread {WORKERS} workers x {THREADS} threads, --reuse-port; "
        f"{os.cpu_count()} CPUs"
    )
    opened = opened_counter(database_url)
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        rounds.append(
            Round(
                bare=measure(f"bare GET #{number}", bare.base_url, ["/"], 2, args, tmp),
                get=measure(
                    f"survey GET #{number}",
                    survey.base_url,
                    paths,
                    2,
                    args,
                    tmp,
                    opened=opened,
                ),
                post=measure(
                    f"page-1 POST #{number}",
                    survey.base_url,
                    paths,
                    3,
                    args,
                    tmp,
                    bodies=answers,
                ),
            )
        )
    stop_all()  # flush what the workers still had to say

    print()
    print_table([result for r in rounds for result in (r.bare, r.get, r.post)])
    print_ratios(rounds)
    locked = stderr_report(survey)
    stderr_report(bare, max_lines=20)

    print()
    verdicts = judge(rounds, locked)
    for label, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    passed = all(ok for _, ok in verdicts)
    if args.postgres:  # the targets are SQLite's; on PostgreSQL, figures only
        print("\nPostgreSQL: figures for comparison; the targets are SQLite's.")
        return 0
    print("\nAll targets met." if passed else "\nSome targets were missed.")
    return 0 if passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_on_signal)
    try:
        with contextlib.ExitStack() as stack:
            return run(args, stack)
    except BenchError as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, temporary folder removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())

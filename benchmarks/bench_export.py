"""Win-back CSV export at scale: 1,000,000 consenting contacts through a real server.

What it does, per database (SQLite, and PostgreSQL when ``--postgres URL`` is
given):

1. creates a fresh database with the project's migrations;
2. bulk-loads N departures (default 1,000,000) whose contacts consented, and
   has the app work out its win-back list (``flask contacts rebuild-winback``:
   what recording each grant keeps on its departure);
3. serves the app with gunicorn (1 gthread worker, production settings);
4. downloads ``GET /api/v1/winback/contacts.csv`` with an API token, timing
   the first byte and the whole body, while sampling the server's RSS;
5. right after each download, times a plain SQLAlchemy Core query of the
   same columns (the same tables joined as the export joins them; no
   eligibility, no formatting), streamed to CSV in this process: the
   baseline of what the database and the csv module give.

Steps 4 and 5 run three times, interleaved, each followed by a read of the
whole list as JSON pages (``GET /api/v1/winback/contacts``, 10,000 a page,
following ``next_cursor``, one keep-alive connection); each side keeps its
best (this machine's noise is larger than some differences measured).

6. then gives one person 100,000 departures of their own (each with a consent
   event and an email) and times their personal-data export
   (``flask contacts export``, the code behind the admin's download, less
   the command's start-up), its first byte and its peak RSS: it streams,
   so memory stays flat.

Targets: total <= 8 s, first byte < 1 s, peak RSS of the server process
< 150 MB, every row present, and at most 1.2 times the baseline; for the
JSON pages, every contact read, in <= 8 s (the client's decoding of the
pages is printed apart, not counted), the first page < 1 s; for the
personal-data export, every departure present, in <= 8 s, the first byte
< 1 s and peak RSS < 150 MB. Exit 0 when all are met, 1 when one is missed,
2 when it could not run.

Usage::

    .venv/bin/python benchmarks/bench_export.py [--rows 1000000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench_export]
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import column, create_engine, select, table, text

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(BENCH_DIR))

from bench_survey import (  # noqa: E402
    BenchError,
    flask,
    free_port,
    migrate,
    survey_env,
    tool,
)

TOTAL_TARGET_S = 8.0
#: The export's time over the plain Core query's, at most.
RATIO_TARGET = 1.2
FIRST_BYTE_TARGET_S = 1.0
RSS_TARGET_MB = 150.0
BATCH = 20_000
#: Downloads and baselines timed, each side taking its best.
ROUNDS = 3
#: Contacts per JSON page when the whole list is read page by page (the most).
JSON_PAGE = 10_000  # survey.api.paging.EXPORT_MAX_LIMIT
#: The person whose personal-data export is timed, and how often they left.
PERSON = "frequent@export.example"
PERSON_DEPARTURES = 100_000


@dataclass(frozen=True)
class Outcome:
    """One export, measured."""

    database: str
    rows: int
    load_s: float
    first_byte_s: float
    total_s: float
    megabytes: float
    peak_rss_mb: float
    baseline_s: float
    person: PersonalExport
    pages: JsonWalk

    @property
    def ratio(self) -> float:
        return self.total_s / self.baseline_s

    def problems(self, expected: int) -> list[str]:
        found = []
        if self.ratio > RATIO_TARGET:
            found.append(f"{self.ratio:.2f}x the plain query > {RATIO_TARGET}x")
        if self.rows != expected:
            found.append(f"{self.rows} rows instead of {expected}")
        if self.total_s > TOTAL_TARGET_S:
            found.append(f"total {self.total_s:.1f} s > {TOTAL_TARGET_S:.0f} s")
        if self.first_byte_s >= FIRST_BYTE_TARGET_S:
            found.append(f"first byte {self.first_byte_s:.2f} s >= 1 s")
        if self.peak_rss_mb >= RSS_TARGET_MB:
            found.append(f"peak RSS {self.peak_rss_mb:.0f} MB >= {RSS_TARGET_MB:.0f}")
        return found + self.person.problems() + self.pages.problems(expected)


@dataclass(frozen=True)
class JsonWalk:
    """The whole list read as JSON pages, measured."""

    rows: int
    first_byte_s: float
    total_s: float  # the export's: each request until its body is read
    megabytes: float
    decoding_s: float  # the client's json.loads of every page, apart

    def problems(self, expected: int) -> list[str]:
        found = []
        if self.rows != expected:
            found.append(f"JSON pages: {self.rows} contacts instead of {expected}")
        if self.total_s > TOTAL_TARGET_S:
            found.append(
                f"JSON pages: total {self.total_s:.1f} s > {TOTAL_TARGET_S:.0f} s"
            )
        if self.first_byte_s >= FIRST_BYTE_TARGET_S:
            found.append(f"JSON pages: first byte {self.first_byte_s:.2f} s >= 1 s")
        return found


@dataclass(frozen=True)
class PersonalExport:
    """One person's personal-data export, measured."""

    departures: int
    first_byte_s: float
    total_s: float
    megabytes: float
    peak_rss_mb: float

    def problems(self) -> list[str]:
        found = []
        if self.departures != PERSON_DEPARTURES:
            found.append(
                f"personal export: {self.departures} departures"
                f" instead of {PERSON_DEPARTURES}"
            )
        if self.total_s > TOTAL_TARGET_S:
            found.append(
                f"personal export: total {self.total_s:.1f} s > {TOTAL_TARGET_S:.0f} s"
            )
        if self.first_byte_s >= FIRST_BYTE_TARGET_S:
            found.append(f"personal export: first byte {self.first_byte_s:.2f} s")
        if self.peak_rss_mb >= RSS_TARGET_MB:
            found.append(f"personal export: peak RSS {self.peak_rss_mb:.0f} MB")
        return found


def load(database_url: str, rows: int) -> float:
    """Insert ``rows`` consenting departures; return the seconds it took."""
    started = time.monotonic()
    engine = create_engine(database_url)
    now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC on SQLite
    if not database_url.startswith("sqlite"):
        now = datetime.now(UTC)
    with engine.begin() as connection:
        for start in range(0, rows, BATCH):
            numbers = range(start, min(start + BATCH, rows))
            connection.execute(
                text(
                    "INSERT INTO departures (public_id, external_id, company, "
                    "contact_name, contact_email, plan, mrr_cents, currency, segment, "
                    "cancelled_at, source, created_at) VALUES (:p, :e, :c, :n, :m, "
                    "'growth', :r, 'USD', 'smb', :t, 'csv', :t)"
                ),
                [
                    {
                        # Random, as the app makes them (new_public_id).
                        "p": secrets.token_urlsafe(12),
                        "e": f"export-{n}",
                        "c": f"=Company {n}" if n % 1000 == 0 else f"Company {n}",
                        "n": f"Person {n}",
                        "m": f"person{n}@export.example",
                        "r": 10_000 + n % 90_000,
                        "t": now,
                    }
                    for n in numbers
                ],
            )
        connection.execute(
            text(
                "INSERT INTO consent_events (departure_id, action, channel, wording, "
                "wording_version, created_at) SELECT id, 'granted', 'survey', "
                "'Yes, you may contact me later.', '2026-11-v1', :t FROM departures "
                "ORDER BY id"
            ),
            {"t": now},
        )
        if database_url.startswith("postgresql"):
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return time.monotonic() - started


def load_person(database_url: str, departures: int) -> None:
    """Give ``PERSON`` that many departures, each with a consent event and an
    email, between everyone else's."""
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    if database_url.startswith("sqlite"):
        now = now.replace(tzinfo=None)
    with engine.begin() as connection:
        first = connection.scalar(text("SELECT coalesce(max(id), 0) FROM departures"))
        for start in range(0, departures, BATCH):
            connection.execute(
                text(
                    "INSERT INTO departures (public_id, external_id, company, "
                    "contact_name, contact_email, plan, mrr_cents, currency, segment, "
                    "cancelled_at, source, created_at) VALUES (:p, :e, 'Frequent', "
                    "'Fran Frequent', :m, 'growth', 10000, 'USD', 'smb', :t, 'csv', :t)"
                ),
                [
                    {
                        "p": secrets.token_urlsafe(12),
                        "e": f"frequent-{n}",
                        "m": PERSON,
                        "t": now,
                    }
                    for n in range(start, min(start + BATCH, departures))
                ],
            )
        mine = {"first": first, "t": now}
        connection.execute(
            text(
                "INSERT INTO consent_events (departure_id, action, channel, wording, "
                "wording_version, created_at) SELECT id, 'granted', 'survey', "
                "'Yes, you may contact me later.', '2026-11-v1', :t FROM departures "
                "WHERE id > :first ORDER BY id"
            ),
            mine,
        )
        connection.execute(
            text(
                "INSERT INTO outbox_messages (departure_id, kind, recipient, subject, "
                "body_text, msgid, status, attempts, next_attempt_at, created_at, "
                "sent_at) SELECT id, 'invitation', contact_email, 'One question', "
                "'Why did you leave?', public_id || '@bench', 'sent', 1, :t, :t, :t "
                "FROM departures WHERE id > :first ORDER BY id"
            ),
            mine,
        )
        if database_url.startswith("postgresql"):
            connection.execute(text("ANALYZE"))
    engine.dispose()


def personal_export(env: dict[str, str]) -> PersonalExport:
    """Time ``flask contacts export PERSON`` (its first byte, its end, its
    output's size and departures, and the command's peak RSS), less the
    command's own start-up: the same export of an address nobody has, the
    fastest of three (one alone varied by more than the first byte it was
    taken from, which then came out negative)."""
    startups = [run_export(env, "nobody@export.example") for _ in range(3)]
    startup_first_s = min(startup[0] for startup in startups)
    startup_total_s = min(startup[1] for startup in startups)
    first_byte_s, total_s, output, peak_rss_mb = run_export(env, PERSON)
    return PersonalExport(
        len(json.loads(output)["departures"]),
        first_byte_s - startup_first_s,
        total_s - startup_total_s,
        len(output) / 2**20,
        peak_rss_mb,
    )


def run_export(env: dict[str, str], address: str) -> tuple[float, float, bytes, float]:
    """Run ``flask contacts export``; return the seconds to its first byte and
    to its end, what it printed, and its peak RSS in MB."""
    started = time.monotonic()
    command = subprocess.Popen(
        [tool("flask"), "--app", "survey", "contacts", "export", address],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert command.stdout is not None
    with PeakRss([command.pid]) as peak:
        output = bytearray(command.stdout.read(1))
        first_byte_s = time.monotonic() - started
        output += command.stdout.read()
        if command.wait(timeout=600) != 0:
            raise BenchError(f"flask contacts export {address} failed")
    total_s = time.monotonic() - started
    return first_byte_s, total_s, bytes(output), peak.mb


def baseline(database_url: str) -> float:
    """Time a plain Core query of the exported columns, streamed to CSV: the
    tables the export reads, joined as it joins them, and no more (no
    eligibility, no formatting, the stored withdrawal token as it is)."""
    engine = create_engine(database_url)
    departures = table(
        "departures",
        column("id"),
        column("contact_email"),
        column("contact_name"),
        column("company"),
        column("plan"),
        column("segment"),
        column("mrr_cents"),
        column("currency"),
        column("winback_grant_id"),
        column("withdraw_token"),
    )
    consents = table(
        "consent_events", column("id"), column("created_at"), column("wording_version")
    )
    responses = table("responses", column("departure_id"), column("reason"))
    postmortems = table(
        "postmortems", column("departure_id"), column("winback_recommendation")
    )
    query = (
        select(
            departures.c.contact_email,
            departures.c.contact_name,
            departures.c.company,
            departures.c.plan,
            departures.c.segment,
            departures.c.mrr_cents,
            departures.c.currency,
            responses.c.reason,
            postmortems.c.winback_recommendation,
            consents.c.created_at,
            consents.c.wording_version,
            departures.c.withdraw_token,
        )
        .join_from(departures, consents, consents.c.id == departures.c.winback_grant_id)
        .outerjoin(responses, responses.c.departure_id == departures.c.id)
        .outerjoin(postmortems, postmortems.c.departure_id == departures.c.id)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    started = time.monotonic()
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=5_000).execute(
            query.order_by(departures.c.id)
        )
        for rows in result.partitions():
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(rows)
            buffer.getvalue()
    elapsed = time.monotonic() - started
    engine.dispose()
    return elapsed


def rss_mb(pid: int) -> float:
    """Return a process's resident memory in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):  # gone, or going
        pass
    return 0.0


class PeakRss:
    """The most resident memory seen in some processes, sampled every 50 ms
    from /proc while the ``with`` block runs (nothing else is started)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.mb = 0.0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._sampler.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._sampling = False
        self._sampler.join()

    def _sample(self) -> None:
        while self._sampling:
            self.mb = max(self.mb, *(rss_mb(pid) for pid in self.pids))
            time.sleep(0.05)


def worker_pids(master: int) -> list[int]:
    """Return gunicorn's worker processes (children of the master)."""
    found = subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def download(port: int, token: str) -> tuple[float, float, int, int]:
    """Download the CSV once; return the seconds to its first byte and to its
    end, its size and its line count (read into one buffer, counted in C)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.monotonic()
    connection.request(
        "GET",
        "/api/v1/winback/contacts.csv",
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = connection.getresponse()
    first = answer.read(1)
    first_byte_s = time.monotonic() - started
    size, lines = 1, first.count(b"\n")
    buffer = bytearray(1 << 20)
    while read := answer.readinto(buffer):
        size += read
        lines += buffer.count(b"\n", 0, read)
    total_s = time.monotonic() - started
    connection.close()
    return first_byte_s, total_s, size, lines


def walk_json(port: int, token: str) -> tuple[float, float, int, int, float]:
    """Read the whole list as the JSON pages a client walks (``limit`` 10,000,
    each page's ``next_cursor`` to the next), on one keep-alive connection;
    return the seconds to the first byte and of the export (each request
    until its body is read, the pages one after another), the bytes, the
    contacts read, and the seconds the client spent decoding the pages.

    The client's decoding is timed apart, not as the export's: the CSV's
    download does not parse its CSV either (client and server share this
    machine's cores, one after the other).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"}
    first_byte_s: float | None = None
    exporting_s = decoding_s = 0.0
    size = contacts = 0
    cursor: str | None = ""
    while cursor is not None:
        query = f"?limit={JSON_PAGE}" + (f"&cursor={cursor}" if cursor else "")
        asked = time.monotonic()
        connection.request("GET", "/api/v1/winback/contacts" + query, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        exporting_s += time.monotonic() - asked
        if answer.status != 200:
            raise BenchError(f"a JSON page answered {answer.status}: {body[:200]!r}")
        if first_byte_s is None:
            first_byte_s = exporting_s
        decoding = time.monotonic()
        page = json.loads(body)
        decoding_s += time.monotonic() - decoding
        size += len(body)
        contacts += len(page["contacts"])
        cursor = page["next_cursor"]
    connection.close()
    return first_byte_s or 0.0, exporting_s, size, contacts, decoding_s


def export(database: str, database_url: str, rows: int) -> Outcome:
    """Set up one database, load it, and time one export through gunicorn."""
    baselines: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        instance = Path(folder)
        port = free_port()
        env = survey_env(instance, port, database_url)
        migrate(env)
        print(f"  {database}: loading {rows:,} consenting contacts ...", flush=True)
        load_s = load(database_url, rows)
        # What recording each grant keeps on its departure (the listing and
        # its withdrawal link), worked out by the app's own command.
        started = time.monotonic()
        flask(env, "contacts", "rebuild-winback")
        load_s += time.monotonic() - started
        print(f"  {database}: loaded in {load_s:.1f} s", flush=True)
        token = flask(
            env, "tokens", "create", "--name", "bench", "--scope", "winback:read"
        ).strip()
        server = subprocess.Popen(
            [
                tool("gunicorn"),
                "survey:create_app()",
                "--worker-class",
                "gthread",
                "--workers",
                "1",
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    probe.request("GET", "/healthz")
                    if probe.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("gunicorn did not start")
                time.sleep(0.2)
            # The workers are there once it answers; their RSS is read from
            # /proc alone while downloading (no process started meanwhile).
            watched = [server.pid, *worker_pids(server.pid)]
            # Best of a few, each beside the baseline: this machine's noise
            # is larger than the difference measured.
            timings = []
            walks = []
            with PeakRss(watched) as peak:
                for _ in range(ROUNDS):
                    timings.append(download(port, token))
                    baselines.append(baseline(database_url))
                    walks.append(walk_json(port, token))
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"  {database}: one person leaves {PERSON_DEPARTURES:,}x", flush=True)
        load_person(database_url, PERSON_DEPARTURES)
        person = personal_export(env)
    first_byte_s, total_s, size, lines = min(timings, key=lambda timing: timing[1])
    json_first_s, json_total_s, json_size, json_rows, json_decoding_s = min(
        walks, key=lambda w: w[1]
    )
    return Outcome(
        database,
        lines - 1,
        load_s,
        first_byte_s,
        total_s,
        size / 2**20,
        peak.mb,
        min(baselines),
        person,
        JsonWalk(
            json_rows, json_first_s, json_total_s, json_size / 2**20, json_decoding_s
        ),
    )


def reset_postgres(url: str) -> None:
    """Drop and recreate the public schema of the benchmark's own database."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> int:
    """Run the export on each database and print the table and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--postgres", help="URL of a PostgreSQL database to use (its schema is dropped)"
    )
    args = parser.parse_args()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bench-export-db-") as folder:
        outcomes.append(
            export("sqlite", f"sqlite:///{Path(folder) / 'export.sqlite3'}", args.rows)
        )
    if args.postgres:
        reset_postgres(args.postgres)
        outcomes.append(export("postgresql", args.postgres, args.rows))
    print()
    print(
        f"{'database':<11}{'rows':>11}{'load s':>9}{'1st byte s':>12}"
        f"{'total s':>9}{'MB':>8}{'peak RSS MB':>13}{'Core s':>8}{'ratio':>7}"
    )
    failed = False
    for outcome in outcomes:
        print(
            f"{outcome.database:<11}{outcome.rows:>11,}{outcome.load_s:>9.1f}"
            f"{outcome.first_byte_s:>12.3f}{outcome.total_s:>9.1f}"
            f"{outcome.megabytes:>8.0f}{outcome.peak_rss_mb:>13.0f}"
            f"{outcome.baseline_s:>8.1f}{outcome.ratio:>7.2f}"
        )
    print()
    print(
        f"{'JSON pages':<11}{'contacts':>11}{'1st byte s':>12}{'total s':>9}{'MB':>8}"
        f"{'client decoding s':>19}"
    )
    for outcome in outcomes:
        walk = outcome.pages
        print(
            f"{outcome.database:<11}{walk.rows:>11,}{walk.first_byte_s:>12.3f}"
            f"{walk.total_s:>9.1f}{walk.megabytes:>8.0f}{walk.decoding_s:>19.1f}"
        )
    print()
    print(
        f"{'personal':<11}{'departures':>11}{'1st byte s':>12}{'total s':>9}"
        f"{'MB':>8}{'peak RSS MB':>13}"
    )
    for outcome in outcomes:
        person = outcome.person
        print(
            f"{outcome.database:<11}{person.departures:>11,}"
            f"{person.first_byte_s:>12.3f}{person.total_s:>9.1f}"
            f"{person.megabytes:>8.0f}{person.peak_rss_mb:>13.0f}"
        )
    print()
    for outcome in outcomes:
        problems = outcome.problems(args.rows)
        failed |= bool(problems)
        print(
            f"{'FAIL' if problems else 'PASS'}  {outcome.database}: "
            + ("; ".join(problems) or "all targets met")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        sys.exit(2)

"""Win-back CSV export at scale: 1,000,000 consenting contacts through a real server.

What it does, per database (SQLite, and PostgreSQL when ``--postgres URL`` is
given):

1. creates a fresh database with the project's migrations;
2. bulk-loads N departures (default 1,000,000) whose contacts consented;
3. serves the app with gunicorn (1 gthread worker, production settings);
4. downloads ``GET /api/v1/winback/contacts.csv`` with an API token, timing
   the first byte and the whole body, while sampling the worker's RSS.

Targets (from the issue): total <= 15 s, first byte < 1 s, peak RSS of the
server process < 150 MB, and every row present. Exit 0 when all are met, 1
when one is missed, 2 when it could not run.

Usage::

    .venv/bin/python benchmarks/bench_export.py [--rows 1000000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench_export]
"""

from __future__ import annotations

import argparse
import http.client
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(BENCH_DIR))

from bench_survey import free_port, migrate, survey_env, tool  # noqa: E402

TOTAL_TARGET_S = 15.0
FIRST_BYTE_TARGET_S = 1.0
RSS_TARGET_MB = 150.0
BATCH = 20_000


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

    def problems(self, expected: int) -> list[str]:
        found = []
        if self.rows != expected:
            found.append(f"{self.rows} rows instead of {expected}")
        if self.total_s > TOTAL_TARGET_S:
            found.append(f"total {self.total_s:.1f} s > {TOTAL_TARGET_S:.0f} s")
        if self.first_byte_s >= FIRST_BYTE_TARGET_S:
            found.append(f"first byte {self.first_byte_s:.2f} s >= 1 s")
        if self.peak_rss_mb >= RSS_TARGET_MB:
            found.append(f"peak RSS {self.peak_rss_mb:.0f} MB >= {RSS_TARGET_MB:.0f}")
        return found


def flask(env: dict[str, str], *args: str) -> str:
    """Run a ``flask --app survey`` command; return its output."""
    done = subprocess.run(
        [tool("flask"), "--app", "survey", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


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


def rss_mb(pid: int) -> float:
    """Return a process's resident memory in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def worker_pids(master: int) -> list[int]:
    """Return gunicorn's worker processes (children of the master)."""
    found = subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def export(database: str, database_url: str, rows: int) -> Outcome:
    """Set up one database, load it, and time one export through gunicorn."""
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        instance = Path(folder)
        port = free_port()
        env = survey_env(instance, port, database_url)
        migrate(env)
        print(f"  {database}: loading {rows:,} consenting contacts ...", flush=True)
        load_s = load(database_url, rows)
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
            peak = 0.0
            sampling = True

            def sample() -> None:
                nonlocal peak
                while sampling:
                    for pid in [server.pid, *worker_pids(server.pid)]:
                        peak = max(peak, rss_mb(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
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
            while chunk := answer.read(1 << 16):
                size += len(chunk)
                lines += chunk.count(b"\n")
            total_s = time.monotonic() - started
            sampling = False
            sampler.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return Outcome(
        database, lines - 1, load_s, first_byte_s, total_s, size / 2**20, peak
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
        f"{'total s':>9}{'MB':>8}{'peak RSS MB':>13}"
    )
    failed = False
    for outcome in outcomes:
        print(
            f"{outcome.database:<11}{outcome.rows:>11,}{outcome.load_s:>9.1f}"
            f"{outcome.first_byte_s:>12.3f}{outcome.total_s:>9.1f}"
            f"{outcome.megabytes:>8.0f}{outcome.peak_rss_mb:>13.0f}"
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
    sys.exit(main())

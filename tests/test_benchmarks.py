"""The benchmark scripts still run against the code they measure, on a small
data set (at their full size they are ``make bench-*``, not tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEY_")}
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_insights_benchmark_seeds_and_measures_a_small_data_set(tmp_path):
    url = f"sqlite:///{tmp_path / 'insights.sqlite3'}"
    seeded = _run(
        "seed_review.py",
        "--database-url",
        url,
        "--departures",
        "3000",
        "--postmortems",
        "100",
    )
    assert seeded.returncode == 0, seeded.stdout[-1000:] + seeded.stderr[-3000:]
    assert "loaded" in seeded.stdout
    measured = _run("bench_insights.py", "--database-url", url)
    assert measured.returncode == 0, measured.stdout[-1000:] + measured.stderr[-3000:]
    assert "Both targets met." in measured.stdout

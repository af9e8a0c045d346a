"""The soak of the deployment, short: `make soak`'s script for 30 seconds.

Two gunicorn servers and two mail workers on one PostgreSQL database, one of
each killed and restarted midway; the script's own checks decide (nothing
lost, nothing of an erased person left, no 5xx but during the kills).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.mark.skipif(not PG_URL, reason="the soak runs on PostgreSQL only")
def test_a_short_soak_loses_nothing() -> None:
    # A database of its own: the soak replaces its schema.
    assert PG_URL is not None
    database = PG_URL.rsplit("/", 1)[0] + "/soak_test"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "30", "--database", database],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: nothing lost" in done.stdout
    # Both kills happened, and the staff signed in and were refused as counted.
    assert "outbox worker killed at" in done.stdout
    assert "app server killed at" in done.stdout
    refusals = re.search(r"wrong passwords refused: (\d+) of", done.stdout)
    assert refusals is not None and int(refusals.group(1)) > 0, done.stdout
    # Requests were turned away by the killed server and retried elsewhere.
    refused = next(
        line for line in done.stdout.splitlines() if "connections refused" in line
    )
    assert not refused.rstrip().endswith(": 0"), refused

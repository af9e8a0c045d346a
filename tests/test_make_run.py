"""`make run`, as the README's first command: it serves, and it stops cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (REPO / ".venv" / "bin" / "flask").exists(),
    reason="needs make and the repository's .venv (made by make test)",
)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    "stop",
    ["ctrl-c", "sigterm-to-make"],
)
def test_make_run_serves_and_leaves_nothing_behind_when_stopped(tmp_path, stop):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEY_")}
    env["SURVEY_INSTANCE_PATH"] = str(tmp_path)  # not the repository's instance/
    # As from a terminal: its own process group, SIGINT not ignored.
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert make.poll() is None, make.stdout.read().decode()  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=2
                ) as answer:
                    assert answer.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "make run never served"
                time.sleep(0.3)

        if stop == "ctrl-c":  # the terminal sends SIGINT to the whole group
            os.killpg(make.pid, signal.SIGINT)
        else:  # a supervisor, or `kill`, stops make alone
            make.send_signal(signal.SIGTERM)

        make.wait(timeout=20)
        deadline = time.monotonic() + 20
        while _group_alive(make.pid):  # the server and the outbox worker too
            assert time.monotonic() < deadline, "processes of make run were left"
            time.sleep(0.1)
    finally:
        if make.poll() is None or _group_alive(make.pid):
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        make.stdout.close()  # type: ignore[union-attr]

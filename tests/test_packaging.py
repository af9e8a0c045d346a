"""The wheel works outside the repository (migrations, templates, static inside)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until_healthy

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build the wheel and install it into a new venv; return the venv's python."""
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(build),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = build.glob("exit_survey-*.whl")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # As a user installs it: the wheel and the dependencies it declares (pinned
    # by the lock file), nothing borrowed from the test environment.
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",
            str(REPO / "requirements.lock"),
            str(wheel),
        ],
        check=True,
        timeout=600,
    )
    return python


def test_the_installed_wheel_migrates_and_serves_from_anywhere(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SURVEY_", "FLASK_", "PYTHON"))
    }
    env |= {
        "SURVEY_SECRET_KEY": "packaging-test",
        "SURVEY_BASE_URL": "http://survey.test",
        "SURVEY_INSTANCE_PATH": str(tmp_path / "instance"),
    }

    where = subprocess.run(
        [str(installed), "-c", "import survey; print(survey.__file__)"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(REPO) not in where, "the repository leaked onto sys.path"

    upgrade = subprocess.run(
        [str(installed), "-m", "flask", "--app", "survey", "db", "upgrade"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert (tmp_path / "instance" / "survey.sqlite3").exists()

    port = free_port()
    server = subprocess.Popen(
        [
            str(installed),
            "-m",
            "gunicorn",
            "survey:create_app()",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
        ],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, server)
        with urllib.request.urlopen(f"{base}/static/style.css", timeout=5) as response:
            assert b":focus-visible" in response.read()
        try:
            urllib.request.urlopen(f"{base}/s/not-a-token", timeout=5)
        except urllib.error.HTTPError as error:  # the page is rendered from a template
            assert error.code == 404
            assert b"This link does not work" in error.read()
            error.close()
        # The catalogs are compiled into the wheel: a German browser reads German.
        request = urllib.request.Request(
            f"{base}/no-such-page", headers={"Accept-Language": "de"}
        )
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError as error:
            assert error.code == 404
            assert b'<html lang="de">' in (page := error.read())
            assert b"Page not found" not in page
            error.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()

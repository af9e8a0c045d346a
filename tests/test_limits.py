"""Request bodies are held to a limit before anything reads them."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from survey.answers.models import Response
from survey.departures.models import Departure
from tests.conftest import SECRET, free_port, wait_until_healthy
from tests.factories import (
    csrf_token,
    hidden_fields,
    login,
    make_consenting,
    make_departure,
    make_token,
    make_user,
    survey_path,
)

REPO = Path(__file__).resolve().parent.parent


class UnreadableBody(io.RawIOBase):
    """A request body of ``length`` bytes that fails the test if anyone reads it."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.length + offset if whence == 2 else offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, _buffer: Any) -> int:
        raise AssertionError("the body was read")


def post_unread(client, path: str, length: int, **headers: str) -> Any:
    """POST a body of ``length`` bytes that must never be read."""
    return client.post(
        path,
        input_stream=UnreadableBody(length),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


def post_chunked(
    client, path: str, body: bytes, content_type: str, headers: Any = ()
) -> Any:
    """POST ``body`` without a length, as a chunked request reaches the app."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked", **dict(headers)},
        environ_overrides={"wsgi.input_terminated": True},
    )


def post_huge_multipart(client, path: str) -> Any:
    """Announce a 300 MB upload; fail the test if any of it is read."""
    return post_unread(
        client, path, 300_000_000, **{"Content-Type": "multipart/form-data; boundary=x"}
    )


def count(session, model) -> int:
    session.rollback()  # a fresh snapshot
    return session.scalar(select(func.count()).select_from(model))


def test_a_body_too_large_for_the_survey_is_refused_unread(app, client, session):
    path = survey_path(app, make_departure(app))
    limit = app.config["PUBLIC_MAX_BODY_BYTES"]
    assert limit <= 256 * 1024  # small: a few answers, never megabytes
    refused = post_unread(client, path, limit + 1)
    assert refused.status_code == 413
    page = refused.get_data(as_text=True)
    assert "larger than this page accepts" in page
    assert "<html" in page.lower()  # our page, not a bare error
    assert count(session, Response) == 0


def test_a_long_field_on_the_survey_is_refused(app, client, session):
    path = survey_path(app, make_departure(app))
    fields = hidden_fields(client.get(path).get_data(as_text=True))
    big = "x" * (app.config["PUBLIC_MAX_BODY_BYTES"] + 1)
    refused = client.post(path, data={**fields, "reason": "other", "reason_other": big})
    assert refused.status_code == 413
    assert count(session, Response) == 0


def test_the_survey_still_takes_its_longest_answers(app, client, session):
    """The limit leaves room for every field at its longest, in any script."""
    departure = make_departure(app)
    path = survey_path(app, departure)
    fields = hidden_fields(client.get(path).get_data(as_text=True))
    answered = client.post(path, data={**fields, "reason": "switched"})
    assert answered.status_code == 303
    more = path + "/more"
    fields = hidden_fields(client.get(more).get_data(as_text=True))
    saved = client.post(
        more,
        data={
            **fields,
            "details": "語" * 5000,
            "destination": "competitor",
            "destination_name": "語" * 200,
            "follow_up": "語" * 1000,
        },
    )
    assert saved.status_code == 303
    session.rollback()
    assert session.scalar(select(Response.details)) == "語" * 5000


def test_an_unknown_page_never_reads_the_body(client):
    assert post_unread(client, "/no-such-page", 300_000_000).status_code == 404


def test_a_staff_form_too_large_is_refused_unread(make_app):
    # Smaller than the other areas' limits (and so than Flask's own): only the
    # app's guard, before any form is read, can refuse it.
    app = make_app(FORM_MAX_BODY_BYTES=4096)
    client = app.test_client()
    assert login(client, make_user(app, "admin").email).status_code == 302
    refused = post_unread(client, "/admin/users", 4097)
    assert refused.status_code == 413
    assert "<h1>Too much to send</h1>" in refused.get_data(as_text=True)
    assert post_huge_multipart(client, "/admin/survey").status_code == 413


def test_signed_out_forms_have_the_survey_s_small_limit(make_app):
    """The sign-in is anyone's to post: not the staff's larger limit."""
    app = make_app(PUBLIC_MAX_BODY_BYTES=4096)
    client = app.test_client()
    for path in ("/login", "/admin/users"):
        refused = post_unread(client, path, 4097)
        assert refused.status_code == 413, path
        assert "<h1>Too much to send</h1>" in refused.get_data(as_text=True)
    assert post_huge_multipart(client, "/login").status_code == 413
    assert login(client, make_user(app, "admin").email).status_code == 302


def test_a_postmortem_at_its_longest_fits_the_staff_limit(app, client, session):
    """Ten texts at their longest, in a script of two-byte letters, go in."""
    from survey.review.models import Postmortem
    from survey.review.postmortems import TEXT_FIELDS
    from survey.staff_pages.review_forms import LONG_TEXT

    [longest] = [v.max for v in LONG_TEXT if hasattr(v, "max")]
    departure = make_consenting(app)
    assert login(client, make_user(app, "csm").email).status_code == 302
    page = f"/review/{departure.public_id}"
    fields = hidden_fields(client.get(page).get_data(as_text=True))
    texts = dict.fromkeys(TEXT_FIELDS, "é" * longest)
    saved = client.post(
        f"{page}/postmortem", data={**fields, **texts, "intent": "save"}
    )
    assert saved.status_code == 302
    session.rollback()
    postmortem = session.scalar(select(Postmortem))
    assert all(getattr(postmortem, name) == "é" * longest for name in TEXT_FIELDS)


def test_a_chunked_form_over_the_limit_is_refused_not_cut(app, client, session):
    path = survey_path(app, make_departure(app))
    token = csrf_token(client.get(path).get_data(as_text=True))
    limit = app.config["PUBLIC_MAX_BODY_BYTES"]
    body = f"csrf_token={token}&reason=other&reason_other=".encode()
    body += b"x" * (limit - len(body) + 1)
    refused = post_chunked(client, path, body, "application/x-www-form-urlencoded")
    assert refused.status_code == 413
    assert count(session, Response) == 0
    fits = post_chunked(
        client,
        path,
        f"csrf_token={token}&reason=switched".encode(),
        "application/x-www-form-urlencoded",
    )
    assert fits.status_code == 303
    assert count(session, Response) == 1


def test_a_chunked_api_body_over_the_limit_is_called_too_large(app, client, session):
    writer = {"Authorization": f"Bearer {make_token(app, 'departures:write')}"}
    limit = app.config["API_MAX_BODY_BYTES"]
    body = b'{"external_id": "sub_1", "contact_email": "a@example.com", "company": "'
    body += b"x" * limit + b'"}'
    refused = post_chunked(
        client, "/api/v1/departures", body, "application/json", headers=writer
    )
    assert refused.status_code == 413
    answer = refused.get_json()
    assert answer["error"] == "too_large"
    assert "larger than" in answer["message"]
    assert answer["fields"]["body"]
    assert count(session, Departure) == 0
    small = b'{"external_id": "sub_1", "contact_email": "a@example.com"}'
    recorded = post_chunked(
        client, "/api/v1/departures", small, "application/json", headers=writer
    )
    assert recorded.status_code == 201
    assert count(session, Departure) == 1


def test_an_api_body_too_large_is_refused_unread(app, client):
    writer = {"Authorization": f"Bearer {make_token(app, 'departures:write')}"}
    limit = app.config["API_MAX_BODY_BYTES"]
    refused = post_unread(
        client,
        "/api/v1/departures",
        limit + 1,
        **writer,
        **{"Content-Type": "application/json"},
    )
    assert refused.status_code == 413
    assert refused.get_json()["error"] == "too_large"


def test_staff_forms_under_the_limit_still_work(app, client):
    user = make_user(app, "admin")
    assert login(client, user.email).status_code == 302


# --- a real gunicorn, as the README runs it ------------------------------------


@pytest.fixture
def gunicorn(database_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """Serve the app with gunicorn and the shipped production settings."""
    port = free_port()
    env = {
        **os.environ,
        "SURVEY_SECRET_KEY": SECRET,
        "SURVEY_BASE_URL": "https://survey.test",
        "SURVEY_DATABASE_URL": database_url,
        "SURVEY_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:survey.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        yield "127.0.0.1", port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _exchange(address: tuple[str, int], head: str) -> str:
    """Send a request's head only (its body never comes); return the status line."""
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(head.encode())
        try:
            answer = connection.recv(4096).decode(errors="replace")
        except TimeoutError:
            pytest.fail(f"no answer without the body: {head.splitlines()[0]}")
    return answer.split("\r\n", 1)[0]


def _head(method: str, path: str, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: survey.test"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_gunicorn_answers_huge_bodies_without_reading_them(app, gunicorn):
    path = survey_path(app, make_departure(app))
    form = "application/x-www-form-urlencoded"
    for target, status in (
        ("/no-such-page", "404"),
        ("/login", "413"),
        (path, "413"),
        ("/api/v1/departures", "413"),
    ):
        head = _head(
            "POST", target, **{"Content-Type": form, "Content-Length": "300000000"}
        )
        assert _exchange(gunicorn, head).split()[1] == status, target
    assert _exchange(gunicorn, _head("GET", "/healthz")).split()[1] == "200"


def test_gunicorn_refuses_oversized_headers(gunicorn):
    head = _head("GET", "/healthz", **{"X-Padding": "a" * 9000})
    assert _exchange(gunicorn, head).split()[1] in {"400", "431"}
    many = {f"X-Header-{n}": "1" for n in range(60)}
    assert _exchange(gunicorn, _head("GET", "/healthz", **many)).split()[1] in {
        "400",
        "431",
    }


# --- the README's proxy in front of it -------------------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def readme_nginx_server(upstream: int, listen: int) -> str:
    """Return the README's nginx ``server`` for the app, served on plain HTTP."""
    readme = (REPO / "README.md").read_text()
    [example] = re.findall(r"```nginx\n(.*?)```", readme, flags=re.DOTALL)
    server = example.split("\nserver {")[0]  # the HTTPS one, not the redirect
    server = re.sub(r"\n\s*(listen|ssl_\w+)\s[^;]*;", "", server)
    server = server.replace("server {", f"server {{\n    listen 127.0.0.1:{listen};")
    return server.replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")


@contextlib.contextmanager
def stalled_bodies(address: tuple[str, int], count: int) -> Iterator[None]:
    """Hold ``count`` connections that announce a body and never send it."""
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            connection = stack.enter_context(
                socket.create_connection(address, timeout=10)
            )
            connection.sendall(
                _head("POST", "/login", **{"Content-Length": "100000"}).encode()
                + b"email=a"
            )
        yield


def answers_health(address: tuple[str, int], seconds: float) -> bool:
    """Return whether /healthz answers 200 within ``seconds``."""
    try:
        with socket.create_connection(address, timeout=seconds) as connection:
            connection.sendall(_head("GET", "/healthz").encode())
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed")
def test_the_readme_proxy_keeps_slow_bodies_away_from_gunicorn(gunicorn, tmp_path):
    # Without it, a worker's threads (8 here) each wait on a stalled body.
    with stalled_bodies(gunicorn, 10):
        assert not answers_health(gunicorn, 3), "gunicorn alone did not freeze"
    assert answers_health(gunicorn, 10)

    port = free_port()
    root = "user root;\n" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(
        f"""{root}daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
{readme_nginx_server(gunicorn[1], port)}
}}
"""
    )
    proxy = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        address = ("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while not answers_health(address, 1):
            assert proxy.poll() is None, proxy.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        with stalled_bodies(address, 30):
            assert answers_health(address, 3)
            assert answers_health(gunicorn, 3)
        head = _head(
            "POST",
            "/login",
            **{"Content-Length": "3000000", "Content-Type": "text/plain"},
        )
        assert _exchange(address, head).split()[1] == "413"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        proxy.stderr.close()

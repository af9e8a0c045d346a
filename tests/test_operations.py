"""What an operator sees: request ids, JSON log lines, /metrics, /readyz."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from survey import db, logs, outbox
from survey.outbox import OutboxMessage
from tests.conftest import LINK_TOKEN, SECRET, free_port, wait_until_healthy
from tests.factories import (
    PASSWORD,
    auth,
    login,
    make_departure,
    make_token,
    make_user,
    submit,
    survey_path,
)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Our log lines, as SURVEY_LOG_FORMAT=json writes them, in a buffer."""
    buffer = io.StringIO()
    handler = logs.handler("json")
    handler.setStream(buffer)
    handler.set_name("test-json-lines")
    logger = logging.getLogger("survey")
    logger.addHandler(handler)
    yield buffer
    logger.removeHandler(handler)


def parsed(buffer: io.StringIO) -> list[dict]:
    """Every line of the buffer, each one JSON object."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


# --- request ids and log lines -------------------------------------------------


def test_every_answer_carries_a_request_id_plain_ones_kept(client):
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.2"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a.2"
    for odd in ("", "has space", "x" * 65, "<script>"):
        made = client.get("/healthz", headers={"X-Request-ID": odd})
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"]), odd
    first, second = client.get("/no-such-page"), client.get("/no-such-page")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_request_ids_differ_between_forked_workers():
    # gunicorn forks its workers from one process: ids drawn from the same
    # random state would repeat in every worker.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the forked worker)
        os.write(write_end, logs.new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as pipe:
        theirs = pipe.read()
    ours = logs.new_request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", theirs)
    assert theirs != ours


def test_log_lines_are_json_naming_the_request_and_route(app, client, json_lines):
    token = make_token(app, "departures:write")
    recorded = client.post(
        "/api/v1/departures",
        json={"external_id": "sub_json_1", "contact_email": "a@example.com"},
        headers=auth(token) | {"X-Request-ID": "req-json-1"},
    )
    assert recorded.status_code == 201
    lines = parsed(json_lines)
    mine = [line for line in lines if line["request_id"] == "req-json-1"]
    assert mine, lines
    for line in mine:
        assert set(line) >= {"time", "level", "logger", "message", "route"}
        assert line["route"] == "/api/v1/departures"
        assert line["logger"].startswith("survey")


def test_the_worker_names_the_request_that_created_its_message(
    make_app, json_lines, session
):
    # No mail server listens there: the send fails and is logged.
    app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())
    token = make_token(app, "departures:write")
    recorded = app.test_client().post(
        "/api/v1/departures",
        json={"external_id": "sub_json_2", "contact_email": "b@example.com"},
        headers=auth(token) | {"X-Request-ID": "req-from-api"},
    )
    assert recorded.status_code == 201
    [message] = session.query(OutboxMessage).all()
    assert message.request_id == "req-from-api"
    with app.app_context():
        report = outbox.deliver_due()
    assert report.handled == 1
    worker_lines = [
        line
        for line in parsed(json_lines)
        if line["logger"] == "survey.outbox" and "not sent" in line["message"]
    ]
    assert [line["request_id"] for line in worker_lines] == ["req-from-api"]


def test_no_log_line_holds_a_link_a_password_or_an_answer(make_app, smtp, json_lines):
    app = make_app(MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port)
    departure = make_departure(app, contact_email="c@example.com")
    path = survey_path(app, departure)
    customer = app.test_client()
    answer = "Words only the customer wrote 7c1f"
    sent = submit(customer, path, {"reason": "other", "reason_other": answer})
    assert sent.status_code == 303
    more = submit(customer, f"{path}/more", {"details": answer + " again"})
    assert more.status_code == 303
    staff = app.test_client()
    user = make_user(app, "admin")
    assert login(staff, user.email, "wrong password 4d2e").status_code == 200
    assert login(staff, user.email).status_code == 302
    with app.app_context():
        assert outbox.deliver_due().handled >= 1
    text = json_lines.getvalue()
    assert text, "nothing was logged"
    token = path.rsplit("/", 1)[1]
    for secret in (token, answer, PASSWORD, "wrong password 4d2e"):
        assert secret not in text


# --- /metrics ---------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a scrape, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client, token: str) -> dict:
    response = client.get("/metrics", headers=auth(token))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_gunicorn_s_own_lines_are_json_too(app, database_url, tmp_path: Path):
    """Under the shipped settings with SURVEY_LOG_FORMAT=json, every line on
    stderr, gunicorn's (booting, stopping) and the app's, is one JSON object;
    no request line (which would carry a survey link) is written."""
    path = survey_path(app, make_departure(app))
    port = free_port()
    stderr = tmp_path / "gunicorn.stderr"
    env = {
        **os.environ,
        "SURVEY_SECRET_KEY": SECRET,
        "SURVEY_BASE_URL": "https://survey.test",
        "SURVEY_DATABASE_URL": database_url,
        "SURVEY_INSTANCE_PATH": str(tmp_path / "instance"),
        "SURVEY_LOG_FORMAT": "json",
    }
    with stderr.open("wb") as errors:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn"),
                *("-c", "python:survey.gunicorn_conf"),
                *("--bind", f"127.0.0.1:{port}", "--workers", "1"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=errors,
            stderr=errors,
        )
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", server)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as page:
                assert page.status == 200
        finally:
            server.terminate()
            assert server.wait(timeout=30) == 0
    lines = stderr.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    loggers = {record["logger"] for record in records}
    assert "gunicorn.error" in loggers, lines  # "Booting worker", "Shutting down"
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
    assert not any(LINK_TOKEN.search(line) for line in lines)


def test_metrics_are_refused_without_an_allowed_address_or_token(app, client):
    assert client.get("/metrics").status_code == 401
    other = make_token(app, "responses:read")
    refused = client.get("/metrics", headers=auth(other))
    assert refused.status_code == 403
    assert "metrics:read" in refused.get_data(as_text=True)
    assert client.get("/metrics", headers=auth("es_nonsense")).status_code == 401


def test_an_allowed_network_reads_metrics_without_a_token(make_app):
    app = make_app(METRICS_ALLOW=["10.1.0.0/16"])
    inside = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert inside.status_code == 200
    outside = app.test_client().get(
        "/metrics", environ_base={"REMOTE_ADDR": "10.2.0.1"}
    )
    assert outside.status_code == 401


def test_metrics_count_requests_sends_and_refused_sign_ins(app, mail_app, smtp):
    client = mail_app.test_client()
    token = make_token(mail_app, "metrics:read")
    healthz = (
        "survey_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    sent = (
        "survey_outbox_attempts_total",
        (("kind", "invitation"), ("outcome", "sent")),
    )
    refused = ("survey_sign_in_failures_total", ())
    unrouted = (
        "survey_http_requests_total",
        (("method", "GET"), ("route", "(no route)"), ("status", "404")),
    )
    before = scrape(client, token)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    for _ in range(2):
        assert client.get("/no-such-page").status_code == 404
    make_departure(mail_app)
    user = make_user(mail_app, "csm")
    assert login(client, user.email, "not the password").status_code == 200
    waiting = scrape(client, token)
    pending = (
        "survey_outbox_messages",
        (("kind", "invitation"), ("status", "pending")),
    )
    assert waiting[pending] == 1
    assert waiting[("survey_outbox_oldest_pending_seconds", ())] >= 0
    with mail_app.app_context():
        assert outbox.deliver_due().handled == 1
    after = scrape(client, token)
    assert after[healthz] - before.get(healthz, 0) == 3
    assert after[unrouted] - before.get(unrouted, 0) == 2
    assert after[sent] - before.get(sent, 0) == 1
    assert after[refused] - before.get(refused, 0) == 1
    assert pending not in after  # nothing waits now
    assert len(smtp.messages) == 1


def test_no_metric_label_carries_a_token_a_path_or_an_address(app, client):
    departure = make_departure(app)
    path = survey_path(app, departure)
    assert client.get(path).status_code == 200
    token = make_token(app, "metrics:read")
    text = client.get("/metrics", headers=auth(token)).get_data(as_text=True)
    assert 'route="/s/<token>"' in text
    for secret in (path.rsplit("/", 1)[1], token, "127.0.0.1", departure.public_id):
        assert secret not in text


# --- /readyz ------------------------------------------------------------------------


def test_ready_only_when_the_schema_is_at_the_newest_migration(
    make_app: type[Flask], tmp_path, runner
):
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'ready.sqlite3'}")
    with app.app_context():
        db.engine()
    cli = app.test_cli_runner()
    assert cli.invoke(args=["db", "upgrade", "e2f4a6b8c0d3"]).exit_code == 0
    behind = app.test_client().get("/readyz")
    assert behind.status_code == 503
    assert behind.get_json()["migrations"] == "behind"
    assert app.test_client().get("/healthz").status_code == 200  # still alive
    assert cli.invoke(args=["db", "upgrade"]).exit_code == 0
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ok",
        "database": "ok",
        "migrations": "at head",
    }

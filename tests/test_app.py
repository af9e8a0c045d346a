"""The application as a whole: configuration checks, headers, health."""

from __future__ import annotations

import os
import subprocess
import sys

import flask
import pytest
from flask.sessions import SecureCookieSessionInterface

from survey import create_app
from survey.config import ConfigError


def _clean_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("SURVEY_", "FLASK_"))
    }


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    with pytest.raises(ConfigError, match="SURVEY_SECRET_KEY is not set"):
        create_app({"ENV": "production", "INSTANCE_PATH": str(tmp_path)})


def test_the_refusal_is_one_line_on_the_command_line(tmp_path):
    env = _clean_env() | {"SURVEY_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "survey", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "SURVEY_SECRET_KEY is not set" in result.stderr


def test_development_runs_without_a_key_and_keeps_the_one_it_made(tmp_path):
    first = create_app({"ENV": "development", "INSTANCE_PATH": str(tmp_path)})
    second = create_app({"ENV": "development", "INSTANCE_PATH": str(tmp_path)})
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) == 64


def test_settings_come_from_survey_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_SECRET_KEY", "12345")  # stays a string
    monkeypatch.setenv("SURVEY_LINK_MAX_AGE_DAYS", "7")
    monkeypatch.setenv("SURVEY_MAIL_SERVER", "smtp.example.com")
    monkeypatch.setenv("SURVEY_BASE_URL", "https://survey.example.com")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SECRET_KEY"] == "12345"
    assert app.config["LINK_MAX_AGE_DAYS"] == 7
    assert app.config["MAIL_SUPPRESS_SEND"] is False
    assert app.config["SESSION_COOKIE_SECURE"] is True


PRODUCTION = {"SECRET_KEY": "k", "BASE_URL": "https://survey.example.com"}


def test_production_refuses_to_start_without_its_public_address(tmp_path):
    with pytest.raises(ConfigError, match="SURVEY_BASE_URL is not set"):
        create_app({"SECRET_KEY": "k", "INSTANCE_PATH": str(tmp_path)})


@pytest.mark.parametrize(
    "bad", ["survey.example.com", "ftp://survey.example.com", "https://x.example/?a=1"]
)
def test_a_base_url_that_cannot_make_links_is_refused(tmp_path, bad):
    with pytest.raises(ConfigError, match="SURVEY_BASE_URL must"):
        create_app(PRODUCTION | {"BASE_URL": bad, "INSTANCE_PATH": str(tmp_path)})


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ("12345", ["12345"]),  # a numeric key stays the exact string
        ("old-key", ["old-key"]),
        ('["one", "two"]', ["one", "two"]),
    ],
)
def test_fallback_keys_are_read_as_strings(tmp_path, monkeypatch, raw, keys):
    monkeypatch.setenv("SURVEY_SECRET_KEY_FALLBACKS", raw)
    app = create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SECRET_KEY_FALLBACKS"] == keys


def test_fallback_keys_that_are_not_strings_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_SECRET_KEY_FALLBACKS", "[1, 2]")
    with pytest.raises(ConfigError, match="SURVEY_SECRET_KEY_FALLBACKS must"):
        create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})


def test_the_production_mail_worker_needs_a_mail_server(tmp_path):
    env = _clean_env() | {
        "SURVEY_INSTANCE_PATH": str(tmp_path),
        "SURVEY_SECRET_KEY": "k",
        "SURVEY_BASE_URL": "https://survey.example.com",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "survey", "outbox", "send", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "SURVEY_MAIL_SERVER is not set" in result.stderr


@pytest.mark.parametrize("bad", ["0", "-3", '"ten"', "true"])
@pytest.mark.parametrize(
    "name", ["LINK_MAX_AGE_DAYS", "PUBLIC_MAX_BODY_BYTES", "FORM_MAX_BODY_BYTES"]
)
def test_a_bad_number_is_refused_clearly(tmp_path, monkeypatch, name, bad):
    monkeypatch.setenv(f"SURVEY_{name}", bad)
    with pytest.raises(ConfigError, match=f"SURVEY_{name} must be a positive"):
        create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})


@pytest.mark.parametrize("name", ["HSTS_SECONDS", "PROXY_COUNT"])
def test_a_switch_is_no_number(tmp_path, monkeypatch, name):
    monkeypatch.setenv(f"SURVEY_{name}", "true")
    with pytest.raises(ConfigError, match=f"SURVEY_{name} must be 0 or more"):
        create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})


@pytest.mark.parametrize("bad", ["0", "-1", "true", '"often"'])
def test_a_bad_outbox_poll_interval_is_refused_clearly(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("SURVEY_OUTBOX_POLL_SECONDS", bad)
    with pytest.raises(ConfigError, match="SURVEY_OUTBOX_POLL_SECONDS must be"):
        create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})


def test_a_bad_retry_base_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_OUTBOX_RETRY_BASE_SECONDS", "0.5")
    with pytest.raises(ConfigError, match="SURVEY_OUTBOX_RETRY_BASE_SECONDS must"):
        create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})


def test_the_workers_wait_while_the_database_is_down_stays_bounded():
    from survey.cli import MAX_RETRY_SECONDS, retry_delay

    assert retry_delay(5, 1) == 10
    assert retry_delay(0.5, 3) == 4
    # A fractional interval after days of outage: no OverflowError.
    assert retry_delay(0.5, 5000) == MAX_RETRY_SECONDS


def test_healthz_answers_when_the_database_does(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_says_503_when_the_database_is_gone(make_app, tmp_path):
    app = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


UNREACHABLE = (
    "postgresql+psycopg://nobody@127.0.0.1:1/none",
    "sqlite:////no-such-folder/survey.sqlite3",
)


@pytest.mark.parametrize("url", UNREACHABLE)
def test_the_api_says_retry_later_when_the_database_is_gone(make_app, url):
    app = make_app(DATABASE_URL=url)
    response = app.test_client().post(
        "/api/v1/departures",
        json={"external_id": "sub_1", "contact_email": "a@example.com"},
        headers={"Authorization": "Bearer es_whatever"},
    )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"] == "busy"


@pytest.mark.parametrize("url", UNREACHABLE)
def test_pages_say_retry_later_when_the_database_is_gone(make_app, url):
    app = make_app(DATABASE_URL=url)
    client = app.test_client()
    with app.test_request_context():
        from survey import links

        survey = links.survey_url("a" * 16).removeprefix("http://survey.test")
    response = client.get(survey)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "try again" in response.get_data(as_text=True)


def test_a_database_without_our_tables_is_a_bug_not_a_retry(make_app, tmp_path):
    """Only "not now" errors are a 503: a missing table is a 500, for the logs."""
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    response = app.test_client().post(
        "/api/v1/departures",
        json={"external_id": "sub_1", "contact_email": "a@example.com"},
        headers={"Authorization": "Bearer es_whatever"},
    )
    assert response.status_code == 500
    assert "Retry-After" not in response.headers


def test_api_answers_are_never_stored_by_caches(app, client):
    for path in ("/api/v1/departures/abc", "/api/v1/no-such-thing"):
        response = client.get(path)
        assert response.status_code in {401, 404}, path
        assert response.headers["Cache-Control"] == "no-store", path
    with client.get("/static/style.css") as static:
        assert "no-store" not in static.headers.get("Cache-Control", "")


def test_https_service_tells_browsers_to_keep_to_https(make_app):
    secure = make_app(BASE_URL="https://survey.example.com").test_client()
    header = secure.get("/healthz").headers["Strict-Transport-Security"]
    assert header == f"max-age={365 * 24 * 3600}"
    plain = make_app(BASE_URL="http://127.0.0.1:5000").test_client()
    assert "Strict-Transport-Security" not in plain.get("/healthz").headers
    off = make_app(BASE_URL="https://survey.example.com", HSTS_SECONDS=0)
    assert "Strict-Transport-Security" not in off.test_client().get("/").headers


def test_every_page_has_the_security_headers(client):
    for path in ("/healthz", "/no-such-page", "/static/style.css"):
        with client.get(path) as response:
            headers = response.headers
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"


def test_an_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "<h1>Page not found</h1>" in page
    assert "check that the whole link was copied" in page
    assert "requested URL" not in page  # Werkzeug's own words


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (403, "You cannot open this page"),
        (410, "This page is no longer here"),
        (500, "Something went wrong"),
    ],
)
def test_errors_a_customer_may_meet_are_in_our_words(make_app, status, title):
    app = make_app()

    @app.get("/fails")
    def fails():
        if status == 500:
            raise RuntimeError("kaboom")
        flask.abort(status)

    response = app.test_client().get("/fails")
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert f"<h1>{title}</h1>" in page
    assert "kaboom" not in page
    assert "server" not in page.split("<main", 1)[1]  # no framework wording
    # In the customer's language when their browser asks for it.
    from tests.test_languages import translated  # it imports this module

    german = app.test_client().get("/fails", headers={"Accept-Language": "de"})
    assert german.status_code == status
    assert f"<h1>{translated('de', title)}</h1>" in german.get_data(as_text=True)


@pytest.mark.parametrize("vary", [None, "Accept-Language", "Cookie"])
def test_an_untouched_session_is_saved_as_flask_saves_it(app, vary):
    stock = SecureCookieSessionInterface()
    saved = []
    for interface in (app.session_interface, stock):
        with app.test_request_context("/"):
            session = interface.open_session(app, flask.request)
            session.accessed = True  # read, as Flask-Login reads it on every page
            response = app.response_class("ok")
            if vary:
                response.headers["Vary"] = vary
            interface.save_session(app, session, response)
            saved.append(
                (response.headers.getlist("Vary"), response.headers.get("Set-Cookie"))
            )
    assert saved[0] == saved[1]
    assert "Cookie" in saved[0][0][0]


def test_a_survey_page_varies_on_cookie_and_sets_none(app, client):
    from tests.factories import make_departure, survey_path

    response = client.get(survey_path(app, make_departure(app)))
    assert response.status_code == 200
    assert response.headers.getlist("Vary") == ["Cookie"]
    assert "Set-Cookie" not in response.headers

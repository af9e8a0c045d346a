"""Configuration: defaults, the instance folder, ``SURVEY_*`` variables, checks."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask

from survey import logs
from survey.i18n import shipped_languages

#: Environments in which the service may run without a configured secret key.
RELAXED_ENVIRONMENTS = frozenset({"development", "testing"})


class ConfigError(SystemExit):
    """The configuration cannot work: stop, saying why in one line.

    A SystemExit, so ``flask``, ``gunicorn`` and ``python`` print just the
    message instead of a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"exit-survey: configuration error: {message}")


_RAW_STRING_KEYS = (
    "SECRET_KEY",
    "MAIL_USERNAME",
    "MAIL_PASSWORD",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "BASE_URL",
)

DEFAULTS: dict[str, Any] = {
    #: ``production`` (default), ``development`` or ``testing``.
    "ENV": "production",
    "DATABASE_URL": None,  # None: SQLite file in the instance folder
    "BASE_URL": None,  # None: required in production; the dev server elsewhere
    "LINK_MAX_AGE_DAYS": 30,
    "WITHDRAW_LINK_MAX_AGE_DAYS": 3650,
    "FRESH_LINK_INTERVAL_MINUTES": 60,
    "SECRET_KEY_FALLBACKS": [],
    "MAIL_SERVER": None,
    "MAIL_PORT": 25,
    "MAIL_USE_TLS": False,
    "MAIL_USE_SSL": False,
    "MAIL_USERNAME": None,
    "MAIL_PASSWORD": None,
    "MAIL_DEFAULT_SENDER": "Exit Survey <survey@localhost>",
    "MAIL_TIMEOUT_SECONDS": 10,
    #: With the base below, 12 attempts span about 14 hours: a mail server
    #: down overnight fails no message.
    "OUTBOX_MAX_ATTEMPTS": 12,
    "OUTBOX_RETRY_BASE_SECONDS": 30,
    "OUTBOX_BATCH_SIZE": 100,
    "OUTBOX_SENDERS": 4,
    "OUTBOX_POLL_SECONDS": 5,
    #: A worker's claim on messages, renewed while it lives: how soon a dead
    #: worker's messages go to another.
    "OUTBOX_LEASE_SECONDS": 60,
    #: Largest request bodies: the API's JSON, the customer's survey forms,
    #: and every other form (staff pages; a postmortem has ten long texts).
    "API_MAX_BODY_BYTES": 64 * 1024,
    "PUBLIC_MAX_BODY_BYTES": 128 * 1024,
    "FORM_MAX_BODY_BYTES": 2 * 1024 * 1024,
    "SQLITE_BUSY_TIMEOUT_SECONDS": 30,
    #: Staff sign-in throttling: failures per address, per client address.
    "LOGIN_WINDOW_MINUTES": 15,
    "LOGIN_MAX_FAILURES": 10,
    "LOGIN_IP_MAX_FAILURES": 50,
    #: argon2id parameters of staff passwords (argon2-cffi's defaults).
    "PASSWORD_TIME_COST": 3,
    "PASSWORD_MEMORY_KIB": 64 * 1024,
    "PASSWORD_PARALLELISM": 4,
    #: A staff login lasts this long (then sign in again).
    "STAFF_SESSION_HOURS": 12,
    #: Unanswered departures enter the review queue this long after the invitation,
    #: when they lost at least this much MRR (minor units).
    "REVIEW_UNANSWERED_AFTER_DAYS": 7,
    "REVIEW_MIN_MRR_CENTS": 0,
    #: Insights flag a stated reason or root cause as recurring when seen at
    #: least this often in the last 30 days, and at least this much (percent)
    #: above its rate per 30 days over the 90 days before.
    "RECURRING_MIN_COUNT": 3,
    "RECURRING_RISE_PERCENT": 50,
    #: The weekly digest goes out on Monday from this hour (0-23) on, in this
    #: time zone (an IANA name such as Europe/Paris).
    "DIGEST_HOUR": 8,
    "DIGEST_TIMEZONE": "UTC",
    #: Erase departures cancelled longer ago than this (None: keep); a person's
    #: newer departure keeps theirs.
    "RETENTION_DAYS": None,
    #: Log lines as plain "text" or as "json" objects, one per line.
    "LOG_FORMAT": "text",
    #: Addresses or networks that may read /metrics without a token (a JSON
    #: list, e.g. ["10.0.0.0/8"]); anyone else needs a metrics:read token.
    "METRICS_ALLOW": [],
    #: Proxies in front of the service that set X-Forwarded-For/-Proto (0: none).
    "PROXY_COUNT": 0,
    #: Strict-Transport-Security max-age sent when BASE_URL is https (0: never).
    "HSTS_SECONDS": 365 * 24 * 3600,
    "COMPANY_NAME": "our team",
    #: Reminders to contacts who have not answered (0 to 2), each this many
    #: days after the email before it went out.
    "REMINDERS": 1,
    #: The customer's language when neither their departure nor their
    #: browser names one we speak.
    "DEFAULT_LOCALE": "en",
    "REMINDER_AFTER_DAYS": 3,
    #: Stripe intake: the endpoint's signing secret (whsec_...), and an API key
    #: (restricted, Customers: read) to read each customer's email and name.
    "STRIPE_WEBHOOK_SECRET": None,
    "STRIPE_API_KEY": None,
    #: Where the stripe package talks to Stripe (tests point it elsewhere).
    "STRIPE_API_BASE": None,
    #: Outgoing webhooks: allow http:// and private, loopback or link-local
    #: addresses (tests, a receiver inside the network); wait this long.
    "WEBHOOKS_ALLOW_PRIVATE": False,
    "WEBHOOK_TIMEOUT_SECONDS": 10,
    "WTF_CSRF_TIME_LIMIT": None,  # the CSRF token lives as long as the session
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": None,  # None: secure except in development and tests
}


def load(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Fill ``app.config``: defaults, instance file, ``SURVEY_*``, then overrides."""
    app.config.update(DEFAULTS)
    app.config.from_pyfile("settings.py", silent=True)
    app.config.from_prefixed_env("SURVEY")
    # from_prefixed_env parses values as JSON; secrets stay the exact strings.
    for key in _RAW_STRING_KEYS:
        if (raw := os.environ.get(f"SURVEY_{key}")) is not None:
            app.config[key] = raw
    if (raw := os.environ.get("SURVEY_SECRET_KEY_FALLBACKS")) is not None:
        app.config["SECRET_KEY_FALLBACKS"] = _key_list(raw)
    if overrides:
        app.config.update(overrides)
    if app.config.get("TESTING"):
        app.config["ENV"] = "testing"
    _derive(app)
    _check(app)
    # Flask's own limit, for a body read anywhere: the largest of ours (each
    # request is held to its area's by survey.security).
    app.config["MAX_CONTENT_LENGTH"] = max(
        app.config[key]
        for key in (
            "API_MAX_BODY_BYTES",
            "PUBLIC_MAX_BODY_BYTES",
            "FORM_MAX_BODY_BYTES",
        )
    )


def _key_list(raw: str) -> list[str] | Any:
    """Read a JSON list of keys, or one key as it is (even if it looks numeric)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return [raw]
    return value if isinstance(value, list) else [raw]


def is_relaxed(app: Flask) -> bool:
    """Return whether the app runs for development or tests."""
    return app.config["ENV"] in RELAXED_ENVIRONMENTS or app.debug


def _derive(app: Flask) -> None:
    config = app.config
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = "sqlite:///" + str(
            Path(app.instance_path) / "survey.sqlite3"
        )
    # Mail is only really sent when a server is configured; Flask-Mail would
    # otherwise also stay silent whenever TESTING is set.
    config["MAIL_SUPPRESS_SEND"] = not config.get("MAIL_SERVER")
    if not config.get("SECRET_KEY") and is_relaxed(app):
        config["SECRET_KEY"] = _development_secret_key(app)
    if not config.get("BASE_URL") and is_relaxed(app):
        config["BASE_URL"] = "http://127.0.0.1:5000"
    if config["SESSION_COOKIE_SECURE"] is None:
        config["SESSION_COOKIE_SECURE"] = not is_relaxed(app)
    if isinstance(config["SECRET_KEY_FALLBACKS"], str):
        config["SECRET_KEY_FALLBACKS"] = [config["SECRET_KEY_FALLBACKS"]]


def _check(app: Flask) -> None:
    config = app.config
    if config["ENV"] not in RELAXED_ENVIRONMENTS | {"production"}:
        raise ConfigError(
            "SURVEY_ENV must be production, development or testing, "
            f"not {config['ENV']!r}."
        )
    if not config.get("SECRET_KEY"):
        raise ConfigError(
            "SURVEY_SECRET_KEY is not set: signed survey links would be forgeable; "
            "set it (e.g. python -c 'import secrets; print(secrets.token_hex(32))')."
        )
    fallbacks = config["SECRET_KEY_FALLBACKS"]
    if not isinstance(fallbacks, list) or not all(
        isinstance(key, str) and key for key in fallbacks
    ):
        raise ConfigError(
            "SURVEY_SECRET_KEY_FALLBACKS must be one key or a JSON list of keys."
        )
    _check_base_url(config.get("BASE_URL"))
    retention = config["RETENTION_DAYS"]
    if retention is not None and (not isinstance(retention, int) or retention <= 0):
        raise ConfigError("SURVEY_RETENTION_DAYS must be a positive whole number.")
    hour = config["DIGEST_HOUR"]
    if not _whole_number(hour) or not 0 <= hour <= 23:
        raise ConfigError("SURVEY_DIGEST_HOUR must be a whole number from 0 to 23.")
    try:
        ZoneInfo(str(config["DIGEST_TIMEZONE"]))
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError(
            "SURVEY_DIGEST_TIMEZONE must be a time zone name such as Europe/Paris."
        ) from None
    if config["DEFAULT_LOCALE"] not in shipped_languages():
        raise ConfigError(
            "SURVEY_DEFAULT_LOCALE must be one of "
            + ", ".join(sorted(shipped_languages()))
            + "."
        )
    if config["LOG_FORMAT"] not in logs.FORMATS:
        raise ConfigError("SURVEY_LOG_FORMAT must be text or json.")
    if isinstance(config["METRICS_ALLOW"], str):
        config["METRICS_ALLOW"] = [config["METRICS_ALLOW"]]
    try:
        config["METRICS_ALLOW"] = [
            ipaddress.ip_network(str(net), strict=False)
            for net in config["METRICS_ALLOW"]
        ]
    except (TypeError, ValueError):
        raise ConfigError(
            "SURVEY_METRICS_ALLOW must be a JSON list of addresses or networks, "
            'e.g. ["10.0.0.0/8"].'
        ) from None
    reminders = config["REMINDERS"]
    if not _whole_number(reminders) or not 0 <= reminders <= 2:
        raise ConfigError("SURVEY_REMINDERS must be 0, 1 or 2.")
    poll = config["OUTBOX_POLL_SECONDS"]
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not poll > 0:
        raise ConfigError("SURVEY_OUTBOX_POLL_SECONDS must be a positive number.")
    for key in (
        "PROXY_COUNT",
        "REVIEW_MIN_MRR_CENTS",
        "HSTS_SECONDS",
        "RECURRING_RISE_PERCENT",
    ):
        if not _whole_number(config[key]) or config[key] < 0:
            raise ConfigError(f"SURVEY_{key} must be 0 or more.")
    for key in (
        "PASSWORD_TIME_COST",
        "PASSWORD_MEMORY_KIB",
        "PASSWORD_PARALLELISM",
        "REVIEW_UNANSWERED_AFTER_DAYS",
        "LOGIN_WINDOW_MINUTES",
        "LOGIN_MAX_FAILURES",
        "LOGIN_IP_MAX_FAILURES",
        "STAFF_SESSION_HOURS",
        "LINK_MAX_AGE_DAYS",
        "WITHDRAW_LINK_MAX_AGE_DAYS",
        "OUTBOX_MAX_ATTEMPTS",
        "OUTBOX_RETRY_BASE_SECONDS",
        "OUTBOX_BATCH_SIZE",
        "OUTBOX_SENDERS",
        "OUTBOX_LEASE_SECONDS",
        "MAIL_PORT",
        "API_MAX_BODY_BYTES",
        "PUBLIC_MAX_BODY_BYTES",
        "FORM_MAX_BODY_BYTES",
        "RECURRING_MIN_COUNT",
        "REMINDER_AFTER_DAYS",
        "WEBHOOK_TIMEOUT_SECONDS",
    ):
        if not _whole_number(config[key]) or config[key] <= 0:
            raise ConfigError(f"SURVEY_{key} must be a positive whole number.")


def _whole_number(value: Any) -> bool:
    """Return whether ``value`` is an int (``true`` from the environment is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_base_url(base_url: Any) -> None:
    if not base_url:
        raise ConfigError(
            "SURVEY_BASE_URL is not set: the links in emails need the service's "
            "public address (e.g. https://survey.example.com)."
        )
    parts = urlsplit(str(base_url))
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(
            f"SURVEY_BASE_URL must be an http(s) address, not {base_url!r}."
        )
    if parts.query or parts.fragment:
        raise ConfigError("SURVEY_BASE_URL must not have a query or a fragment.")


def require_mail_server(app: Flask) -> None:
    """Stop a production mail worker that would only write emails to files."""
    if not app.config.get("MAIL_SERVER") and not is_relaxed(app):
        raise ConfigError(
            "SURVEY_MAIL_SERVER is not set: in production the worker would write "
            "emails to files instead of sending them."
        )


def _development_secret_key(app: Flask) -> str:
    """Return a random key kept in the instance folder, so links survive restarts."""
    path = Path(app.instance_path) / "dev_secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        path.write_text(key)
        path.chmod(0o600)
        return key

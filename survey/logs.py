"""Log lines an operator can follow.

Every request has an id: the caller's ``X-Request-ID`` when it is a plain
one, else a new one; the answer carries it back. Each log line names its
request and route, and the outbox worker's lines about a message name the
request that created it. With ``SURVEY_LOG_FORMAT=json`` the lines are JSON
objects (time, level, logger, message, request_id, route), else plain text.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flask import Flask, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID_HEADER = "X-Request-ID"
#: Where a request's id is kept in its WSGI environ.
REQUEST_ID_ENVIRON = "survey.request_id"
#: A caller's id is kept when it is this plain (it is echoed in a header).
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
FORMATS = ("text", "json")

#: The request a worker is acting for, outside any request (the outbox).
_acting_for: ContextVar[str | None] = ContextVar("survey_request_id", default=None)


def request_id() -> str | None:
    """The id of the request being served, or of the one whose work the
    outbox worker is doing now (None outside both)."""
    if has_request_context():
        named: str | None = request.environ.get(REQUEST_ID_ENVIRON)
        return named
    return _acting_for.get()


@contextmanager
def acting_for(id_of_request: str | None) -> Iterator[None]:
    """Name ``id_of_request`` in the log lines written inside the block."""
    token = _acting_for.set(id_of_request)
    try:
        yield
    finally:
        _acting_for.reset(token)


class RequestContext(logging.Filter):
    """Add ``request_id`` and ``route`` (the URL rule, never the path: a
    survey path carries its token) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id()
        record.route = (
            request.url_rule.rule
            if has_request_context() and request.url_rule is not None
            else None
        )
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, request_id,
    route (and the exception, when there is one)."""
    return JsonFormatter(
        "{levelname}{name}{message}{request_id}{route}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601, UTC
    )


def text_formatter() -> logging.Formatter:
    """A plain line: time, level, logger, request id, message."""
    return logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
    )


def handler(log_format: str) -> logging.Handler:
    """A handler to stderr in ``log_format``, adding the request's context."""
    stream = logging.StreamHandler()
    stream.setFormatter(json_formatter() if log_format == "json" else text_formatter())
    stream.addFilter(RequestContext())
    stream.set_name(f"survey-{log_format}")
    return stream


def configure(log_format: str) -> None:
    """Send our INFO logs to stderr in ``log_format``, unless the host
    (pytest, ...) set up logging and no JSON is asked for."""
    logger = logging.getLogger("survey")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    ours = [h for h in logger.handlers if (h.name or "").startswith("survey-")]
    if any(h.name == f"survey-{log_format}" for h in ours):
        return
    if log_format == "text" and logging.getLogger().handlers and not ours:
        return
    for old in ours:
        logger.removeHandler(old)
    logger.addHandler(handler(log_format))


#: The request id header as the WSGI environ names it.
_REQUEST_ID_KEY = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


def new_request_id() -> str:
    """Return a new request id: 32 random hex digits.

    Unique, not secret: from ``random`` (reseeded in every forked worker),
    not ``uuid4``, whose ``os.urandom`` lets go of the GIL on every request:
    with a worker's threads queueing for it, survey GETs were about 6.5 %
    slower (interleaved A/B under ``make bench``'s load, 2026-12-04).
    """
    return f"{random.getrandbits(128):032x}"


class RequestIds:
    """WSGI middleware giving each request its id (in its environ, as
    ``REQUEST_ID_ENVIRON``) and each answer the id back.

    At the WSGI edge rather than in Flask's request hooks: the two hooks,
    through ``g``, cost survey GETs about 4 % (interleaved A/B in process,
    2026-12-04, with the metrics' hooks moved out the same way).
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        given = environ.get(_REQUEST_ID_KEY, "")
        named = given if _PLAIN_ID.match(given) else new_request_id()
        environ[REQUEST_ID_ENVIRON] = named

        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            return start_response(
                status, [*headers, (REQUEST_ID_HEADER, named)], *exc_info
            )

        return self.app(environ, start)


def init_app(app: Flask) -> None:
    """Give each request its id, and each answer the id back."""
    configure(app.config["LOG_FORMAT"])
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]

"""Domain errors, and the one place that turns errors into HTTP answers.

Under ``/api`` every error is JSON ``{"error", "message", "fields"}``; elsewhere
people get a friendly HTML page. Nothing answers with a bare stack trace.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
from babel.support import LazyProxy
from flask import Flask, g, jsonify, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from survey.i18n import customer_locale, force_locale
from survey.i18n import lazy_gettext as _l

#: Text for a page: a string, or one translated when rendered.
Text = str | LazyProxy

log = logging.getLogger(__name__)


class SurveyError(Exception):
    """Root of the errors our features raise on purpose."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def headers(self) -> dict[str, str]:
        """Return extra response headers (Retry-After, WWW-Authenticate...)."""
        return {}


class InvalidInput(SurveyError):
    """Input that breaks a rule; ``fields`` says which and why."""

    status = 422
    code = "invalid"


class TooLarge(SurveyError):
    """A request body over its limit."""

    status = 413
    code = "too_large"


class NotFound(SurveyError):
    """Nothing by that id (or not for you to see)."""

    status = 404
    code = "not_found"


class Unauthorized(SurveyError):
    """No credentials, or credentials we do not know."""

    status = 401
    code = "unauthorized"


class Forbidden(SurveyError):
    """Known credentials without the needed permission."""

    status = 403
    code = "forbidden"


class Unavailable(SurveyError):
    """Not now: the client should retry after ``retry_after`` seconds."""

    status = 503
    code = "busy"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DatabaseBusy(Unavailable):
    """Too many writers waited too long; the client should retry shortly."""

    def __init__(
        self,
        message: str = "The service is busy; please try again in a moment.",
        retry_after: int = 5,
    ) -> None:
        super().__init__(message, retry_after)


class TooManyRequests(Unavailable):
    """A rate limit was reached."""

    status = 429
    code = "too_many_requests"


def is_api_request() -> bool:
    """Return whether the request is the JSON API's (its errors are JSON)."""
    return request.path.startswith("/api/")


def _json_error(
    status: int, code: str, message: str, fields: dict[str, list[str]] | None = None
) -> tuple[Any, int]:
    return jsonify(error=code, message=message, fields=fields or {}), status


#: What a signed-in staff member is told instead, on the staff side's pages.
_FOR_STAFF = {
    403: ("Not open to your role", "Your role does not open this page."),
    404: ("Page not found", "There is no such page, or nothing at this address now."),
    500: (
        "Something went wrong",
        "Something went wrong on our side, and it was logged. Try again, or "
        "go on from the navigation.",
    ),
}


def _staff_member() -> bool:
    """Whether a signed-in staff member asked (never on a customer's page)."""
    if request.blueprint == "public":
        return False
    try:
        return bool(getattr(current_user, "is_authenticated", False))
    except SQLAlchemyError:  # the database is away: the plain page will do
        return False


def _page(status: int, title: Text, message: Text) -> tuple[str, int]:
    # A staff member stays in the staff layout, with its navigation; anyone
    # else reads it in the page's language, else the browser's: a customer
    # who mistyped a link reads the error in their own.
    if status in _FOR_STAFF and _staff_member():
        try:
            return _rendered(status, *_FOR_STAFF[status], staff_page=True), status
        except Exception:  # the staff layout needs what may have failed
            log.exception("the staff error page failed; the plain one is shown")
    return _rendered(status, title, message, staff_page=False), status


def _rendered(status: int, title: Text, message: Text, *, staff_page: bool) -> str:
    with force_locale(g.get("locale") or _readers_locale(status)):
        return render_template(
            "errors/error.html",
            status=status,
            title=title,
            message=message,
            staff_page=staff_page,
        )


def _readers_locale(status: int) -> str:
    """Return the language of a page whose view set none (``g.locale``): the
    one ``g.find_locale`` finds (left by pages whose address names the
    reader, such as a survey link, for an error met before their view read
    it), else the browser's.

    Not asked on a 503: the database it would read cannot serve now.
    """
    find = g.get("find_locale")
    if find is not None and status != 503:
        try:
            return str(find())
        except Exception:  # the page must still be drawn: the browser's, then
            log.exception("the language of the page's reader could not be found")
    return customer_locale(None)


def handle_survey_error(error: SurveyError) -> Any:
    """Answer a domain error as JSON under /api, or as a page."""
    if is_api_request():
        response, status = _json_error(
            error.status, error.code, error.message, error.fields
        )
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
    else:
        title, message = _words_for(
            error.status, error.code.replace("_", " ").capitalize(), error.message
        )
        response, status = _page(error.status, title, message)
    return response, status, error.headers()


def _words_for(status: int, name: Text, description: Text) -> tuple[Text, Text]:
    """Return the title and message of ``status``'s page: our own words where
    we have them, else ``name`` and ``description`` (an error's English), but
    never on the customer's side, where every error is told in our words."""
    if status in _IN_OUR_WORDS:
        return _IN_OUR_WORDS[status]
    if request.blueprint != "public":  # staff's pages: the error's English says more
        return name, description
    if status in _ON_THE_SURVEY:
        return _ON_THE_SURVEY[status]
    return _ON_THE_SURVEY[400] if status < 500 else _IN_OUR_WORDS[500]


#: Our own words for the errors anyone may meet (Werkzeug's descriptions
#: speak of servers and URLs, our errors' messages are English for the logs
#: and the API); translated for the page's language.
_IN_OUR_WORDS = {
    403: (
        _l("You cannot open this page"),
        _l(
            "This page is not open to you. If a link in one of our emails "
            "brought you here, open our newest email and use its link."
        ),
    ),
    404: (
        _l("Page not found"),
        _l(
            "There is no page at this address. If you copied a link from one "
            "of our emails, check that the whole link was copied."
        ),
    ),
    410: (
        _l("This page is no longer here"),
        _l("What was on this page has been removed."),
    ),
    405: (
        _l("This page cannot do that"),
        _l(
            "This page cannot be used that way. Go back and use the page's own "
            "links and buttons."
        ),
    ),
    413: (
        _l("Too much to send"),
        _l(
            "What you sent is larger than this page accepts. Shorten your "
            "answer and send it again."
        ),
    ),
    500: (
        _l("Something went wrong"),
        _l("Something went wrong on our side. Please try again in a few minutes."),
    ),
    503: (
        _l("Back in a moment"),
        _l("The service is busy or restarting. Please try again in a minute."),
    ),
}


#: Our words for the errors only a customer's page answers with ours (staff
#: read the error's own, more precise English): the survey's forms and guards.
_ON_THE_SURVEY = {
    400: (
        _l("Please try again"),
        _l(
            "This page could not read what it was sent. Go back, reload the page "
            "and send it again."
        ),
    ),
    422: (
        _l("We could not use what you sent"),
        _l(
            "Something in this address or in your answer cannot be used. Go back, "
            "check what you wrote and send it again, or open the link from our "
            "email once more."
        ),
    ),
    429: (
        _l("Too many tries"),
        _l(
            "This page was asked for too often in a short time. Please wait a "
            "little, then try again."
        ),
    ),
}


def _http_page(status: int, name: str, description: str) -> tuple[str, int]:
    return _page(status, *_words_for(status, name, description))


def handle_http_error(error: HTTPException) -> Any:
    """Answer Werkzeug's HTTP errors (404, 405, 413, ...) the same way."""
    status = error.code or 500
    if is_api_request():
        code = (error.name or "error").lower().replace(" ", "_")
        body, _ = _json_error(status, code, str(error.description or ""))
    else:
        body, _ = _http_page(
            status, error.name or "Error", str(error.description or "")
        )
    # Keep what the error says beyond its page: Allow on 405, Retry-After...
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return body, status, headers


def handle_csrf_error(_error: CSRFError) -> Any:
    """Explain a refused form in words a customer understands."""
    return _page(
        400,
        _l("Please try again"),
        _l(
            "This form has expired or was sent from somewhere else. "
            "Go back, reload the page and send it again."
        ),
    )


#: PostgreSQL's codes for "not now": the connection (08), a shutdown or
#: restart (57P01-57P03), a serialization failure or deadlock (40001, 40P01),
#: a lock not available (55P03), too many connections (53300).
_PG_RETRY_LATER = frozenset(
    {"57P01", "57P02", "57P03", "40001", "40P01", "55P03", "53300"}
)
#: SQLite's: the file is locked, or cannot be opened.
_SQLITE_RETRY_LATER = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN}
)


def database_unavailable(error: BaseException | None) -> bool:
    """Return whether ``error`` says the database cannot serve now (a restart, a
    lost connection, a lock given up on): worth a retry, unlike a bug such as a
    missing table, which stays a 500.

    Takes SQLAlchemy's errors and the drivers' own (raised by statements run
    on a DB-API connection directly).
    """
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig
    if isinstance(error, psycopg.Error):
        state = error.sqlstate
        if state is None:  # no answer from the server at all
            return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
        return state.startswith("08") or state in _PG_RETRY_LATER
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_RETRY_LATER
    return False


def handle_unexpected(error: Exception) -> Any:
    """Log anything unexpected and answer 500 without details (503 and
    ``Retry-After`` when the database cannot serve)."""
    if isinstance(error, HTTPException):
        return handle_http_error(error)
    # The route's rule, not the path: a survey path carries the customer's token.
    rule = request.url_rule.rule if request.url_rule else "(no route)"
    if database_unavailable(error):
        log.error("database unavailable on %s %s", request.method, rule, exc_info=True)
        return handle_survey_error(
            Unavailable("The service cannot reach its database; try again shortly.")
        )
    log.exception("unhandled error on %s %s", request.method, rule)
    if is_api_request():
        return _json_error(500, "internal_error", "Something went wrong on our side.")
    return _http_page(500, "Internal Server Error", "")


def init_app(app: Flask) -> None:
    """Register the handlers."""
    app.register_error_handler(SurveyError, handle_survey_error)
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)

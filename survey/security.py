"""What every request and response must satisfy: a bounded body, no NUL in,
safe headers out."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, request, session
from werkzeug.wsgi import get_input_stream

from survey.errors import InvalidInput, TooLarge, is_api_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Only our own scripts, styles and images; no inline code of any kind.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)

#: Sent unless the response sets its own (survey pages send no Referer at all).
DEFAULT_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
)


class DefaultHeaders:
    """WSGI middleware adding ``headers`` to every response that lacks them.

    At the WSGI edge the headers are a plain list, checked in one pass; an
    ``after_request`` hook setting them one by one on Werkzeug's ``Headers``
    made survey GETs about 4 % slower (interleaved A/B, 2026-12-03).
    """

    def __init__(
        self, app: WSGIApplication, headers: Iterable[tuple[str, str]]
    ) -> None:
        self.app = app
        self.headers = [(name.lower(), (name, value)) for name, value in headers]

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            present = {name.lower() for name, _value in headers}
            missing = [pair for key, pair in self.headers if key not in present]
            return start_response(status, headers + missing, *exc_info)

        return self.app(environ, start)


_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


def body_limit() -> int:
    """Return the largest body this request may have, in bytes, by its area.

    The staff's larger limit (a postmortem, a logo) is for signed-in staff
    only: anyone may post the sign-in form, as anyone may post a survey.
    Signed in is judged by the signed session cookie alone (Flask-Login's
    user id in it): loading the user would read the database, and the form
    with it, before the limit is set.
    """
    config = current_app.config
    if is_api_request():
        return int(config["API_MAX_BODY_BYTES"])
    if request.blueprint == "public" or "_user_id" not in session:
        return int(config["PUBLIC_MAX_BODY_BYTES"])
    return int(config["FORM_MAX_BODY_BYTES"])


def _too_large(limit: int) -> TooLarge:
    message = f"The request is larger than this page accepts ({limit:,} bytes)."
    return TooLarge(message, {"body": [message]})


def limit_body() -> None:
    """Hold the request's body to its area's limit (413 past it), before any read.

    A body of known length is judged by its ``Content-Length`` alone. One of
    unknown length (chunked) is read here, up to one byte past the limit, and
    handed on as if its length had been given: Werkzeug would otherwise cut
    it at the limit without a word, and a form or JSON cut short reads as
    something else.
    """
    environ = request.environ
    length = request.content_length
    if length is None and (
        environ["REQUEST_METHOD"] in _BODILESS
        or not environ.get("wsgi.input_terminated")
    ):
        return  # no body, or one Werkzeug will not read at all
    limit = request.max_content_length = body_limit()
    if length is not None:
        if length > limit:
            raise _too_large(limit)
        return
    body = get_input_stream(environ, max_content_length=limit + 1).read()
    if len(body) > limit:
        raise _too_large(limit)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def guard_request() -> None:
    """Check a routed request's body and characters before any view or form.

    A request that matched no route is left to its 404 or 405: nothing reads
    its body.
    """
    if request.routing_exception is not None:
        return
    limit_body()
    refuse_nul_characters()


def refuse_nul_characters() -> None:
    """Refuse a request whose path, query or form fields hold a NUL character.

    No field of ours may hold one, and PostgreSQL can neither store nor
    compare text with one: it would end in an error instead of an answer.
    """
    # The raw WSGI values: cheaper than parsed ones, on every request.
    environ = request.environ
    if "\x00" in environ.get("PATH_INFO", "") or "%00" in environ.get(
        "QUERY_STRING", ""
    ):
        raise InvalidInput("The address holds a character that is not allowed (NUL).")
    if (
        environ["REQUEST_METHOD"] in _BODILESS
        # The API takes JSON, read after its token is checked (and refuses NUL).
        or is_api_request()
        or request.mimetype not in _FORM_TYPES
    ):
        return
    if any(
        "\x00" in value for _name, values in request.form.lists() for value in values
    ):
        raise InvalidInput("The form holds a character that is not allowed (NUL).")


def init_app(app: Flask) -> None:
    """Bound request bodies and refuse NUL characters, before any other hook;
    add the security headers to responses."""
    # Registered before CSRFProtect's hook, which reads staff forms.
    app.before_request(guard_request)
    headers = list(DEFAULT_HEADERS)
    hsts = app.config["HSTS_SECONDS"]
    if hsts and str(app.config["BASE_URL"]).startswith("https://"):
        # Served over HTTPS (its public address says so): browsers keep to it.
        headers.append(("Strict-Transport-Security", f"max-age={hsts}"))
    app.wsgi_app = DefaultHeaders(  # type: ignore[method-assign]
        app.wsgi_app, headers
    )

"""What every request and response must satisfy: no NUL in, safe headers out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, request

from survey.errors import InvalidInput, is_api_request

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
    cost a tenth of the busiest request.
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
    """Refuse NUL characters in requests; add the security headers to responses."""
    app.before_request(refuse_nul_characters)
    app.wsgi_app = DefaultHeaders(  # type: ignore[method-assign]
        app.wsgi_app, DEFAULT_HEADERS
    )

"""Flask's signed-cookie session, minus its work on requests that have none."""

from __future__ import annotations

from functools import lru_cache

from flask import Flask, Request, Response
from flask.sessions import (
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)
from itsdangerous import URLSafeTimedSerializer


def _vary_on_cookie(response: Response) -> None:
    """Add ``Cookie`` to the response's ``Vary``, as Flask does when it is read.

    ``Response.vary`` parses the header into a set and writes it back; most
    responses have no ``Vary`` yet, and then it is simply set.
    """
    if "Vary" in response.headers:
        response.vary.add("Cookie")
    else:
        response.headers["Vary"] = "Cookie"


class CachedSecureCookieSessionInterface(SecureCookieSessionInterface):
    """Flask's default session, minus the work it does when there is none.

    Flask builds a new ``URLSafeTimedSerializer`` twice a request (to read and
    to write the cookie); building one costs more than signing. The cookie's
    format, salt, keys and key rotation stay Flask's own: the serializer is
    built with the very arguments Flask 3 uses. A request without cookies
    (every customer's) gets an empty session at once, and an empty, untouched
    session is saved as Flask saves it: no cookie, ``Vary: Cookie`` if read.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and "HTTP_COOKIE" not in request.environ:
            return self.session_class()  # no cookies at all: nothing to parse
        return super().open_session(app, request)

    def save_session(
        self, app: Flask, session: SessionMixin, response: Response
    ) -> None:
        if not session and not session.modified:
            if session.accessed:
                _vary_on_cookie(response)
            return
        super().save_session(app, session, response)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        fallbacks = tuple(app.config["SECRET_KEY_FALLBACKS"] or ())
        return self._serializer(app.secret_key, fallbacks)

    @lru_cache(maxsize=16)  # noqa: B019 - one interface per app, few key sets
    def _serializer(
        self, secret_key: str | bytes, fallbacks: tuple[str | bytes, ...]
    ) -> URLSafeTimedSerializer:
        # itsdangerous signs with the last key and verifies with all of them.
        return URLSafeTimedSerializer(
            [*fallbacks, secret_key],  # type: ignore[arg-type]  # as in Flask
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

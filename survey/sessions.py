"""Flask's signed-cookie session, with its signing serializer built once per key set."""

from __future__ import annotations

from functools import lru_cache

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


class CachedSecureCookieSessionInterface(SecureCookieSessionInterface):
    """Flask's default session, minus rebuilding its serializer on every request.

    Flask builds a new ``URLSafeTimedSerializer`` twice a request (to read and
    to write the cookie); building one costs more than signing. The cookie's
    format, salt, keys and key rotation stay Flask's own: the serializer is
    built with the very arguments Flask 3 uses.
    """

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

"""API tokens: stored as hashes, each with scopes; checked by one decorator."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import g, request
from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from survey import clock, db
from survey.db import Base
from survey.errors import Forbidden, InvalidInput, Unauthorized

SCOPES = (
    "departures:write",
    "responses:read",
    "winback:read",
    "contacts:erase",
    "insights:read",
    "metrics:read",
)
NAME_MAX_LENGTH = 200
TOKEN_PREFIX = "es_"  # noqa: S105  (a visible marker, not a secret)

F = TypeVar("F", bound=Callable[..., Any])


class ApiToken(Base):
    """A machine's credential; only a hash of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    #: SHA-256 of the whole token. Tokens are 256 random bits, so a fast hash
    #: is enough: there is nothing to guess from it.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters, to tell tokens apart in lists and logs.
    display_prefix: Mapped[str] = mapped_column(String(12))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, name: str, scopes: list[str]
) -> tuple[ApiToken, str]:
    """Create a token; return the row and the secret (shown once, never stored)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            f"Unknown scope(s): {', '.join(unknown)}; choose from {', '.join(SCOPES)}."
            if unknown
            else "Give at least one scope."
        )
    if not name.strip():
        raise InvalidInput("Give the token a name.")
    if len(name.strip()) > NAME_MAX_LENGTH:
        raise InvalidInput(f"The name must be at most {NAME_MAX_LENGTH} characters.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name.strip(),
        token_hash=_hash(secret),
        display_prefix=secret[:10],
        scopes=sorted(set(scopes)),
        created_at=clock.now(),
    )
    session.add(token)
    session.flush()
    return token, secret


def list_tokens(session: Session) -> list[ApiToken]:
    """Return every token, newest first (secrets are not kept, only prefixes)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id.desc())))


def revoke_token(session: Session, prefix: str) -> ApiToken:
    """Revoke the one live token whose shown prefix starts with ``prefix``."""
    if len(prefix) < len(TOKEN_PREFIX) + 4:
        raise InvalidInput("Give at least the first 7 characters of the token.")
    matches = session.scalars(
        select(ApiToken).where(
            ApiToken.display_prefix.startswith(prefix, autoescape=True),
            ApiToken.revoked_at.is_(None),
        )
    ).all()
    if len(matches) != 1:
        raise InvalidInput(
            f"{len(matches)} live tokens start with {prefix!r}; give exactly one."
            if matches
            else f"No live token starts with {prefix!r}."
        )
    [token] = matches
    token.revoked_at = clock.now()
    return token


def authenticate() -> ApiToken:
    """Return the live token the request's Authorization header carries."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Send an API token: Authorization: Bearer TOKEN.")
    digest = _hash(secret.strip())
    # A short read of its own: the request's transaction (a writing one for a
    # POST) starts only once the body is in, after authentication.
    with db.new_session() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    # compare_digest keeps the check constant-time once a row is found.
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise Unauthorized("Unknown API token.")
    if token.revoked_at is not None:
        raise Unauthorized("This API token was revoked.")
    return token


def require_scope(*accepted: str) -> Callable[[F], F]:
    """Let the view run only for a token holding one of the ``accepted`` scopes."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = authenticate()
            if not set(accepted) & set(token.scopes):
                raise Forbidden(f"This token lacks the scope {' or '.join(accepted)}.")
            g.api_token = token
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator

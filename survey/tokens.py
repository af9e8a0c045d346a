"""Signed links: the public side's only security boundary.

Every link in an email is made and read here, with one salt per purpose so a
token for one purpose never works for another. Keys rotate through
``SECRET_KEY_FALLBACKS``: links signed with an old key keep working while it
is listed there.
"""

from __future__ import annotations

import binascii
import hmac
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import NamedTuple

from flask import current_app
from itsdangerous import (
    BadData,
    BadPayload,
    BadSignature,
    Signer,
    TimestampSigner,
    URLSafeTimedSerializer,
)

from survey import clock

SURVEY = "survey"
WITHDRAW_CONSENT = "consent-withdrawal"
_SALTS = {SURVEY: "exit-survey.survey", WITHDRAW_CONSENT: "exit-survey.withdraw"}
_FORM_SALT = "exit-survey.form"


class TokenError(Exception):
    """A link that cannot be used."""


class TokenInvalid(TokenError):
    """Tampered with, unknown, or meant for another purpose."""


class TokenExpired(TokenError):
    """Genuine but too old; ``public_id`` says whose it was."""

    def __init__(self, public_id: str) -> None:
        super().__init__("link expired")
        self.public_id = public_id


class _ClockSigner(TimestampSigner):
    """A timestamp signer that reads the app's (injectable) clock, not ``time``."""

    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())


def _keys() -> tuple[str, ...]:
    config = current_app.config
    # itsdangerous signs with the last key and verifies with all of them.
    return (*config["SECRET_KEY_FALLBACKS"], config["SECRET_KEY"])


#: Genuine link tokens remembered, per key set and purpose (see ``_Codec.verified``).
VERIFIED_LINKS = 4096


class _Codec(NamedTuple):
    """One purpose's way to make and read tokens under one set of keys."""

    serializer: URLSafeTimedSerializer
    signer: TimestampSigner
    #: A genuine token's (public id, signing time), from the signature and
    #: the payload; raises ``BadData`` for any other token. Remembered
    #: (``VERIFIED_LINKS``): a customer's link comes back some five times in
    #: a few minutes (page 1, its answer, page 2, its answer, the thanks),
    #: and checking it each time made survey GETs 18 % slower (``make
    #: bench``, 2026-12-03). Only
    #: genuine tokens are remembered, and the age is not: ``load_token``
    #: checks it every time. A new key set makes a new codec, so a token
    #: signed with a key since dropped is checked again, and refused. The
    #: tokens stay in this process's memory (a few hundred kB), never on disk.
    verified: Callable[[str], tuple[str, int]]


def _codec(purpose: str) -> _Codec:
    """Return ``purpose``'s codec under the current keys."""
    return _cached_codec(_keys(), _SALTS[purpose])


@lru_cache(maxsize=64)
def _cached_codec(keys: tuple[str, ...], salt: str) -> _Codec:
    # Building a serializer costs more than checking a token: reuse it while
    # the keys stay the same. The serializer and signer keep no state between
    # calls (the clock is read on use); the codec remembers genuine tokens.
    # The serializer's loads() builds a new signer for every token: the
    # signer is built once here too.
    serializer = URLSafeTimedSerializer(list(keys), salt=salt, signer=_ClockSigner)
    signer = serializer.make_signer(salt)
    assert isinstance(signer, TimestampSigner)

    @lru_cache(maxsize=VERIFIED_LINKS)
    def verified(token: str) -> tuple[str, int]:
        # An exception is never cached: a bad token is checked every time.
        if not _is_canonical(token):
            raise BadSignature("token is not in canonical base64")
        # What serializer.loads() does, but the age check (see load_token).
        signed, signed_at = signer.unsign(token, return_timestamp=True)
        public_id = serializer.load_payload(signed)
        if not isinstance(public_id, str):
            raise BadPayload("payload is not a public id")
        return public_id, int(signed_at.timestamp())

    return _Codec(serializer, signer, verified)


class _FormTokens(NamedTuple):
    """The form tokens of one set of keys."""

    signer: Signer
    #: A public id's form token under the current key. Remembered
    #: (``VERIFIED_LINKS``): page 1 shows it and its answer checks it, and
    #: signing it anew each time made survey GETs about 6 % slower (page-1
    #: POSTs about 2 %; interleaved A/B under ``make bench``'s load,
    #: 2026-12-04). A signature is no secret beyond the link it is bound to.
    current: Callable[[str], str]


@lru_cache(maxsize=16)
def _form_tokens(keys: tuple[str, ...]) -> _FormTokens:
    signer = Signer(list(keys), salt=_FORM_SALT)

    @lru_cache(maxsize=VERIFIED_LINKS)
    def current(public_id: str) -> str:
        return signer.get_signature(public_id).decode()

    return _FormTokens(signer, current)


def form_token(public_id: str) -> str:
    """Return the CSRF token of the forms behind ``public_id``'s links.

    The customer's pages use no cookie: their forms are bound to the link
    (itself the credential) by this signature of its departure, under a salt
    of its own, so a link token never serves as a form token or the reverse.
    """
    return _form_tokens(_keys()).current(public_id)


def is_form_token(public_id: str, token: str | None) -> bool:
    """Return whether ``token`` is the form token of ``public_id`` (any key)."""
    if not token:
        return False
    tokens = _form_tokens(_keys())
    if hmac.compare_digest(token.encode(), tokens.current(public_id).encode()):
        return True
    return tokens.signer.verify_signature(public_id, token)  # an older key's


def max_age(purpose: str) -> timedelta:
    """Return how long a link for ``purpose`` stays valid.

    A "don't contact me" link lasts much longer than a survey link: saying no
    must keep working long after the survey has closed.
    """
    key = (
        "WITHDRAW_LINK_MAX_AGE_DAYS"
        if purpose == WITHDRAW_CONSENT
        else "LINK_MAX_AGE_DAYS"
    )
    return timedelta(days=current_app.config[key])


def make_token(purpose: str, public_id: str) -> str:
    """Return a signed, timestamped token naming a departure for ``purpose``."""
    return _codec(purpose).serializer.dumps(public_id)


#: URL-safe base64 without padding, as itsdangerous's base64_encode, in C calls.
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _is_canonical(token: str) -> bool:
    """Return whether each part of ``token`` is in its one canonical base64 form.

    Base64 leaves a few bits unused in a part's last character; a token that
    differs only there would decode to the same bytes. Refusing non-canonical
    parts means any changed character makes a link invalid. (What
    itsdangerous's ``base64_decode`` then ``base64_encode`` would say, in C.)
    """
    if not token.isascii():
        return False
    for part in token.encode().split(b"."):
        if not part:
            continue
        padded = part.translate(_FROM_URL_SAFE) + b"=" * (-len(part) % 4)
        try:
            decoded = binascii.a2b_base64(padded, strict_mode=True)
        except binascii.Error:
            return False
        if _b64(decoded) != part:
            return False
    return True


def load_token(purpose: str, token: str) -> str:
    """Return the departure's public id from a token, or raise a TokenError."""
    try:
        public_id, signed_at = _codec(purpose).verified(token)
    except BadData as exc:
        raise TokenInvalid from exc
    # As TimestampSigner.unsign(max_age=...) judges it, from the app's clock.
    age = int(clock.now().timestamp()) - signed_at
    if not 0 <= age <= int(max_age(purpose).total_seconds()):
        raise TokenExpired(public_id)
    return public_id

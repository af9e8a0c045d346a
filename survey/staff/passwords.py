"""Password hashing with argon2id (argon2-cffi's defaults, RFC 9106's profile)."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

#: Shortest password we accept for a staff account.
MIN_LENGTH = 12


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password``, with its parameters."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Return whether ``password`` matches ``password_hash``."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Return whether the hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def _decoy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def spend_verification_time(password: str) -> None:
    """Verify against a decoy, so an unknown address costs as long as a known one."""
    verify_password(_decoy_hash(), password)


def generate_password() -> str:
    """Return a random password (about 120 bits) for a new account."""
    return secrets.token_urlsafe(15)

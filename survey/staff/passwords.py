"""Password hashing with argon2id.

The parameters come from the configuration (argon2-cffi's defaults, RFC 9106's
low-memory profile, unless set): a hash made with other parameters is
replaced at the next sign-in.
"""

from __future__ import annotations

import contextlib
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

#: Shortest password we accept for a staff account.
MIN_LENGTH = 12


@functools.lru_cache(maxsize=8)
def _hasher_with(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
    )


def _hasher() -> PasswordHasher:
    config = current_app.config
    return _hasher_with(
        config["PASSWORD_TIME_COST"],
        config["PASSWORD_MEMORY_KIB"],
        config["PASSWORD_PARALLELISM"],
    )


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password``, with its parameters."""
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Return whether ``password`` matches ``password_hash``."""
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Return whether the hash was made with other parameters than today's."""
    return _hasher().check_needs_rehash(password_hash)


@functools.lru_cache(maxsize=8)
def _decoy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_urlsafe(16))


def spend_verification_time(password: str) -> None:
    """Verify against a decoy, so an unknown address costs as long as a known one."""
    hasher = _hasher()
    with contextlib.suppress(VerificationError):
        hasher.verify(_decoy_hash(hasher), password)


def generate_password() -> str:
    """Return a random password (about 120 bits) for a new account."""
    return secrets.token_urlsafe(15)

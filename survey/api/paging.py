"""The page size every paged API list reads from ``?limit=``."""

from __future__ import annotations

from flask import request

from survey import db
from survey.errors import InvalidInput

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def limit_from_args() -> int:
    """Return ``?limit=`` (1 to ``MAX_LIMIT``, default ``DEFAULT_LIMIT``);
    raise InvalidInput for anything else."""
    limit = db.parse_int(request.args.get("limit", str(DEFAULT_LIMIT)), MAX_LIMIT)
    if not limit:
        message = f"Give a whole number from 1 to {MAX_LIMIT}."
        raise InvalidInput("The limit is not valid.", {"limit": [message]})
    return limit

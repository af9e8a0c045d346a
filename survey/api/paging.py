"""The paging parameters every paged API list reads: ``cursor`` and ``limit``."""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import Field, field_validator

from survey import db
from survey.validation import Query, Text, read_query

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


class PageQuery(Query):
    """Where a page starts, and how many rows it holds."""

    cursor: Text = Field(
        None,
        description="The `next_cursor` of the previous page (opaque); leave out "
        "for the first.",
    )
    limit: int = Field(
        DEFAULT_LIMIT,
        ge=1,
        le=MAX_LIMIT,
        description=f"Rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    )

    @field_validator("limit", mode="before")
    @classmethod
    def _whole_number(cls, given: Any) -> Any:
        limit = db.parse_int(str(given), MAX_LIMIT)
        if not limit:
            raise ValueError(f"Give a whole number from 1 to {MAX_LIMIT}.")
        return limit


def page_from_args() -> PageQuery:
    """Return ``?cursor=`` and ``?limit=`` (1 to ``MAX_LIMIT``, default
    ``DEFAULT_LIMIT``); raise InvalidInput for anything else."""
    return read_query(PageQuery, request.args, "The limit is not valid.")

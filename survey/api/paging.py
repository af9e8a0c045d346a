"""The paging parameters every paged API list reads: ``cursor`` and ``limit``."""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import Field, field_validator

from survey import db
from survey.validation import Query, Text, read_query

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
#: The most rows a page of an export-shaped list holds (the win-back list:
#: small rows, read whole by marketing tools): a million contacts in 100
#: requests rather than 1,000 (``make bench-export``: 3.8 -> 2.0 s for
#: 200,000 contacts, 2026-12-04).
EXPORT_MAX_LIMIT = 10_000


def _limit(maximum: int) -> Any:
    return Field(
        DEFAULT_LIMIT,
        ge=1,
        le=maximum,
        description=f"Rows per page, 1 to {maximum:,} (default {DEFAULT_LIMIT}).",
    )


class PageQuery(Query):
    """Where a page starts, and how many rows it holds (a subclass may allow
    more: its own ``limit = _limit(maximum)``)."""

    cursor: Text = Field(
        None,
        description="The `next_cursor` of the previous page (opaque); leave out "
        "for the first.",
    )
    limit: int = _limit(MAX_LIMIT)

    @field_validator("limit", mode="before")
    @classmethod
    def _whole_number(cls, given: Any) -> Any:
        # The field's own bound: the one the API document shows.
        [maximum] = [
            c.le for c in cls.model_fields["limit"].metadata if hasattr(c, "le")
        ]
        limit = db.parse_int(str(given), maximum)
        if not limit:
            raise ValueError(f"Give a whole number from 1 to {maximum:,}.")
        return limit


class ExportPageQuery(PageQuery):
    """A page of an export-shaped list: up to ``EXPORT_MAX_LIMIT`` rows."""

    limit: int = _limit(EXPORT_MAX_LIMIT)


def page_from_args(model: type[PageQuery] = PageQuery) -> PageQuery:
    """Return ``?cursor=`` and ``?limit=`` (1 to the model's maximum,
    default ``DEFAULT_LIMIT``); raise InvalidInput for anything else."""
    return read_query(model, request.args, "The limit is not valid.")

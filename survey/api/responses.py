"""GET /api/v1/responses: the answered surveys, a page at a time."""

from __future__ import annotations

from flask import jsonify, request
from pydantic import Field
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import db
from survey.answers import listing
from survey.api import bp
from survey.api.auth import require_scope
from survey.api.departures import READ_ANSWERS
from survey.api.paging import PageQuery
from survey.departures.schemas import Timestamp
from survey.validation import read_query


class ResponsesQuery(PageQuery):
    """The answers changed since a time, a page at a time."""

    since: Timestamp = Field(
        None,
        description="Answers changed at or after this ISO 8601 date or time "
        "(UTC without a zone).",
    )


@bp.get("/responses")
@require_scope(READ_ANSWERS)
def list_responses() -> WerkzeugResponse:
    """One page of answered surveys changed since ``since``; ``next_cursor``
    is null on the last page."""
    query = read_query(ResponsesQuery, request.args, "The query is not valid.")
    result = listing.page(db.session(), query.since, query.cursor, query.limit)
    return jsonify(result.model_dump(mode="json"))

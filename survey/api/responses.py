"""GET /api/v1/responses: the answered surveys, a page at a time."""

from __future__ import annotations

from flask import jsonify, request
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import db
from survey.answers import listing
from survey.api import bp
from survey.api.auth import require_scope
from survey.api.departures import READ_ANSWERS
from survey.api.paging import limit_from_args


@bp.get("/responses")
@require_scope(READ_ANSWERS)
def list_responses() -> WerkzeugResponse:
    """One page of answered surveys changed since ``since``; ``next_cursor``
    is null on the last page."""
    since = listing.parse_since(request.args.get("since"))
    limit = limit_from_args()
    result = listing.page(db.session(), since, request.args.get("cursor"), limit)
    return jsonify(result.model_dump(mode="json"))

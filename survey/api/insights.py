"""GET /api/v1/insights: every insights panel as JSON, for other tools."""

from __future__ import annotations

from flask import jsonify, request
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import clock, db
from survey.api import bp
from survey.api.auth import require_scope
from survey.insights import service as insights
from survey.insights.export import as_json


@bp.get("/insights")
@require_scope("insights:read")
def insights_json() -> WerkzeugResponse:
    """Every insights panel for ``from``-``to`` and the filters, as JSON."""
    now = clock.now()
    scope = insights.scope_from(request.args, now.date())
    return jsonify(as_json(insights.panels(db.session(), scope, now=now)))

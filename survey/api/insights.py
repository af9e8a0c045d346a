"""GET /api/v1/insights: every insights panel as JSON, for other tools."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import current_app, jsonify, request
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import clock, db
from survey.api import bp
from survey.api.auth import require_scope
from survey.insights import service as insights


def _breakdown(rows: list[insights.Breakdown], name: str) -> list[dict[str, Any]]:
    return [
        {
            name: row.value,
            "departures": row.departures,
            "lost_mrr": [
                {"currency": currency, "cents": cents}
                for currency, cents in sorted(row.lost_mrr_cents.items())
            ],
            "top_reason": row.top_reason,
        }
        for row in rows
    ]


def as_json(found: insights.Panels) -> dict[str, Any]:
    """Return the panels as the API's JSON (see the README); amounts stay
    per currency, times are ISO 8601 UTC."""
    scope = found.scope
    wait = found.funnel.median_answer_time
    return {
        "period": {"from": scope.start.isoformat(), "to": scope.end.isoformat()},
        "filters": {
            "segment": scope.segment,
            "plan": scope.plan,
            "csm": scope.csm,
            "currency": scope.currency,
        },
        "recurring": [asdict(row) for row in found.recurring],
        "reasons": [asdict(row) for row in found.reasons],
        "over_time": [asdict(row) for row in found.over_time],
        "funnel": {
            "departed": found.funnel.departed,
            "invited": found.funnel.invited,
            "opened": found.funnel.opened,
            "answered": found.funnel.answered,
            "consented": found.funnel.consented,
            "median_answer_seconds": None if wait is None else wait.total_seconds(),
        },
        "said_vs_found": [asdict(row) for row in found.said_vs_found],
        "root_causes": [asdict(row) for row in found.root_causes],
        "fixes": [
            {**asdict(row), "last_done_at": clock.iso(row.last_done_at)}
            for row in found.fixes
        ],
        "open_actions": [asdict(row) for row in found.open_actions],
        "by_segment": _breakdown(found.by_segment, "segment"),
        "by_plan": _breakdown(found.by_plan, "plan"),
    }


def current_panels() -> insights.Panels:
    """The panels for this request's query string, as of the app's clock."""
    now = clock.now()
    config = current_app.config
    return insights.panels(
        db.session(),
        insights.scope_from(request.args, now.date()),
        now=now,
        min_count=config["RECURRING_MIN_COUNT"],
        rise_percent=config["RECURRING_RISE_PERCENT"],
    )


@bp.get("/insights")
@require_scope("insights:read")
def insights_json() -> WerkzeugResponse:
    """Every insights panel for ``from``-``to`` and the filters, as JSON."""
    return jsonify(as_json(current_panels()))

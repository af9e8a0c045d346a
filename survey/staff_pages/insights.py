"""/insights: what keeps costing us, for admins and CSMs, with a CSV per panel."""

from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, request

from survey import clock, db
from survey.errors import InvalidInput
from survey.insights import service as insights
from survey.insights.export import CSV_PANELS, csv_text
from survey.staff import access
from survey.staff_pages import charts
from survey.staff_pages.staff import private_pages

bp = Blueprint("insights", __name__, url_prefix="/insights")
private_pages(bp)
bp.add_app_template_filter(insights.percent, "percent_of")


def _scope() -> tuple[insights.Scope, dict[str, list[str]]]:
    """The period and filters asked for, or the default with what was wrong."""
    today = clock.now().date()
    try:
        return insights.scope_from(request.args, today), {}
    except InvalidInput as invalid:
        return insights.scope_from({}, today), invalid.fields


@bp.get("", endpoint="page")
@access.requires(access.INSIGHTS)
def page() -> tuple[str, int]:
    """Every panel for the period and filters; 422 (and the default period)
    when they are not valid."""
    scope, problems = _scope()
    found = insights.panels(db.session(), scope, now=clock.now())
    months = insights.month_grid(found.over_time, insights.months_ending(scope.end))
    query = {k: v for k, v in request.args.items() if v and not problems}
    # Where a said-versus-found cell leads: the queue, narrowed the same way.
    narrowed = (
        ("segment", scope.segment),
        ("plan", scope.plan),
        ("currency", scope.currency),
        ("csm", scope.csm),
    )
    to_queue = {
        "status": "finished",
        "cancelled_from": scope.start.isoformat(),
        "cancelled_to": scope.end.isoformat(),
        **{name: value for name, value in narrowed if value},
    }
    return (
        render_template(
            "insights/page.html",
            found=found,
            matrix=insights.said_found_matrix(found.said_vs_found),
            months=months,
            figures=charts.figures(found, months),
            lost_mrr_key=charts.lost_mrr_key,
            costliest=insights.costliest,
            to_queue=to_queue,
            args=request.args,
            query=query,
            problems=problems,
            presets=insights.PRESET_DAYS,
        ),
        422 if problems else 200,
    )


@bp.get("/<panel>.csv", endpoint="csv")
@access.requires(access.INSIGHTS)
def panel_csv(panel: str) -> Response:
    """One panel's numbers as CSV, for the same period and filters."""
    if panel not in CSV_PANELS:
        abort(404)
    now = clock.now()
    scope = insights.scope_from(request.args, now.date())
    value = insights.panel(db.session(), scope, panel, now=now)  # that one only
    text = csv_text(panel, value)
    name = f"insights-{panel}-{scope.start}-{scope.end}.csv"
    return Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

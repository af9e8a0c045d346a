"""The insights panels as data for other programs: JSON, and CSV per panel."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from typing import Any

from survey import clock
from survey.insights import service as insights
from survey.spreadsheets import neutral


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
        "said_vs_found_differs_share": insights.said_found_matrix(
            found.said_vs_found
        ).differs_share,
        "root_causes": [asdict(row) for row in found.root_causes],
        "fixes": [
            {**asdict(row), "last_done_at": clock.iso(row.last_done_at)}
            for row in found.fixes
        ],
        "open_actions": [asdict(row) for row in found.open_actions],
        "by_segment": _breakdown(found.by_segment, "segment"),
        "by_plan": _breakdown(found.by_plan, "plan"),
    }


#: The panels offered as CSV, in page order.
CSV_PANELS = (
    "recurring",
    "reasons",
    "over_time",
    "funnel",
    "said_vs_found",
    "root_causes",
    "fixes",
    "open_actions",
    "by_segment",
    "by_plan",
)


def csv_text(found: insights.Panels, panel: str) -> str:
    """Return one panel's numbers as CSV: a header row, then one row per line
    of the panel (a breakdown has one row per currency)."""
    data = as_json(found)[panel]
    rows = [data] if isinstance(data, dict) else data
    if panel in ("by_segment", "by_plan"):
        rows = [
            {**{k: v for k, v in row.items() if k != "lost_mrr"}, **money}
            for row in rows
            for money in row["lost_mrr"] or [{"currency": None, "cents": 0}]
        ]
    out = io.StringIO()
    if rows:
        writer = csv.writer(out)
        writer.writerow(list(rows[0]))
        writer.writerows(neutral(list(row.values())) for row in rows)
    return out.getvalue()

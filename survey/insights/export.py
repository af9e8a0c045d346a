"""The insights panels as data for other programs: JSON, and CSV per panel."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import datetime
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


def _funnel(funnel: insights.Funnel) -> dict[str, Any]:
    wait = funnel.median_answer_time
    return {
        "departed": funnel.departed,
        "invited": funnel.invited,
        "opened": funnel.opened,
        "answered": funnel.answered,
        "consented": funnel.consented,
        "median_answer_seconds": None if wait is None else wait.total_seconds(),
    }


def _rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            k: clock.iso(v) if isinstance(v, datetime) else v
            for k, v in asdict(r).items()
        }
        for r in rows
    ]


#: How each panel of the API and the CSVs is written as JSON-ready data.
_AS_DATA: dict[str, Callable[[Any], Any]] = {
    "recurring": _rows,
    "reasons": _rows,
    "over_time": _rows,
    "funnel": _funnel,
    "said_vs_found": _rows,
    "root_causes": _rows,
    "fixes": _rows,
    "open_actions": _rows,
    "by_segment": lambda rows: _breakdown(rows, "segment"),
    "by_plan": lambda rows: _breakdown(rows, "plan"),
}


def as_json(found: insights.Panels) -> dict[str, Any]:
    """Return the panels as the API's JSON (see the README); amounts stay
    per currency, times are ISO 8601 UTC. Customers' own words (the
    "something else" texts) stay on the page."""
    scope = found.scope
    data = {name: write(getattr(found, name)) for name, write in _AS_DATA.items()}
    return {
        "period": {"from": scope.start.isoformat(), "to": scope.end.isoformat()},
        "filters": {
            "segment": scope.segment,
            "plan": scope.plan,
            "csm": scope.csm,
            "currency": scope.currency,
        },
        **data,
        "said_vs_found_differs_share": insights.said_found_matrix(
            found.said_vs_found
        ).differs_share,
    }


#: The panels offered as CSV, in page order.
CSV_PANELS = tuple(_AS_DATA)

#: The row of each panel that is a list of rows (an empty one still has
#: its columns).
_ROW_TYPES: dict[str, type] = {
    "recurring": insights.Recurring,
    "reasons": insights.ReasonRow,
    "over_time": insights.MonthRow,
    "said_vs_found": insights.SaidFound,
    "root_causes": insights.RootCauseRow,
    "fixes": insights.FixEffect,
    "open_actions": insights.TeamActions,
}


#: The panels whose rows hold a list of amounts (``lost_mrr``): their CSV
#: has a line per amount, its currency and cents in the last two columns.
#: (``over_time``'s rows are per currency already: a line each, its
#: departures that currency's, so that a spreadsheet may add them up.)
_PER_CURRENCY = ("by_segment", "by_plan")
#: The column each panel's CSV adds to its rows' fields.
_ADDED = {"reasons": "share_percent", "said_vs_found": "differs_share_percent"}


def _columns_of_nothing(panel: str) -> list[str]:
    """The CSV columns of ``panel`` when it has no rows (see ``csv_text``)."""
    if panel in ("by_segment", "by_plan"):
        names = [panel.removeprefix("by_"), "departures", "top_reason"]
    else:
        names = [field.name for field in fields(_ROW_TYPES[panel])]
        names += [_ADDED[panel]] if panel in _ADDED else []
    if panel in _PER_CURRENCY:
        names = [name for name in names if name != "lost_mrr"] + ["currency", "cents"]
    return names


def csv_text(panel: str, value: Any) -> str:
    """Return one panel's numbers (``value``, as ``insights.panel`` computes
    it) as CSV: a header row, then one row per line of the panel (a line with
    money in several currencies has one row per currency): the numbers the
    page shows, where a cell the page shows as 0 has no row."""
    data = _AS_DATA[panel](value)
    rows = [data] if isinstance(data, dict) else data
    if panel == "reasons":  # each row's share of the period's departures
        departed = sum(row["departures"] for row in rows)
        rows = [
            {**row, _ADDED[panel]: insights.percent(row["departures"], departed)}
            for row in rows
        ]
    if panel == "funnel":  # each step as a share of the step before
        steps = ("departed", "invited", "opened", "answered", "consented")
        rows = [
            {
                **row,
                **{
                    f"{step}_percent": insights.percent(row[step], row[before])
                    for before, step in itertools.pairwise(steps)
                },
            }
            for row in rows
        ]
    if panel == "said_vs_found":  # the share of the postmortems that differs
        grid = insights.said_found_matrix(value)
        share = insights.percent(grid.differs, grid.total)
        rows = [{**row, _ADDED[panel]: share} for row in rows]
    if panel in _PER_CURRENCY:
        rows = [
            {**{k: v for k, v in row.items() if k != "lost_mrr"}, **money}
            for row in rows
            for money in row["lost_mrr"] or [{"currency": None, "cents": 0}]
        ]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(rows[0]) if rows else _columns_of_nothing(panel))
    writer.writerows(neutral(list(row.values())) for row in rows)
    return out.getvalue()

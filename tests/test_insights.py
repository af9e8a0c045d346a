"""Insights: every figure checked against a small data set worked out by hand.

The data set (see ``story``), March 2026 unless said:

====  =========  ========  ======  ==========  =======  =============  ======  =========
      cancelled  currency  MRR     segment     plan     answer         opened  consent
====  =========  ========  ======  ==========  =======  =============  ======  =========
d1    03-05      USD       100.00  smb         growth   too_expensive  yes     granted
d2    03-10      USD       200.00  enterprise  scale    too_expensive  yes     none
d3    03-15      EUR        50.00  smb         growth   switched       yes     withdrawn
d4    03-20      USD        30.00  smb         growth   (none)         yes     none
d5    03-25      JPY       1000    smb         starter  (none)         no      none
d6    02-20      USD        99.99  smb         growth   switched       no      none
d7    03-28      USD        70.00  smb         growth   (erased: never counted)
d8    02-05      USD        40.00  smb         growth   switched       no      none
d9    02-12      EUR        25.00  enterprise  scale    switched       no      none
d10   01-15      USD        15.00  smb         starter  switched       no      none
====  =========  ========  ======  ==========  =======  =============  ======  =========

Invitations sent for d1-d4 (the others' still queued); answers 2 h (d1),
24 h (d2) and 1 h (d3) after theirs. Postmortems: d1 done (primary
``poor_fit``, also ``product_issues``), d2 closed (``failed_adoption``), d3
in review (``competitor``: not finished, not counted), d4 done
(``poor_service``); preventable: d1 yes, d2 partly, d4 no. Action items: on
d1's, one for sales done March 12, 09:00; on d2's, two open ones (onboarding
due 2026-03-25, overdue; product due 2099-01-01).

"switched" recurs as of February 28: 3 in the 30 days from January 30 (d8,
d9, d6), against 1 (d10) in the 90 days before, 0.33 per 30 days.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from itertools import combinations
from typing import Any

import pytest
from sqlalchemy import event, select

from survey import db
from survey.answers.service import record_reason
from survey.departures.models import Departure
from survey.insights import service as insights
from survey.insights.service import (
    Breakdown,
    FixEffect,
    Funnel,
    MonthRow,
    ReasonRow,
    Recurring,
    RootCauseRow,
    SaidFound,
    Scope,
    TeamActions,
)
from survey.review.models import ActionItem
from survey.vocabulary import ROOT_CAUSES, TEAMS
from survey.wording import service as wordings
from tests.factories import auth, login, make_departure, make_token, make_user
from tests.insights_data import STORY_CSM, answer, at, build_story, postmortem

MARCH = Scope(date(2026, 3, 1), date(2026, 3, 31))
FEBRUARY = Scope(date(2026, 2, 1), date(2026, 2, 28))


@pytest.fixture
def story(app):
    return build_story(app)


def _panels(app, panel, scope):
    with app.app_context(), db.new_session() as session:
        return panel(session, scope)


def test_reasons_by_period_and_filter(app, story):
    assert _panels(app, insights.reasons, MARCH) == [
        ReasonRow("too_expensive", "USD", 2, 30_000),
        ReasonRow("switched", "EUR", 1, 5_000),
        ReasonRow(None, "JPY", 1, 1_000),
        ReasonRow(None, "USD", 1, 3_000),
    ]
    smb = Scope(MARCH.start, MARCH.end, segment="smb")
    assert _panels(app, insights.reasons, smb) == [
        ReasonRow("switched", "EUR", 1, 5_000),
        ReasonRow("too_expensive", "USD", 1, 10_000),
        ReasonRow(None, "JPY", 1, 1_000),
        ReasonRow(None, "USD", 1, 3_000),
    ]
    # d6 and d8 in dollars, d9 in euros.
    assert _panels(app, insights.reasons, FEBRUARY) == [
        ReasonRow("switched", "USD", 2, 13_999),
        ReasonRow("switched", "EUR", 1, 2_500),
    ]


def test_the_funnel_and_the_median_time_to_answer(app, story):
    # departed, invited (sent), opened, answered, consented, median wait
    hours = timedelta(hours=1)
    smb = Scope(MARCH.start, MARCH.end, segment="smb")
    assert _panels(app, insights.funnel, MARCH) == Funnel(5, 4, 4, 3, 1, 2 * hours)
    assert _panels(app, insights.funnel, smb) == Funnel(4, 3, 3, 2, 1, 1.5 * hours)
    assert _panels(app, insights.funnel, FEBRUARY) == Funnel(3, 0, 0, 3, 0, None)


def test_said_versus_found_counts_finished_postmortems_only(app, story):
    assert _panels(app, insights.said_vs_found, MARCH) == [
        SaidFound("too_expensive", "failed_adoption", 1),
        SaidFound("too_expensive", "poor_fit", 1),
        SaidFound(None, "poor_service", 1),
    ]
    usd = Scope(MARCH.start, MARCH.end, currency="EUR")
    assert _panels(app, insights.said_vs_found, usd) == []


def test_an_erased_person_s_postmortems_are_counted_out(app, story, runner):
    with app.app_context(), db.new_session() as session:
        d4 = session.scalars(
            select(Departure).where(Departure.company == story["d4"])
        ).one()
    erased = runner.invoke(args=["contacts", "erase", d4.contact_email])
    assert erased.exit_code == 0, erased.output
    assert _panels(app, insights.said_vs_found, MARCH) == [
        SaidFound("too_expensive", "failed_adoption", 1),
        SaidFound("too_expensive", "poor_fit", 1),
    ]
    causes = _panels(app, insights.root_causes, MARCH)
    assert "poor_service" not in {row.code for row in causes}


def test_root_causes_by_team_primary_and_contributing_apart(app, story):
    assert _panels(app, insights.root_causes, MARCH) == [
        RootCauseRow("poor_fit", "sales", "USD", 1, 0, 10_000, 1, 0, 0),
        RootCauseRow("failed_adoption", "onboarding", "USD", 1, 0, 20_000, 0, 1, 0),
        RootCauseRow("product_issues", "product", "USD", 0, 1, 0, 0, 0, 0),
        RootCauseRow("poor_service", "support", "USD", 1, 0, 3_000, 0, 0, 1),
    ]
    enterprise = Scope(MARCH.start, MARCH.end, segment="enterprise")
    assert _panels(app, insights.root_causes, enterprise) == [
        RootCauseRow("failed_adoption", "onboarding", "USD", 1, 0, 20_000, 0, 1, 0),
    ]


def test_by_segment_and_by_plan_money_stays_per_currency(app, story):
    with app.app_context(), db.new_session() as session:
        segments = insights.breakdown(session, MARCH, "segment")
        plans = insights.breakdown(session, MARCH, "plan")
        february = insights.breakdown(session, FEBRUARY, "plan")
    assert segments == [
        Breakdown("smb", 4, {"USD": 13_000, "EUR": 5_000, "JPY": 1_000}, "switched"),
        Breakdown("enterprise", 1, {"USD": 20_000}, "too_expensive"),
    ]
    assert plans == [
        Breakdown("growth", 3, {"USD": 13_000, "EUR": 5_000}, "switched"),
        Breakdown("scale", 1, {"USD": 20_000}, "too_expensive"),
        Breakdown("starter", 1, {"JPY": 1_000}, None),
    ]
    assert february == [
        Breakdown("growth", 2, {"USD": 13_999}, "switched"),  # d6, d8
        Breakdown("scale", 1, {"EUR": 2_500}, "switched"),  # d9
    ]


def test_a_recurring_flag_appears_and_disappears_exactly_at_its_thresholds(app):
    # As of June 30: the last 30 days are June 1-30, the 90 before March 3 -
    # May 31. "too_expensive": 3 lately, 6 before (2 per 30 days: +50 %
    # exactly); "poor_fit": 3 lately, none before. Just outside both
    # windows: March 2 and July 1.
    june = Scope(date(2026, 6, 1), date(2026, 6, 30))
    lately = [at(6, 1, 0), at(6, 10), datetime(2026, 6, 30, 23, 59, tzinfo=UTC)]
    before = [at(3, 3, 0), at(3, 20), at(4, 10), at(4, 20), at(5, 10), at(5, 31, 23)]
    outside = [at(3, 2, 23), at(7, 1, 0)]
    departures = [
        make_departure(app, cancelled_at=when) for when in lately + before + outside
    ]
    with app.app_context(), db.write_session() as session:
        for departure in departures:
            record_reason(
                session.connection(), departure.public_id, "too_expensive", None
            )
        for departure in departures[:3] + departures[-1:]:
            departure = session.merge(departure)
            postmortem(session, departure, "in_review", "poor_fit", done=False)
        session.commit()

    def flags(min_count: int = 3, rise_percent: int = 50) -> list[Recurring]:
        with app.app_context(), db.new_session() as session:
            return insights.recurring(
                session, june, min_count=min_count, rise_percent=rise_percent
            )

    assert flags() == [
        Recurring("reason", "too_expensive", 3, 2.0),
        Recurring("root_cause", "poor_fit", 3, 0.0),
    ]
    assert flags(rise_percent=51) == [Recurring("root_cause", "poor_fit", 3, 0.0)]
    assert flags(min_count=4) == []
    enterprise = Scope(june.start, june.end, segment="enterprise")
    with app.app_context(), db.new_session() as session:
        assert (
            insights.recurring(session, enterprise, min_count=3, rise_percent=50) == []
        )


def test_a_fix_is_judged_on_the_departures_either_side_of_its_completion(app):
    # The last action item on "failed_adoption" was done on June 1, 00:00;
    # the period's "now" is July 1. Before (March 3 - May 31): 6 departures
    # with that primary cause (2 per 30 days); after (June 1 - 30): 1.
    done_at = at(6, 1, 0)
    second = timedelta(seconds=1)
    before = [at(3, 3, 0), at(4, 1), at(4, 15), at(5, 1), at(5, 15)]
    before.append(done_at - second)
    times = [*before, done_at, at(3, 3, 0) - second, at(6, 20)]
    departures = [make_departure(app, cancelled_at=when) for when in times]
    actions = {
        5: [  # on the last one before: the fix, and an earlier one
            ActionItem(text="Fix", team="onboarding", done=True, done_at=done_at),
            ActionItem(text="Earlier", team="onboarding", done=True, done_at=at(5, 1)),
        ],
        0: [ActionItem(text="Late", team="onboarding", due_date=date(2026, 6, 30))],
        1: [ActionItem(text="Next", team="product", due_date=date(2026, 7, 1))],
    }
    with app.app_context(), db.write_session() as session:
        for index, departure in enumerate(departures):
            departure = session.merge(departure)
            cause = "competitor" if index == len(times) - 1 else "failed_adoption"
            postmortem(
                session, departure, "in_review", cause, actions=actions.get(index, ())
            )
        session.commit()
    scope = Scope(date(2026, 6, 1), date(2026, 6, 30))
    with app.app_context(), db.new_session() as session:
        effects = insights.fix_effects(session, scope, now=at(7, 1, 0))
        teams = insights.open_actions(session, scope, today=date(2026, 7, 1))
        enterprise = Scope(scope.start, scope.end, segment="enterprise")
        nothing = insights.fix_effects(session, enterprise, now=at(7, 1, 0))
    assert effects == [FixEffect("failed_adoption", done_at, 2.0, 1.0, -50.0)]
    assert teams == [TeamActions("onboarding", 1, 1), TeamActions("product", 1, 0)]
    assert nothing == [FixEffect("failed_adoption", done_at, 0.0, 0.0, None)]


def test_a_fix_is_judged_on_at_most_the_90_days_after_it(app, client, clock):
    # Done June 1, 00:00; "now" is December 1, so the 90 days after are
    # June 1 - August 29 (until August 30, 00:00). Before (March 3 - May 31):
    # 3 departures with the cause, 1 per 30 days. After: June 15 and August
    # 29, 23:59, 2 x 30 / 90 = 0.67 per 30 days, -33.3 %; August 30, 00:00,
    # October 1 and November 20 are past the 90 days. (All 5 over the 183
    # days since would be 5 x 30 / 183 = 0.82.)
    done_at = at(6, 1, 0)
    before = [at(3, 10), at(4, 10), at(5, 10)]
    after = [at(6, 15), datetime(2026, 8, 29, 23, 59, tzinfo=UTC)]
    later = [at(8, 30, 0), at(10, 1), at(11, 20)]
    departures = [make_departure(app, cancelled_at=when) for when in before + after]
    departures += [make_departure(app, cancelled_at=when) for when in later]
    fix = ActionItem(text="Fix", team="onboarding", done=True, done_at=done_at)
    with app.app_context(), db.write_session() as session:
        for index, departure in enumerate(departures):
            postmortem(
                session,
                session.merge(departure),
                "in_review",
                "failed_adoption",
                actions=[fix] if index == 2 else (),
            )
        session.commit()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    june = Scope(date(2026, 6, 1), date(2026, 6, 30))
    with app.app_context(), db.new_session() as session:
        effects = insights.fix_effects(session, june, now=now)
    assert effects == [FixEffect("failed_adoption", done_at, 1.0, 0.67, -33.3)]
    clock.current = now  # the API's "now"
    answer = client.get(
        "/api/v1/insights?days=30", headers=auth(make_token(app, "insights:read"))
    )
    assert answer.status_code == 200
    assert answer.get_json()["fixes"] == [
        {
            "code": "failed_adoption",
            "last_done_at": "2026-06-01T00:00:00Z",
            "before_per_30_days": 1.0,
            "after_per_30_days": 0.67,
            "change_percent": -33.3,
        }
    ]


@pytest.mark.parametrize(
    ("variable", "value", "february", "march"),
    [
        # The defaults (3, 50 %): "switched" in February, 3 against 0.33.
        (None, None, {"switched"}, set()),
        ("SURVEY_RECURRING_MIN_COUNT", "4", set(), set()),
        # Twice "too expensive" in March (d1, d2), never before.
        ("SURVEY_RECURRING_MIN_COUNT", "2", {"switched"}, {"too_expensive"}),
        # 3 is 800 % above 0.33 (1 in 90 days), not 1000 % above it.
        ("SURVEY_RECURRING_RISE_PERCENT", "700", {"switched"}, set()),
        ("SURVEY_RECURRING_RISE_PERCENT", "1000", set(), set()),
    ],
)
def test_the_recurring_thresholds_are_read_from_the_environment(
    make_app, story, monkeypatch, variable, value, february, march
):
    if variable:
        monkeypatch.setenv(variable, value)
    app = make_app()  # reads SURVEY_* as it starts
    token = auth(make_token(app, "insights:read"))
    staff = _staff(app, "csm")
    for period, flagged in (
        ("2026-02-01&to=2026-02-28", february),
        ("2026-03-01&to=2026-03-31", march),
    ):
        answer = app.test_client().get(f"/api/v1/insights?from={period}", headers=token)
        assert answer.status_code == 200
        flags = answer.get_json()["recurring"]
        assert {flag["code"] for flag in flags} == flagged, period
        assert {flag["kind"] for flag in flags} <= {"reason"}
        page = staff.get(f"/insights?from={period}").get_data(as_text=True)
        assert page.count('<li class="flag">') == len(flagged), period


def test_over_time_counts_twelve_months_by_reason_and_currency(app, story):
    assert insights.months_ending(date(2026, 3, 31))[:2] == ["2025-04", "2025-05"]
    assert insights.months_ending(date(2026, 3, 1))[-1] == "2026-03"
    # A row per month, reason and currency: its departures and its money
    # are that currency's (d7, erased, is not counted).
    assert _panels(app, insights.over_time, MARCH) == [
        MonthRow("2026-01", "switched", "USD", 1, 1_500),  # d10
        MonthRow("2026-02", "switched", "EUR", 1, 2_500),  # d9
        MonthRow("2026-02", "switched", "USD", 2, 13_999),  # d6 + d8
        MonthRow("2026-03", "switched", "EUR", 1, 5_000),  # d3
        MonthRow("2026-03", "too_expensive", "USD", 2, 30_000),  # d1 + d2
        MonthRow("2026-03", None, "JPY", 1, 1_000),  # d5
        MonthRow("2026-03", None, "USD", 1, 3_000),  # d4
    ]
    # Ending in February: March is after the period.
    assert _panels(app, insights.over_time, FEBRUARY) == [
        MonthRow("2026-01", "switched", "USD", 1, 1_500),
        MonthRow("2026-02", "switched", "EUR", 1, 2_500),
        MonthRow("2026-02", "switched", "USD", 2, 13_999),
    ]


def test_the_api_answers_every_panel_with_the_contract_s_fields(app, client, story):
    headers = auth(make_token(app, "insights:read"))
    march = client.get(
        "/api/v1/insights?from=2026-03-01&to=2026-03-31", headers=headers
    )
    assert march.status_code == 200, march.get_data(as_text=True)
    body = march.get_json()
    assert body["period"] == {"from": "2026-03-01", "to": "2026-03-31"}
    assert body["reasons"] == [
        {
            "reason": "too_expensive",
            "currency": "USD",
            "departures": 2,
            "lost_mrr_cents": 30_000,
        },
        {
            "reason": "switched",
            "currency": "EUR",
            "departures": 1,
            "lost_mrr_cents": 5_000,
        },
        {"reason": None, "currency": "JPY", "departures": 1, "lost_mrr_cents": 1_000},
        {"reason": None, "currency": "USD", "departures": 1, "lost_mrr_cents": 3_000},
    ]
    assert body["funnel"] == {
        "departed": 5,
        "invited": 4,
        "opened": 4,
        "answered": 3,
        "consented": 1,
        "median_answer_seconds": 7200.0,
    }
    assert body["said_vs_found"] == [
        {"said": "too_expensive", "found": "failed_adoption", "count": 1},
        {"said": "too_expensive", "found": "poor_fit", "count": 1},
        {"said": None, "found": "poor_service", "count": 1},
    ]
    assert body["recurring"] == []
    assert body["by_segment"][0] == {
        "segment": "smb",
        "departures": 4,
        "lost_mrr": [
            {"currency": "EUR", "cents": 5_000},
            {"currency": "JPY", "cents": 1_000},
            {"currency": "USD", "cents": 13_000},
        ],
        "top_reason": "switched",
    }
    eur = client.get(
        "/api/v1/insights?from=2026-03-01&to=2026-03-31&currency=eur", headers=headers
    ).get_json()
    assert eur["reasons"] == [
        {
            "reason": "switched",
            "currency": "EUR",
            "departures": 1,
            "lost_mrr_cents": 5_000,
        }
    ]
    assert eur["funnel"]["departed"] == 1 and eur["filters"]["currency"] == "EUR"


def test_over_time_rows_keep_their_contract_in_the_api_and_its_document(
    app, client, story
):
    """A row per month, stated reason and currency, with that currency's
    departures and lost MRR (the README's shape, as since the API began):
    in the answer, and in the OpenAPI document programs are generated from."""
    contract = ["month", "reason", "currency", "departures", "lost_mrr_cents"]
    answer = client.get(
        "/api/v1/insights?from=2026-03-01&to=2026-03-31",
        headers=auth(make_token(app, "insights:read")),
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    rows = answer.get_json()["over_time"]
    assert len(rows) == 7  # see test_over_time_counts_twelve_months_...
    assert all(list(row) == contract for row in rows), rows
    # The departures add up to the 9 counted in the 12 months (d7 erased).
    assert sum(row["departures"] for row in rows) == 9
    document = client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    schemas = document.get_json()["components"]["schemas"]
    items = schemas["InsightsOut"]["properties"]["over_time"]["items"]
    row = schemas[items["$ref"].removeprefix("#/components/schemas/")]
    assert list(row["properties"]) == contract == row["required"]
    types = {
        name: field.get("type") or [one["type"] for one in field["anyOf"]]
        for name, field in row["properties"].items()
    }
    assert types == {
        "month": "string",
        "reason": ["string", "null"],  # null: no answer
        "currency": "string",
        "departures": "integer",
        "lost_mrr_cents": "integer",
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-13-01", "from"),
        ("from=2026-03-31&to=2026-03-01", "from"),
        ("from=2000-01-01&to=2026-03-01", "from"),
        ("days=7", "days"),
        ("currency=dollars", "currency"),
        # Dates whose period or chart would reach past the calendar's ends
        # (a 500 once, found by schemathesis).
        ("days=30&to=0001-01-02", "to"),
        ("to=0001-12-31", "to"),
        ("from=9999-12-31&to=9999-12-31", "from"),
    ],
)
def test_the_api_refuses_a_bad_period_or_filter_per_field(app, client, query, field):
    headers = auth(make_token(app, "insights:read"))
    answer = client.get(f"/api/v1/insights?{query}", headers=headers)
    assert answer.status_code == 422
    assert answer.get_json()["error"] == "invalid"
    assert field in answer.get_json()["fields"]


def test_the_api_wants_the_insights_scope(app, client):
    assert client.get("/api/v1/insights").status_code == 401
    wrong = auth(make_token(app, "winback:read"))
    assert client.get("/api/v1/insights", headers=wrong).status_code == 403
    right = auth(make_token(app, "insights:read"))
    assert client.get("/api/v1/insights", headers=right).status_code == 200


def _staff(app, role: str):
    browser = app.test_client()
    assert login(browser, make_user(app, role).email).status_code == 302
    return browser


def _march_page(app) -> str:
    """/insights for March 2026, as a CSM sees it."""
    page = _staff(app, "csm").get("/insights?from=2026-03-01&to=2026-03-31")
    assert page.status_code == 200
    return page.get_data(as_text=True)


def test_the_page_shows_the_period_s_figures_money_per_currency(app, story):
    csm = _staff(app, "csm")
    home = csm.get("/review").get_data(as_text=True)
    assert 'href="/insights"' in home  # in the staff navigation
    page = csm.get("/insights?from=2026-03-01&to=2026-03-31")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "2026-03-01" in html and "2026-03-31" in html
    # Why they say they leave: count, share of 5, lost MRR in its currency.
    assert (
        '>2</td><td class="number" data-label="Share">40 %</td>'
        '<td class="number" data-label="Lost MRR">$300.00<'
    ) in html
    # March's lost MRR, one total per currency, at the end of its bar in that
    # currency's chart (hand-worked: d1 + d2 + d4 in USD; d3 in EUR; d5 in
    # JPY; d7 erased, d6 in February).
    for currency, total in (("EUR", "€50.00"), ("JPY", "¥1,000"), ("USD", "$330.00")):
        chart = _chart(html, f"MRR lost per month in {currency}, by stated reason")
        assert _stacked(chart)["2026-03"] == total
    # Never a sum across currencies: every amount shown anywhere on the page
    # is the MRR of some departures of its own currency, added up.
    own = {
        "$": [10_000, 20_000, 3_000, 9_999, 4_000, 1_500],
        "€": [5_000, 2_500],
        "¥": [1_000],
    }
    for symbol, mrrs in own.items():
        sums = {sum(c) for n in range(len(mrrs) + 1) for c in combinations(mrrs, n)}
        shown = re.findall(re.escape(symbol) + r"([\d,]+(?:\.\d\d)?)", html)
        assert shown, symbol
        for amount in shown:
            assert int(amount.replace(",", "").replace(".", "")) in sums, (
                symbol + amount
            )
    assert "Median time from invitation to answer: 2\u00a0h." in html
    assert "Customer should not have been sold to" in html  # a root cause
    empty = csm.get("/insights?from=2025-01-01&to=2025-01-31").get_data(as_text=True)
    assert "No departures in this period." in empty


def test_a_formula_in_a_segment_is_neutral_in_the_csv(app):
    make_departure(app, segment="=HYPERLINK(1)", cancelled_at=at(3, 5))
    admin = _staff(app, "admin")
    text = admin.get("/insights/by_segment.csv?from=2026-03-01&to=2026-03-31").get_data(
        as_text=True
    )
    assert "'=HYPERLINK(1)" in text


def test_a_bad_period_is_refused_on_the_page_with_the_field_named(app):
    admin = _staff(app, "admin")
    page = admin.get("/insights?from=2026-03-31&to=2026-03-01")
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "The period must start on or before its end." in html
    summary = html[html.index('class="error-summary"') :]
    assert summary.index("Some filters need attention") < summary.index("</div>")
    assert '<a href="#' in summary[: summary.index("</div>")]


def test_marketing_and_strangers_are_refused_the_page_and_every_csv(app, client, story):
    from survey.insights.export import CSV_PANELS

    marketing = _staff(app, "marketing")
    query = "?from=2026-03-01&to=2026-03-31"
    paths = ["/insights", *(f"/insights/{panel}.csv" for panel in CSV_PANELS)]
    assert len(paths) == 1 + 10  # the page and its ten panels' CSVs
    for path in paths:
        refused = marketing.get(path + query)
        assert refused.status_code == 403, path
        assert "30000" not in refused.get_data(as_text=True), path
        stranger = client.get(path + query)
        assert stranger.status_code == 302, path
        assert "/login" in stranger.headers["Location"], path


def test_said_versus_found_is_a_grid_whose_cells_open_the_queue(app, story):
    csm = _staff(app, "csm")
    html = csm.get("/insights?from=2026-03-01&to=2026-03-31").get_data(as_text=True)
    # d1 said too expensive, poor fit found; d2 too expensive, failed
    # adoption; d4 said nothing, poor service: all three differ.
    assert "<strong>100 %</strong> of the finished postmortems" in html
    link = (
        "/review?reason=too_expensive&amp;root_cause=poor_fit&amp;status=finished"
        "&amp;cancelled_from=2026-03-01&amp;cancelled_to=2026-03-31"
    )
    assert f'<a href="{link}">1</a>' in html
    queue = csm.get(link.replace("&amp;", "&")).get_data(as_text=True)
    shown = [name for name, company in story.items() if f">{company}<" in queue]
    assert shown == ["d1"]


def test_the_no_answer_row_s_cell_opens_the_queue_of_those_who_said_nothing(app, story):
    # d4 gave no answer; its postmortem (done) found poor service.
    csm = _staff(app, "csm")
    html = csm.get("/insights?from=2026-03-01&to=2026-03-31").get_data(as_text=True)
    said = html[html.index('id="said-title"') : html.index('id="causes-title"')]
    row = said[said.index('<th scope="row">No answer</th>') :].split("</tr>")[0]
    link = (
        "/review?reason=none&amp;root_cause=poor_service&amp;status=finished"
        "&amp;cancelled_from=2026-03-01&amp;cancelled_to=2026-03-31"
    )
    assert f'<a href="{link}">1</a>' in row
    queue = csm.get(link.replace("&amp;", "&"))
    assert queue.status_code == 200
    page = queue.get_data(as_text=True)
    shown = [name for name, company in story.items() if f">{company}<" in page]
    assert shown == ["d4"]


_CELL = re.compile(
    r'<a href="(/review\?reason=too_expensive&amp;root_cause=poor_fit[^"]*)">(\d+)</a>'
)


def test_a_said_versus_found_cell_opens_the_queue_with_its_csm_and_currency(app, story):
    # Two more postmortems that found poor fit behind "too expensive", like
    # d1's: one of another CSM's customers, one who paid in euros.
    others = {
        "elsewhere": make_departure(
            app, cancelled_at=at(3, 6), csm_email="other.csm@staff.example"
        ),
        "in euros": make_departure(
            app, cancelled_at=at(3, 7), currency="EUR", csm_email=STORY_CSM
        ),
    }
    with app.app_context(), db.write_session() as session:
        for day, departure in enumerate(others.values(), start=6):
            departure = session.merge(departure)
            answer(session, departure, "too_expensive", at(3, day, 12))
            postmortem(session, departure, "postmortem_done", "poor_fit")
        session.commit()
    companies = story | {name: d.company for name, d in others.items()}
    csm = _staff(app, "csm")
    for narrowed, expected in (
        ("", ["d1", "elsewhere", "in euros"]),
        (f"&csm={STORY_CSM.upper()}&currency=usd", ["d1"]),  # as typed
        ("&csm=other.csm@staff.example", ["elsewhere"]),
        ("&currency=EUR", ["in euros"]),
    ):
        page = csm.get(f"/insights?from=2026-03-01&to=2026-03-31{narrowed}")
        assert page.status_code == 200, narrowed
        link, count = _CELL.search(page.get_data(as_text=True)).groups()
        assert int(count) == len(expected), narrowed
        queue = csm.get(link.replace("&amp;", "&"))
        assert queue.status_code == 200, link
        html = queue.get_data(as_text=True)
        shown = [name for name, company in companies.items() if f">{company}<" in html]
        assert shown == expected, (narrowed, link)


def test_the_queue_reads_currency_and_csm_as_stored_and_explains_bad_ones(app, story):
    page = _staff(app, "csm").get("/review?status=&currency=dollars")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Give a three-letter currency code." in html
    kept = ("d1", "d2", "d3", "d4")  # d7's company was erased
    assert all(f">{story[name]}<" in html for name in kept)
    # A CSM's address however it is typed; one that is no address, explained.
    typed = _staff(app, "csm").get(f"/review?status=&csm={STORY_CSM.title()}")
    assert all(f">{story[name]}<" in typed.get_data(as_text=True) for name in kept)
    odd = _staff(app, "csm").get("/review?status=&csm=someone").get_data(as_text=True)
    assert "Not a valid email address" in odd
    insights_odd = _staff(app, "csm").get("/insights?csm=someone")
    assert insights_odd.status_code == 422
    assert "Not a valid email address" in insights_odd.get_data(as_text=True)


def test_the_share_that_differs_counts_a_matching_cause_as_the_same():
    rows = [
        SaidFound("switched", "competitor", 3),  # the same
        SaidFound("switched", "poor_fit", 1),  # differs
        SaidFound(None, "competitor", 1),  # nothing said: differs
    ]
    grid = insights.said_found_matrix(rows)
    assert grid.differs_share == 0.4
    assert grid.said == ["switched", None]
    assert grid.found == ["poor_fit", "competitor"]
    assert grid.counts[("switched", "competitor")] == 3


def test_over_time_charts_departures_and_each_currency_s_lost_mrr(app, story):
    html = _march_page(app)
    chart = _chart(html, "Departures per month, by stated reason")
    # Bars: January 1 reason (d10), February 1 (d6, d8, d9), March 3; a
    # legend entry for each of the 3 reasons.
    assert chart.count("<rect") == 5 + 3
    assert _stacked(chart) == {"2026-01": "1", "2026-02": "3", "2026-03": "5"}
    assert "The 12 months to 2026-03: 9 departures; the most in one month, 5" in chart
    # Dollars: d10 $15.00 in January; d6 + d8 $139.99 in February; d1 + d2
    # $300.00 (too expensive) and d4 $30.00 (no answer) in March.
    usd = _chart(html, "MRR lost per month in USD, by stated reason")
    assert usd.count("<rect") == 4 + 3
    assert _stacked(usd) == {
        "2026-01": "$15.00",
        "2026-02": "$139.99",
        "2026-03": "$330.00",
    }
    assert (
        "The 12 months to 2026-03: $484.99 of MRR lost in USD; the most in one"
        " month, $330.00 (2026-03). Lost most: It costs more than it is worth to"
        " us, $300.00." in usd
    )
    # Euros: d9 in February, d3 in March, both "switched"; yen: d5.
    eur = _chart(html, "MRR lost per month in EUR, by stated reason")
    assert eur.count("<rect") == 2 + 1
    assert _stacked(eur) == {"2026-02": "€25.00", "2026-03": "€50.00"}
    assert "€75.00 of MRR lost in EUR" in eur
    jpy = _chart(html, "MRR lost per month in JPY, by stated reason")
    assert _stacked(jpy) == {"2026-03": "¥1,000"}
    assert "Lost most: No answer, ¥1,000." in jpy
    # A reason has one colour in every chart over time.
    legend = _legend(chart)
    assert len(set(legend.values())) == 3
    for money in (usd, eur, jpy):
        assert _legend(money).items() <= legend.items()
    # Each chart's numbers in its table: March, by reason in the
    # vocabulary's order (too expensive, switched, no answer).
    assert _month_cells(html, "time-departures-caption", "2026-03") == ["2", "1", "2"]
    usd_march = _month_cells(html, "time-USD-caption", "2026-03")
    assert usd_march == ["$300.00", "$0.00", "$30.00"]
    assert _month_cells(html, "time-EUR-caption", "2026-02") == ["€25.00"]


def _legend(chart):
    """A stacked bar chart's legend: each name's colour."""
    keys = re.findall(
        r'width="12" height="12" fill="([^"]+)"/><text [^>]*>([^<]*)<', chart
    )
    return {name: colour for colour, name in keys}


def _month_cells(html, table, month):
    """The cells of ``month``'s row in the table captioned ``table`` (an id)."""
    rows = html[html.index(f'<caption id="{table}">') :].split("</table>")[0]
    row = rows[rows.index(f'<th scope="row" class="month">{month}</th>') :]
    return re.findall(r'<td class="number"[^>]*>([^<]*)</td>', row.split("</tr>")[0])


def _stacked(chart):
    """A stacked bar chart's totals by row label, the rows with any."""
    texts = re.findall(r"<text [^>]*>([^<]*)</text>", chart)[:24]  # 12 months
    totals = dict(zip(texts[::2], texts[1::2], strict=True))
    assert len(totals) == 12
    return {month: total for month, total in totals.items() if total.strip("0$€¥.,")}


def _chart(html, title):
    """The inline SVG named ``title``, its text summary after it."""
    start = html.index(f'role="img" aria-label="{title}"')
    chart = html[html.rindex("<svg", 0, start) : html.index("</figure>", start)]
    assert f"<title>{title}</title>" in chart
    assert "style=" not in chart  # the CSP allows no inline style
    return chart


def _bars(chart):
    """A bar chart's (label, value) pairs, top to bottom."""
    texts = re.findall(r"<text [^>]*>([^<]*)</text>", chart)
    return list(zip(texts[::2], map(int, texts[1::2]), strict=True))


def test_each_panel_s_chart_has_a_title_a_summary_and_the_panel_s_counts(app, story):
    html = _march_page(app)
    reasons = _chart(html, "Departures by stated reason")
    assert _bars(reasons) == [
        ("It costs more than it is worth to us", 2),
        ("No answer", 2),
        ("We found a better alternative", 1),
    ]
    assert (
        "Given most: It costs more than it is worth to us, 2 of 3 answers"
        " (67\N{NO-BREAK SPACE}%). 2 of 5 departures gave no answer." in reasons
    )
    funnel = _chart(html, "The funnel: departures at each step")
    assert [n for _step, n in _bars(funnel)] == [5, 4, 4, 3, 1]
    assert "Of 5 departures, 3 answered (60\N{NO-BREAK SPACE}%) and 1" in funnel
    causes = _chart(html, "Finished postmortems by primary root cause")
    assert sorted(n for _cause, n in _bars(causes)) == [1, 1, 1]  # d3's unfinished
    assert "in 1 each of 3 finished postmortems" in causes
    segments = _chart(html, "Departures by segment")
    assert _bars(segments) == [("smb", 4), ("enterprise", 1)]
    assert "Most departures: segment smb, 4 of 5 (80\N{NO-BREAK SPACE}%)." in segments
    plans = _chart(html, "Departures by plan")
    assert _bars(plans)[0] == ("growth", 3)


def test_the_page_opens_on_what_costs_the_most_in_each_currency(app, story):
    html = re.sub(r"\s+", " ", _march_page(app))
    # No answer is no reason, however much it lost (JPY: none answered).
    assert (
        "Costing the most in this period: <strong>We found a better"
        " alternative</strong>, €50.00 a month lost (1 departure);"
        " <strong>It costs more than it is worth to us</strong>, $300.00 a month"
        " lost (2 departures)." in html
    )
    assert insights.costliest(
        [
            ReasonRow("switched", "USD", 1, 500),
            ReasonRow("too_expensive", "USD", 3, 500),
            ReasonRow(None, "USD", 9, 9_000),
        ]
    ) == [ReasonRow("too_expensive", "USD", 3, 500)]  # a tie: more departures


def test_an_empty_period_draws_no_chart(app, story):
    html = (
        _staff(app, "csm")
        .get("/insights?from=2025-01-01&to=2025-01-31")
        .get_data(as_text=True)
    )
    assert "<svg" not in html
    assert "No departures in this period" in html


def test_something_else_texts_are_shown_escaped_and_link_to_their_items(app):
    departure = make_departure(app, cancelled_at=at(3, 5))
    words = "<script>alert(1)</script> & paper"
    with app.app_context(), db.write_session() as session:
        record_reason(session.connection(), departure.public_id, "other", words)
        session.commit()
    csm = _staff(app, "csm")
    html = csm.get("/insights?from=2026-03-01&to=2026-03-31").get_data(as_text=True)
    assert "<q>&lt;script&gt;alert(1)&lt;/script&gt; &amp; paper</q>" in html
    assert "<script>alert" not in html
    assert f'href="/review/{departure.public_id}"' in html
    download = csm.get("/insights/reasons.csv?from=2026-03-01&to=2026-03-31")
    assert "paper" not in download.get_data(as_text=True)  # numbers only


def test_a_panel_s_csv_runs_that_panel_s_queries_only(app, story):
    admin = _staff(app, "admin")
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine()
    event.listen(engine, "before_cursor_execute", note)
    try:
        answer = admin.get("/insights/reasons.csv?from=2026-03-01&to=2026-03-31")
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert answer.status_code == 200
    panels = [s for s in statements if "departures" in s]
    assert len(panels) == 1, panels  # the reasons query, not all eleven panels


def test_a_bad_period_and_a_bad_filter_are_both_explained(app, client):
    token = auth(make_token(app, "insights:read"))
    answer = client.get(
        "/api/v1/insights?from=2026-02-01&to=2026-01-01&currency=dollars",
        headers=token,
    )
    assert answer.status_code == 422
    fields = answer.get_json()["fields"]
    assert fields["from"] == ["The period must start on or before its end."]
    assert set(fields) == {"from", "currency"}


# --- the API, every CSV and the page against the story, worked out by hand ------


def _reasons(*rows):
    keys = ("reason", "currency", "departures", "lost_mrr_cents")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _months(*rows):
    """``over_time`` rows from (month, reason, currency, departures, cents)."""
    keys = ("month", "reason", "currency", "departures", "lost_mrr_cents")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _said_found(*rows):
    return [dict(zip(("said", "found", "count"), row, strict=True)) for row in rows]


def _causes(*rows):
    keys = (
        "code",
        "team",
        "currency",
        "primary",
        "contributing",
        "lost_mrr_cents",
        "preventable_yes",
        "preventable_partly",
        "preventable_no",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _breakdown(name, *rows):
    return [
        {
            name: value,
            "departures": departures,
            "lost_mrr": [{"currency": c, "cents": cents} for c, cents in money],
            "top_reason": top,
        }
        for value, departures, money, top in rows
    ]


# d1's action item on poor_fit, done March 12, 09:00: one departure with
# that primary cause in the 90 days before (d1), none in the 90 after.
_FIXES = [
    {
        "code": "poor_fit",
        "last_done_at": "2026-03-12T09:00:00Z",
        "before_per_30_days": 0.33,  # 1 x 30 / 90
        "after_per_30_days": 0.0,
        "change_percent": -100.0,
    }
]
# d2's items (enterprise): onboarding due 2026-03-25 (overdue), product due
# 2099. The period does not apply, the filters do.
_OPEN_ACTIONS = [
    {"team": "onboarding", "open": 1, "overdue": 1},
    {"team": "product", "open": 1, "overdue": 0},
]
_NO_FILTERS = {"segment": None, "plan": None, "csm": None, "currency": None}
_MARCH_ROOT_CAUSES = _causes(
    ("poor_fit", "sales", "USD", 1, 0, 10_000, 1, 0, 0),
    ("failed_adoption", "onboarding", "USD", 1, 0, 20_000, 0, 1, 0),
    ("product_issues", "product", "USD", 0, 1, 0, 0, 0, 0),
    ("poor_service", "support", "USD", 1, 0, 3_000, 0, 0, 1),
)
# Over time, before March: d10 in January ($15.00); d9 (€25.00), d6 and d8
# ($99.99 + $40.00 = $139.99) in February; all "switched". A row per
# currency, its departures that currency's: 1 + 1 + 2 lines add up to 4.
_JANUARY = ("2026-01", "switched", "USD", 1, 1_500)
_FEBRUARY_EUR = ("2026-02", "switched", "EUR", 1, 2_500)
_FEBRUARY_USD = ("2026-02", "switched", "USD", 2, 13_999)
_JANUARY_CSV = ["2026-01,switched,USD,1,1500"]
_FEBRUARY_CSV = ["2026-02,switched,EUR,1,2500", "2026-02,switched,USD,2,13999"]

#: Each panel's CSV header, as the README lists the columns.
_HEADER = {
    "recurring": "kind,code,last_30_days,baseline_per_30_days",
    "reasons": "reason,currency,departures,lost_mrr_cents,share_percent",
    "funnel": "departed,invited,opened,answered,consented,median_answer_seconds,"
    "invited_percent,opened_percent,answered_percent,consented_percent",
    "by_segment": "segment,departures,top_reason,currency,cents",
    "by_plan": "plan,departures,top_reason,currency,cents",
    "over_time": "month,reason,currency,departures,lost_mrr_cents",
    "said_vs_found": "said,found,count,differs_share_percent",
    "root_causes": "code,team,currency,primary,contributing,lost_mrr_cents,"
    "preventable_yes,preventable_partly,preventable_no",
    "fixes": "code,last_done_at,before_per_30_days,after_per_30_days,change_percent",
    "open_actions": "team,open,overdue",
}

#: Per query: the API's whole answer, each panel's CSV, and what the page
#: writes in words: the median time to answer (whole units, rounded down)
#: and the 12 months of "over time".
HAND_WORKED = {
    "from=2026-03-01&to=2026-03-31": (
        {
            "period": {"from": "2026-03-01", "to": "2026-03-31"},
            "filters": _NO_FILTERS,
            # As of March 31 (March 2-31 against December 2 - March 1):
            # too_expensive 2 (d1, d2), switched 1; every primary cause once.
            "recurring": [],
            "reasons": _reasons(
                ("too_expensive", "USD", 2, 30_000),
                ("switched", "EUR", 1, 5_000),
                (None, "JPY", 1, 1_000),
                (None, "USD", 1, 3_000),
            ),
            "over_time": _months(
                _JANUARY,
                _FEBRUARY_EUR,
                _FEBRUARY_USD,
                ("2026-03", "switched", "EUR", 1, 5_000),  # d3
                ("2026-03", "too_expensive", "USD", 2, 30_000),  # d1 + d2
                ("2026-03", None, "JPY", 1, 1_000),  # d5
                ("2026-03", None, "USD", 1, 3_000),  # d4
            ),
            # answers 2 h, 24 h and 1 h after their invitations: median 2 h
            "funnel": {
                "departed": 5,
                "invited": 4,
                "opened": 4,
                "answered": 3,
                "consented": 1,
                "median_answer_seconds": 7200.0,
            },
            "said_vs_found": _said_found(
                ("too_expensive", "failed_adoption", 1),
                ("too_expensive", "poor_fit", 1),
                (None, "poor_service", 1),
            ),
            "root_causes": _MARCH_ROOT_CAUSES,
            "fixes": _FIXES,
            "open_actions": _OPEN_ACTIONS,
            "by_segment": _breakdown(
                "segment",
                (
                    "smb",
                    4,
                    [("EUR", 5_000), ("JPY", 1_000), ("USD", 13_000)],
                    "switched",
                ),
                ("enterprise", 1, [("USD", 20_000)], "too_expensive"),
            ),
            "by_plan": _breakdown(
                "plan",
                ("growth", 3, [("EUR", 5_000), ("USD", 13_000)], "switched"),
                ("scale", 1, [("USD", 20_000)], "too_expensive"),
                ("starter", 1, [("JPY", 1_000)], None),
            ),
            # both stated reasons with a finished postmortem found another cause
            "said_vs_found_differs_share": 1.0,
        },
        {
            "recurring": [_HEADER["recurring"]],
            "reasons": [
                _HEADER["reasons"],
                "too_expensive,USD,2,30000,40",
                "switched,EUR,1,5000,20",
                ",JPY,1,1000,20",
                ",USD,1,3000,20",
            ],
            "funnel": [
                _HEADER["funnel"],
                "5,4,4,3,1,7200.0,80,100,75,33",
            ],
            "by_segment": [
                _HEADER["by_segment"],
                "smb,4,switched,EUR,5000",
                "smb,4,switched,JPY,1000",
                "smb,4,switched,USD,13000",
                "enterprise,1,too_expensive,USD,20000",
            ],
            "by_plan": [
                _HEADER["by_plan"],
                "growth,3,switched,EUR,5000",
                "growth,3,switched,USD,13000",
                "scale,1,too_expensive,USD,20000",
                "starter,1,,JPY,1000",
            ],
            "over_time": [
                _HEADER["over_time"],
                *_JANUARY_CSV,
                *_FEBRUARY_CSV,
                "2026-03,switched,EUR,1,5000",
                "2026-03,too_expensive,USD,2,30000",
                "2026-03,,JPY,1,1000",
                "2026-03,,USD,1,3000",
            ],
            # 3 finished postmortems, all 3 found another cause: 100 %
            "said_vs_found": [
                _HEADER["said_vs_found"],
                "too_expensive,failed_adoption,1,100",
                "too_expensive,poor_fit,1,100",
                ",poor_service,1,100",
            ],
            "root_causes": [
                _HEADER["root_causes"],
                "poor_fit,sales,USD,1,0,10000,1,0,0",
                "failed_adoption,onboarding,USD,1,0,20000,0,1,0",
                "product_issues,product,USD,0,1,0,0,0,0",
                "poor_service,support,USD,1,0,3000,0,0,1",
            ],
        },
        {"median": "2 h", "months": ("2025-04", "2026-03")},
    ),
    # d6, d8 (USD) and d9 (EUR): answered, never invited nor opened; no
    # postmortem. "switched" recurs (see the module's docstring).
    "from=2026-02-01&to=2026-02-28": (
        {
            "period": {"from": "2026-02-01", "to": "2026-02-28"},
            "filters": _NO_FILTERS,
            "recurring": [
                {
                    "kind": "reason",
                    "code": "switched",
                    "last_30_days": 3,  # d8, d9, d6
                    "baseline_per_30_days": 0.33,  # d10: 1 x 30 / 90
                }
            ],
            "reasons": _reasons(
                ("switched", "USD", 2, 13_999), ("switched", "EUR", 1, 2_500)
            ),
            # not March: after the period
            "over_time": _months(_JANUARY, _FEBRUARY_EUR, _FEBRUARY_USD),
            "funnel": {
                "departed": 3,
                "invited": 0,
                "opened": 0,
                "answered": 3,
                "consented": 0,
                "median_answer_seconds": None,
            },
            "said_vs_found": [],
            "root_causes": [],
            "fixes": _FIXES,
            "open_actions": _OPEN_ACTIONS,
            "by_segment": _breakdown(
                "segment",
                ("smb", 2, [("USD", 13_999)], "switched"),
                ("enterprise", 1, [("EUR", 2_500)], "switched"),
            ),
            "by_plan": _breakdown(
                "plan",
                ("growth", 2, [("USD", 13_999)], "switched"),
                ("scale", 1, [("EUR", 2_500)], "switched"),
            ),
            "said_vs_found_differs_share": None,
        },
        {
            "recurring": [_HEADER["recurring"], "reason,switched,3,0.33"],
            # 2 and 1 of 3
            "reasons": [
                _HEADER["reasons"],
                "switched,USD,2,13999,67",
                "switched,EUR,1,2500,33",
            ],
            # a step after an empty one has no share
            "funnel": [
                _HEADER["funnel"],
                "3,0,0,3,0,,0,,,0",
            ],
            "by_segment": [
                _HEADER["by_segment"],
                "smb,2,switched,USD,13999",
                "enterprise,1,switched,EUR,2500",
            ],
            "by_plan": [
                _HEADER["by_plan"],
                "growth,2,switched,USD,13999",
                "scale,1,switched,EUR,2500",
            ],
            "over_time": [_HEADER["over_time"], *_JANUARY_CSV, *_FEBRUARY_CSV],
            # empty panels keep their columns
            "said_vs_found": [_HEADER["said_vs_found"]],
            "root_causes": [_HEADER["root_causes"]],
        },
        {"median": "no answers to an invitation yet", "months": ("2025-03", "2026-02")},
    ),
    # d1, d3, d4, d5 (d2 is enterprise): its open actions are filtered out;
    # d9 (enterprise) is not in February's column.
    "from=2026-03-01&to=2026-03-31&segment=smb": (
        {
            "period": {"from": "2026-03-01", "to": "2026-03-31"},
            "filters": _NO_FILTERS | {"segment": "smb"},
            "recurring": [],
            "reasons": _reasons(
                ("switched", "EUR", 1, 5_000),
                ("too_expensive", "USD", 1, 10_000),
                (None, "JPY", 1, 1_000),
                (None, "USD", 1, 3_000),
            ),
            "over_time": _months(
                _JANUARY,
                _FEBRUARY_USD,  # d6 + d8
                ("2026-03", "switched", "EUR", 1, 5_000),  # d3
                ("2026-03", "too_expensive", "USD", 1, 10_000),  # d1
                ("2026-03", None, "JPY", 1, 1_000),  # d5
                ("2026-03", None, "USD", 1, 3_000),  # d4
            ),
            # answers 2 h (d1) and 1 h (d3) after their invitations
            "funnel": {
                "departed": 4,
                "invited": 3,
                "opened": 3,
                "answered": 2,
                "consented": 1,
                "median_answer_seconds": 5400.0,
            },
            "said_vs_found": _said_found(
                ("too_expensive", "poor_fit", 1), (None, "poor_service", 1)
            ),
            "root_causes": [
                row for row in _MARCH_ROOT_CAUSES if row["code"] != "failed_adoption"
            ],
            "fixes": _FIXES,
            "open_actions": [],
            "by_segment": _breakdown(
                "segment",
                (
                    "smb",
                    4,
                    [("EUR", 5_000), ("JPY", 1_000), ("USD", 13_000)],
                    "switched",
                ),
            ),
            "by_plan": _breakdown(
                "plan",
                ("growth", 3, [("EUR", 5_000), ("USD", 13_000)], "switched"),
                ("starter", 1, [("JPY", 1_000)], None),
            ),
            "said_vs_found_differs_share": 1.0,
        },
        {
            "recurring": [_HEADER["recurring"]],
            "reasons": [
                _HEADER["reasons"],
                "switched,EUR,1,5000,25",
                "too_expensive,USD,1,10000,25",
                ",JPY,1,1000,25",
                ",USD,1,3000,25",
            ],
            "funnel": [
                _HEADER["funnel"],
                "4,3,3,2,1,5400.0,75,100,67,50",
            ],
            "by_segment": [
                _HEADER["by_segment"],
                "smb,4,switched,EUR,5000",
                "smb,4,switched,JPY,1000",
                "smb,4,switched,USD,13000",
            ],
            "by_plan": [
                _HEADER["by_plan"],
                "growth,3,switched,EUR,5000",
                "growth,3,switched,USD,13000",
                "starter,1,,JPY,1000",
            ],
            "over_time": [
                _HEADER["over_time"],
                *_JANUARY_CSV,
                _FEBRUARY_CSV[1],  # d6 + d8
                "2026-03,switched,EUR,1,5000",
                "2026-03,too_expensive,USD,1,10000",
                "2026-03,,JPY,1,1000",
                "2026-03,,USD,1,3000",
            ],
            "said_vs_found": [
                _HEADER["said_vs_found"],
                "too_expensive,poor_fit,1,100",
                ",poor_service,1,100",
            ],
            "root_causes": [
                _HEADER["root_causes"],
                "poor_fit,sales,USD,1,0,10000,1,0,0",
                "product_issues,product,USD,0,1,0,0,0,0",
                "poor_service,support,USD,1,0,3000,0,0,1",
            ],
        },
        # 5400 s: 1.5 h, written in whole hours
        {"median": "1 h", "months": ("2025-04", "2026-03")},
    ),
}

#: The same in every period: fixes and open actions are judged on their own
#: dates.
_FIXES_CSV = [_HEADER["fixes"], "poor_fit,2026-03-12T09:00:00Z,0.33,0.0,-100.0"]


@pytest.mark.parametrize("query", list(HAND_WORKED))
def test_the_api_and_every_csv_are_the_figures_worked_out_by_hand(
    app, client, story, query
):
    """And so is every table of the page."""
    from survey.insights.export import CSV_PANELS

    body, csvs, words = HAND_WORKED[query]
    csvs = csvs | {"fixes": _FIXES_CSV}
    csvs["open_actions"] = [_HEADER["open_actions"]] + [
        f"{row['team']},{row['open']},{row['overdue']}" for row in body["open_actions"]
    ]
    answer = client.get(
        f"/api/v1/insights?{query}", headers=auth(make_token(app, "insights:read"))
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == body
    assert set(CSV_PANELS) == set(csvs)
    admin = _staff(app, "admin")
    assert admin.get(f"/insights/nothing.csv?{query}").status_code == 404
    for panel in CSV_PANELS:
        download = admin.get(f"/insights/{panel}.csv?{query}")
        assert download.status_code == 200, panel
        assert "attachment" in download.headers["Content-Disposition"], panel
        assert download.get_data(as_text=True).splitlines() == csvs[panel], panel
    page = admin.get(f"/insights?{query}")
    assert page.status_code == 200
    _assert_the_page_shows(app, page.get_data(as_text=True), body, csvs, words)


# --- reading the page's tables back into figures ---------------------------------


@dataclass
class _Table:
    attrs: dict[str, str | None]
    caption: str = ""
    rows: list[list[str]] = field(default_factory=list)

    def records(self) -> list[list[str]]:
        """The rows under the header row."""
        return self.rows[1:]


@dataclass
class _Section:
    tables: list[_Table] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.words).split())


def _clean(text: str) -> str:
    """A cell's text, spaces (no-break ones too) as one; a line break kept."""
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()


class _Sections(HTMLParser):
    """The page's sections, by the id of their heading (without "-title"):
    the text of their tables' cells, row by row, of their flags, and all."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, _Section] = {}
        self._section: _Section | None = None
        self._table: _Table | None = None
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._flag: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        if tag == "section":
            heading = str(named["aria-labelledby"]).removesuffix("-title")
            self._section = self.sections.setdefault(heading, _Section())
        elif self._section is None:
            return
        elif tag == "table":
            self._table = _Table(named)
            self._section.tables.append(self._table)
        elif tag == "caption":
            self._caption = []
        elif tag == "tr" and self._table is not None:
            self._table.rows.append([])
        elif tag in ("th", "td") and self._table is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "li" and "flag" in str(named.get("class", "")).split():
            self._flag = []

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "table":
            self._table = None
        elif tag == "caption" and self._table is not None and self._caption is not None:
            self._table.caption = _clean("".join(self._caption))
            self._caption = None
        elif tag in ("th", "td") and self._table is not None and self._cell is not None:
            self._table.rows[-1].append(_clean("".join(self._cell)))
            self._cell = None
        elif tag == "li" and self._section is not None and self._flag is not None:
            self._section.flags.append(_clean("".join(self._flag)))
            self._flag = None

    def handle_data(self, data):
        if self._section is None:
            return
        self._section.words.append(data)
        for collecting in (self._cell, self._caption, self._flag):
            if collecting is not None:
                collecting.append(data)


_CURRENCY_OF_SYMBOL = {"$": "USD", "€": "EUR", "¥": "JPY"}


def _amount(text: str) -> dict[str, Any]:
    """An amount as the page writes it ("$1,234.50") as the API's."""
    return {
        "currency": _CURRENCY_OF_SYMBOL[text[0]],
        "cents": int(re.sub(r"\D", "", text)),
    }


def _share(text: str) -> int | None:
    return None if text == "—" else int(text.removesuffix(" %"))


def _number(text: str) -> float | None:
    return None if text == "—" else float(text.removesuffix(" %"))


def _assert_the_page_shows(app, html, body, csvs, words) -> None:
    """Every table of the page holds the hand-worked figures of its panel."""
    with app.app_context():
        reason_of: dict[str, str | None] = {
            name: code for code, name in wordings.known_reasons().items()
        }
    reason_of["No answer"] = None
    cause_of = {str(meaning): code for code, (meaning, _team) in ROOT_CAUSES.items()}
    team_of = {str(name): code for code, name in TEAMS.items()}
    sections = _Sections(html).sections

    # Recurring: a flag each, in words.
    flags = []
    for flag in sections["recurring"].flags:
        found = re.fullmatch(
            r"(.+) \((stated reason|root cause)\): (\d+) in the last 30 days,"
            r" against ([\d.]+) per 30 days over the 90 days before\.",
            flag,
        )
        assert found, flag
        name, kind, recent, baseline = found.groups()
        reason = kind == "stated reason"
        flags.append(
            {
                "kind": "reason" if reason else "root_cause",
                "code": reason_of[name] if reason else cause_of[name],
                "last_30_days": int(recent),
                "baseline_per_30_days": float(baseline),
            }
        )
    assert flags == body["recurring"]

    # Why they say they leave: count, share (as in the CSV), lost MRR.
    [reasons] = sections["reasons"].tables
    assert [
        {
            "reason": reason_of[name],
            "currency": currency,
            "departures": int(count),
            "lost_mrr_cents": _amount(money)["cents"],
        }
        for name, currency, count, _share_, money in reasons.records()
    ] == body["reasons"]
    assert [_share(row[3]) for row in reasons.records()] == [
        int(line.rsplit(",", 1)[1]) for line in csvs["reasons"][1:]
    ]
    for row in reasons.records():
        assert _amount(row[4])["currency"] == row[1], row

    # Over time: departures by month and reason, all currencies (the API's
    # rows of a month and reason added up, and so the CSV's lines: a
    # spreadsheet adding up its departures gets the page's); then the MRR
    # lost in each currency by month and reason. A cell not in the rows is 0.
    departures, *per_currency = sections["time"].tables
    first, last = words["months"]
    months = [row[0] for row in departures.records()]
    assert (len(months), months[0], months[-1]) == (12, first, last)
    assert sorted(set(months)) == months
    expected: Counter[tuple[str, str | None]] = Counter()
    for r in body["over_time"]:
        expected[r["month"], r["reason"]] += r["departures"]
    assert _grid(departures, reason_of, int) == _filled(expected, months)
    summed: Counter[tuple[str, str | None]] = Counter()
    for line in csv.DictReader(csvs["over_time"]):
        summed[line["month"], line["reason"] or None] += int(line["departures"])
    assert summed == expected
    currencies = sorted({r["currency"] for r in body["over_time"]})
    assert [table.attrs["data-currency"] for table in per_currency] == currencies
    for table in per_currency:
        currency = table.attrs["data-currency"]
        lost = {
            (r["month"], r["reason"]): r["lost_mrr_cents"]
            for r in body["over_time"]
            if r["currency"] == currency
        }
        shown = _grid(table, reason_of, lambda text: _amount(text)["cents"])
        assert shown == _filled(lost, months), currency
        symbols = {
            _amount(cell)["currency"] for row in table.records() for cell in row[1:]
        }
        assert symbols == {currency}

    # The funnel: each step, its share of the step before, the median wait.
    [funnel] = sections["funnel"].tables
    steps = ("departed", "invited", "opened", "answered", "consented")
    assert [row[0] for row in funnel.records()] == [
        "Departed",
        "Invited (sent)",
        "Opened",
        "Answered",
        "Consented to win-back",
    ]
    assert {
        step: int(row[1]) for step, row in zip(steps, funnel.records(), strict=True)
    } == {step: body["funnel"][step] for step in steps}
    rates = csvs["funnel"][1].split(",")[-4:]
    assert [_share(row[2]) for row in funnel.records()[1:]] == [
        int(rate) if rate else None for rate in rates
    ]
    assert (
        f"Median time from invitation to answer: {words['median']}."
        in sections["funnel"].text
    )

    # Said versus found: the matrix's counts, and the share that differs.
    said = sections["said"]
    if body["said_vs_found"]:
        [matrix] = said.tables
        found = [cause_of[name] for name in matrix.rows[0][1:]]
        cells = {
            (reason_of[row[0]], code): int(count)
            for row in matrix.records()
            for code, count in zip(found, row[1:], strict=True)
            if count != "0"
        }
        assert cells == {
            (r["said"], r["found"]): r["count"] for r in body["said_vs_found"]
        }
        share = re.search(r"In (\d+) % of the finished postmortems", said.text)
        assert share, said.text
        assert {line.rsplit(",", 1)[1] for line in csvs["said_vs_found"][1:]} == {
            share.group(1)
        }
    else:
        assert not said.tables
        assert "No finished postmortems in this period." in said.text

    # Root causes, by team.
    causes = sections["causes"].tables
    assert [
        {
            "code": cause_of[cause],
            "team": team_of[team],
            "currency": currency,
            "primary": int(primary),
            "contributing": int(contributing),
            "lost_mrr_cents": _amount(money)["cents"],
            **dict(
                zip(
                    ("preventable_yes", "preventable_partly", "preventable_no"),
                    map(int, verdicts.split(" / ")),
                    strict=True,
                )
            ),
        }
        for table in causes
        for (team, cause, currency, primary, contributing, money, verdicts) in (
            table.records()
        )
    ] == body["root_causes"]

    # By segment and by plan: money a line per currency.
    for panel, name in (("by_segment", "segment"), ("by_plan", "plan")):
        [table] = sections[panel].tables
        assert [
            {
                name: None if value == "(none)" else value,
                "departures": int(count),
                "lost_mrr": [_amount(line) for line in money.split("\n")],
                "top_reason": None if top == "—" else reason_of[top],
            }
            for value, count, money, top in table.records()
        ] == body[panel], panel

    # Are the fixes working, and the open action items by team.
    fixes, *teams = sections["fixes"].tables
    assert [
        {
            "code": cause_of[cause],
            "last_done_at": done,
            "before_per_30_days": float(before),
            "after_per_30_days": _number(after),
            "change_percent": _number(change),
        }
        for cause, done, before, after, change in fixes.records()
    ] == [row | {"last_done_at": row["last_done_at"][:10]} for row in body["fixes"]]
    shown_teams = [
        {"team": team_of[team], "open": int(open_), "overdue": int(overdue)}
        for table in teams
        for team, open_, overdue in table.records()
    ]
    assert shown_teams == body["open_actions"]


def _grid(table, reason_of, read) -> dict[tuple[str, str | None], Any]:
    """A month-by-reason table's cells, by (month, reason code)."""
    reasons = [reason_of[name] for name in table.rows[0][1:]]
    return {
        (row[0], reason): read(cell)
        for row in table.records()
        for reason, cell in zip(reasons, row[1:], strict=True)
    }


def _filled(cells, months) -> dict[tuple[str, str | None], int]:
    """``cells`` in every month, 0 where there is none, for their reasons."""
    reasons = {reason for _month, reason in cells}
    return {(m, r): cells.get((m, r), 0) for m in months for r in reasons}


def test_an_empty_panel_s_csv_has_the_columns_a_full_one_has(app, story):
    from survey.insights.export import CSV_PANELS, csv_text

    admin = _staff(app, "admin")
    for panel in CSV_PANELS:
        if panel == "funnel":  # never empty
            continue
        # Recurring is not empty in February only (see the module's docstring).
        month = "02-01&to=2026-02-28" if panel == "recurring" else "03-01&to=2026-03-31"
        full = admin.get(f"/insights/{panel}.csv?from=2026-{month}")
        header, *rows = full.get_data(as_text=True).splitlines()
        assert rows, panel
        assert csv_text(panel, []).splitlines() == [header], panel

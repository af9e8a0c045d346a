"""Insights: every figure checked against a small data set worked out by hand.

The data set (see ``story``), March 2026 unless said:

====  =========  ========  ======  ==========  =============  ======  ===========
      cancelled  currency  MRR     segment     answer         opened  consent
====  =========  ========  ======  ==========  =============  ======  ===========
d1    03-05      USD       100.00  smb         too_expensive  yes     granted
d2    03-10      USD       200.00  enterprise  too_expensive  yes     none
d3    03-15      EUR        50.00  smb         switched       yes     withdrawn
d4    03-20      USD        30.00  smb         (none)         yes     none
d5    03-25      JPY       1000    smb         (none)         no      none
d6    02-20      USD        99.99  smb         switched       no      none
d7    03-28      USD        70.00  smb         (erased: never counted)
====  =========  ========  ======  ==========  =============  ======  ===========

Invitations sent for d1-d4 (d5's and d6's still queued); answers 2 h (d1),
24 h (d2) and 1 h (d3) after theirs. Postmortems: d1 done (primary
``poor_fit``, also ``product_issues``), d2 closed (``failed_adoption``), d3
in review (``competitor``: not finished, not counted), d4 done
(``poor_service``); preventable: d1 yes, d2 partly, d4 no. Action items: on
d1's, one for sales done March 12, 09:00; on d2's, two open ones (onboarding
due 2026-03-25, overdue; product due 2099-01-01).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from itertools import combinations

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
    assert _panels(app, insights.reasons, FEBRUARY) == [
        ReasonRow("switched", "USD", 1, 9_999)
    ]


def test_the_funnel_and_the_median_time_to_answer(app, story):
    # departed, invited (sent), opened, answered, consented, median wait
    hours = timedelta(hours=1)
    smb = Scope(MARCH.start, MARCH.end, segment="smb")
    assert _panels(app, insights.funnel, MARCH) == Funnel(5, 4, 4, 3, 1, 2 * hours)
    assert _panels(app, insights.funnel, smb) == Funnel(4, 3, 3, 2, 1, 1.5 * hours)
    assert _panels(app, insights.funnel, FEBRUARY) == Funnel(1, 0, 0, 1, 0, None)


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
    assert february == [Breakdown("growth", 1, {"USD": 9_999}, "switched")]


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


def test_over_time_counts_twelve_months_by_reason_and_currency(app, story):
    assert insights.months_ending(date(2026, 3, 31))[:2] == ["2025-04", "2025-05"]
    assert insights.months_ending(date(2026, 3, 1))[-1] == "2026-03"
    assert _panels(app, insights.over_time, MARCH) == [
        MonthRow("2026-02", "switched", "USD", 1, 9_999),
        MonthRow("2026-03", "switched", "EUR", 1, 5_000),
        MonthRow("2026-03", "too_expensive", "USD", 2, 30_000),
        MonthRow("2026-03", None, "JPY", 1, 1_000),
        MonthRow("2026-03", None, "USD", 1, 3_000),
    ]
    # Ending in February: March is after the period.
    assert _panels(app, insights.over_time, FEBRUARY) == [
        MonthRow("2026-02", "switched", "USD", 1, 9_999),
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
    # The period's lost MRR, one total per currency (hand-worked: d1 + d2 +
    # d4 in USD; d3 in EUR; d5 in JPY; d7 erased, d6 in February).
    for currency, total in (("EUR", "€50.00"), ("JPY", "¥1,000"), ("USD", "$330.00")):
        assert f'data-label="Lost MRR ({currency})">{total}<' in html
    # Never a sum across currencies: every amount shown anywhere on the page
    # is the MRR of some departures of its own currency, added up.
    own = {"$": [10_000, 20_000, 3_000, 9_999], "€": [5_000], "¥": [1_000]}
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


def test_marketing_and_strangers_are_refused_the_page_and_the_csvs(app, client):
    marketing = _staff(app, "marketing")
    assert marketing.get("/insights").status_code == 403
    assert marketing.get("/insights/reasons.csv").status_code == 403
    for path in ("/insights", "/insights/reasons.csv"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert "/login" in answer.headers["Location"]


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


def test_over_time_is_a_chart_with_its_numbers_in_a_table(app, story):
    html = _march_page(app)
    chart = _chart(html, "Departures per month, by stated reason")
    assert chart.count("<rect") == 4 + 3  # Feb: 1 reason; Mar: 3; legend: 3
    assert "The 12 months to 2026-03: 6 departures" in html
    # March: 2 too expensive, 1 switched, 2 unanswered; USD 330.00 lost.
    march = html[html.index('<th scope="row" class="month">2026-03</th>') :].split(
        "</tr>"
    )[0]
    cells = re.findall(r'<td class="number"[^>]*>([^<]*)</td>', march)
    assert cells == ["2", "1", "2", "€50.00", "¥1,000", "$330.00"]


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


# --- the API and every CSV against the story, worked out by hand ------------------


def _reasons(*rows):
    keys = ("reason", "currency", "departures", "lost_mrr_cents")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _months(*rows):
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
_FEBRUARY_MONTH = ("2026-02", "switched", "USD", 1, 9_999)

#: Each panel's CSV header, as the README lists the columns.
_HEADER = {
    "reasons": "reason,currency,departures,lost_mrr_cents,share_percent",
    "funnel": "departed,invited,opened,answered,consented,median_answer_seconds,"
    "invited_percent,opened_percent,answered_percent,consented_percent",
    "by_segment": "segment,departures,top_reason,currency,cents",
    "by_plan": "plan,departures,top_reason,currency,cents",
    "over_time": "month,reason,currency,departures,lost_mrr_cents",
    "said_vs_found": "said,found,count",
    "root_causes": "code,team,currency,primary,contributing,lost_mrr_cents,"
    "preventable_yes,preventable_partly,preventable_no",
}

#: Per query: the API's whole answer, and each panel's CSV.
HAND_WORKED = {
    "from=2026-03-01&to=2026-03-31": (
        {
            "period": {"from": "2026-03-01", "to": "2026-03-31"},
            "filters": _NO_FILTERS,
            "recurring": [],
            "reasons": _reasons(
                ("too_expensive", "USD", 2, 30_000),
                ("switched", "EUR", 1, 5_000),
                (None, "JPY", 1, 1_000),
                (None, "USD", 1, 3_000),
            ),
            "over_time": _months(
                _FEBRUARY_MONTH,
                ("2026-03", "switched", "EUR", 1, 5_000),
                ("2026-03", "too_expensive", "USD", 2, 30_000),
                ("2026-03", None, "JPY", 1, 1_000),
                ("2026-03", None, "USD", 1, 3_000),
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
                "2026-02,switched,USD,1,9999",
                "2026-03,switched,EUR,1,5000",
                "2026-03,too_expensive,USD,2,30000",
                "2026-03,,JPY,1,1000",
                "2026-03,,USD,1,3000",
            ],
            "said_vs_found": [
                _HEADER["said_vs_found"],
                "too_expensive,failed_adoption,1",
                "too_expensive,poor_fit,1",
                ",poor_service,1",
            ],
            "root_causes": [
                _HEADER["root_causes"],
                "poor_fit,sales,USD,1,0,10000,1,0,0",
                "failed_adoption,onboarding,USD,1,0,20000,0,1,0",
                "product_issues,product,USD,0,1,0,0,0,0",
                "poor_service,support,USD,1,0,3000,0,0,1",
            ],
        },
    ),
    # Only d6: answered, never invited nor opened; no postmortem.
    "from=2026-02-01&to=2026-02-28": (
        {
            "period": {"from": "2026-02-01", "to": "2026-02-28"},
            "filters": _NO_FILTERS,
            "recurring": [],
            "reasons": _reasons(("switched", "USD", 1, 9_999)),
            "over_time": _months(_FEBRUARY_MONTH),  # March is after the period
            "funnel": {
                "departed": 1,
                "invited": 0,
                "opened": 0,
                "answered": 1,
                "consented": 0,
                "median_answer_seconds": None,
            },
            "said_vs_found": [],
            "root_causes": [],
            "fixes": _FIXES,
            "open_actions": _OPEN_ACTIONS,
            "by_segment": _breakdown(
                "segment", ("smb", 1, [("USD", 9_999)], "switched")
            ),
            "by_plan": _breakdown("plan", ("growth", 1, [("USD", 9_999)], "switched")),
            "said_vs_found_differs_share": None,
        },
        {
            "reasons": [
                _HEADER["reasons"],
                "switched,USD,1,9999,100",
            ],
            # a step after an empty one has no share
            "funnel": [
                _HEADER["funnel"],
                "1,0,0,1,0,,0,,,0",
            ],
            "by_segment": [
                _HEADER["by_segment"],
                "smb,1,switched,USD,9999",
            ],
            "by_plan": [
                _HEADER["by_plan"],
                "growth,1,switched,USD,9999",
            ],
            "over_time": [
                _HEADER["over_time"],
                "2026-02,switched,USD,1,9999",
            ],
            # empty panels keep their columns
            "said_vs_found": [_HEADER["said_vs_found"]],
            "root_causes": [_HEADER["root_causes"]],
        },
    ),
    # d1, d3, d4, d5 (d2 is enterprise): its open actions are filtered out.
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
                _FEBRUARY_MONTH,
                ("2026-03", "switched", "EUR", 1, 5_000),
                ("2026-03", "too_expensive", "USD", 1, 10_000),
                ("2026-03", None, "JPY", 1, 1_000),
                ("2026-03", None, "USD", 1, 3_000),
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
                "2026-02,switched,USD,1,9999",
                "2026-03,switched,EUR,1,5000",
                "2026-03,too_expensive,USD,1,10000",
                "2026-03,,JPY,1,1000",
                "2026-03,,USD,1,3000",
            ],
            "said_vs_found": [
                _HEADER["said_vs_found"],
                "too_expensive,poor_fit,1",
                ",poor_service,1",
            ],
            "root_causes": [
                _HEADER["root_causes"],
                "poor_fit,sales,USD,1,0,10000,1,0,0",
                "product_issues,product,USD,0,1,0,0,0,0",
                "poor_service,support,USD,1,0,3000,0,0,1",
            ],
        },
    ),
}

#: The same in every period: fixes and open actions are judged on their own
#: dates; recurring needs three departures lately.
_EVERY_PERIOD_CSV = {
    "recurring": ["kind,code,last_30_days,baseline_per_30_days"],
    "fixes": [
        "code,last_done_at,before_per_30_days,after_per_30_days,change_percent",
        "poor_fit,2026-03-12T09:00:00Z,0.33,0.0,-100.0",
    ],
}


@pytest.mark.parametrize("query", list(HAND_WORKED))
def test_the_api_and_every_csv_are_the_figures_worked_out_by_hand(
    app, client, story, query
):
    from survey.insights.export import CSV_PANELS

    body, csvs = HAND_WORKED[query]
    csvs = csvs | _EVERY_PERIOD_CSV
    open_actions = ["team,open,overdue"] + [
        f"{row['team']},{row['open']},{row['overdue']}" for row in body["open_actions"]
    ]
    csvs["open_actions"] = open_actions
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


def test_an_empty_panel_s_csv_has_the_columns_a_full_one_has(app, story):
    from survey.insights.export import CSV_PANELS, csv_text

    admin = _staff(app, "admin")
    query = "from=2026-03-01&to=2026-03-31"
    for panel in CSV_PANELS:
        if panel in ("funnel", "recurring"):  # never empty; empty in the story
            continue
        full = admin.get(f"/insights/{panel}.csv?{query}").get_data(as_text=True)
        header, *rows = full.splitlines()
        assert rows, panel
        assert csv_text(panel, []).splitlines() == [header], panel

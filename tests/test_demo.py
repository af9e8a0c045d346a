"""The demo data: a year of history whose story shows at once on /insights.

The story (see ``survey/demo.py``): product issues rising in the last 30
days (flagged as recurring), postmortems that often find another cause than
the customer named, and the onboarding fix of about four and a half months
ago after which failed adoption fell.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from survey import db, tokens
from survey.demo import DEMO_PREFIX, load_demo
from survey.departures.models import Departure
from survey.insights import service as insights
from survey.outbox import OutboxMessage
from survey.review_items import ReviewItem
from tests.factories import path_of


def load(app) -> list[str]:
    """Load the demo as ``flask demo`` does: one session, one commit."""
    with app.app_context(), db.write_session() as session:
        links = load_demo(session)
        session.commit()
    return links


def test_demo_tells_its_story_on_insights(app, session, clock):
    load(app)
    now = clock()
    with app.app_context():
        recent = insights.panels(session, insights.scope_from({}, now.date()), now=now)
        year = insights.panels(
            session, insights.scope_from({"days": "365"}, now.date()), now=now
        )

    # A year of departures, demo ones only, and no real person's address.
    departures = session.scalars(select(Departure)).all()
    assert 250 <= len(departures) <= 450
    assert all(d.external_id.startswith(DEMO_PREFIX) for d in departures)
    assert all(d.contact_email.endswith(".example") for d in departures)
    assert len({d.csm_email for d in departures}) >= 3
    assert {d.segment for d in departures} == {"smb", "mid-market", "enterprise"}
    assert {d.plan for d in departures} == {"starter", "growth", "enterprise"}
    assert {row.currency for row in year.reasons} == {"USD", "EUR"}
    assert len({row.month for row in year.over_time}) == 12
    assert {row.month for row in year.over_time} == set(
        insights.months_ending(now.date())
    )

    # A realistic funnel: most invited, fewer opened, fewer answered.
    funnel = year.funnel
    assert funnel.departed >= funnel.invited > funnel.opened > funnel.answered
    assert funnel.invited >= 0.95 * funnel.departed
    assert funnel.answered >= 0.5 * funnel.departed
    assert 0 < funnel.consented < funnel.answered
    assert funnel.median_answer_time is not None
    assert any(row.reason is None for row in year.reasons)  # some never answer
    assert any(row.reason == "other" for row in year.reasons)
    assert recent.other_texts or year.other_texts

    # 1. A rising cause, flagged in the default period (the last 30 days):
    # product issues, said and found, at the top of the flags.
    flagged = {(flag.kind, flag.code): flag for flag in recent.recurring}
    assert ("reason", "product_issues") in flagged
    assert ("root_cause", "product_issues") in flagged
    assert recent.recurring[0].code == "product_issues"
    rising = flagged["reason", "product_issues"]
    assert rising.last_30_days >= 2 * max(rising.baseline_per_30_days, 1)

    # 2. Said versus found: finished postmortems often find another cause.
    # (Some share differs whatever customers say: no stated reason names
    # "poor fit" or "oversold", and some postmortems are of silent losses;
    # customers naming what staff find would make it about 0.3.)
    matrix = insights.said_found_matrix(year.said_vs_found)
    assert sum(matrix.counts.values()) >= 100
    assert matrix.differs_share is not None
    assert 0.4 <= matrix.differs_share <= 0.8
    assert insights.said_found_matrix(recent.said_vs_found).differs_share is not None
    assert matrix.counts.get(("too_expensive", "failed_adoption"), 0) >= 3

    # 3. A fix that worked: failed adoption, fixed 4-5 months ago, fell after.
    fixes = {fix.code: fix for fix in year.fixes}
    onboarding = fixes["failed_adoption"]
    assert timedelta(days=120) <= now - onboarding.last_done_at <= timedelta(days=155)
    assert onboarding.change_percent is not None
    assert onboarding.change_percent <= -50
    assert onboarding.before_per_30_days >= 3

    # Action items: some open, some of them overdue.
    assert sum(team.open for team in year.open_actions) >= 5
    assert sum(team.overdue for team in year.open_actions) >= 1
    statuses = dict(
        session.execute(
            select(ReviewItem.status, func.count()).group_by(ReviewItem.status)
        ).all()
    )
    assert statuses.keys() == {"new", "in_review", "postmortem_done", "closed"}


def test_demo_loads_once_and_prints_links_to_open_surveys(app, client, session, clock):
    first = load(app)
    assert app.config["CLOCK"] is clock  # the demo puts the app's clock back
    departures = session.scalar(select(func.count()).select_from(Departure))
    queued = session.scalar(
        select(func.count()).where(OutboxMessage.status == "pending")
    )
    assert 0 < queued < 10  # the newest invitations, left to the worker

    second = load(app)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Departure)) == departures
    assert len(first) == len(second) == 2
    for link in second:
        page = client.get(path_of(link))
        assert page.status_code == 200
        assert 'name="reason"' in page.get_data(as_text=True)
    # They are the two newest departures, which nobody answered yet.
    with app.app_context():
        linked = {
            tokens.load_token(tokens.SURVEY, link.rsplit("/", 1)[1]) for link in second
        }
    newest = session.scalars(
        select(Departure).order_by(Departure.cancelled_at.desc()).limit(2)
    ).all()
    assert linked == {departure.public_id for departure in newest}
    assert all(clock() - d.cancelled_at < timedelta(hours=4) for d in newest)

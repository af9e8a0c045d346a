"""A small insights data set with figures worked out by hand (the table is
in ``tests/test_insights.py``'s docstring), for the tests and the browser test."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import select

from survey import db, outbox
from survey.answers.service import record_reason
from survey.consent import record_consent
from survey.contacts import erase_person
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from survey.public.service import mark_opened
from survey.review.models import ActionItem, Postmortem, RootCause
from survey.review_items import ReviewItem
from tests.factories import make_departure


def at(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def answer(session, departure: Departure, reason: str, answered_at: datetime):
    """Record the answer as the survey page does, at ``answered_at``."""
    clock = current_app.config["CLOCK"]
    today, clock.current = clock.current, answered_at
    try:
        record_reason(session.connection(), departure.public_id, reason, None)
    finally:
        clock.current = today


def sent(session, departure: Departure, sent_at: datetime) -> None:
    """Mark the invitation sent at ``sent_at``, as the worker does then."""
    message = session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.departure_id == departure.id,
            OutboxMessage.kind == "invitation",
        )
    ).one()
    message.status, message.sent_at = "sent", sent_at
    outbox.messages_sent.send((message,), session=session)


def postmortem(
    session,
    departure,
    status,
    primary,
    *others,
    preventable=None,
    done=True,
    actions=(),
):
    item = session.query(ReviewItem).filter_by(departure_id=departure.id).one_or_none()
    if item is None:
        item = ReviewItem(
            departure_id=departure.id,
            status=status,
            queued_at=departure.cancelled_at,
            updated_at=departure.cancelled_at,
            origin="unanswered",
            mrr_cents=departure.mrr_cents,
            segment=departure.segment,
            plan=departure.plan,
            cancelled_at=departure.cancelled_at,
            currency=departure.currency,
        )
        session.add(item)
    item.status = status
    now = departure.cancelled_at + timedelta(days=3)
    postmortem = Postmortem(
        departure_id=departure.id,
        created_at=now,
        updated_at=now,
        done_at=now if done else None,
        preventable=preventable,
        root_causes=[
            RootCause(code=primary, is_primary=True),
            *(RootCause(code=code) for code in others),
        ],
        action_items=list(actions),
    )
    session.add(postmortem)


#: Every departure of the story has this CSM: the CSM filter (which the
#: tallies do not serve) then counts the same departures the tallies do.
STORY_CSM = "csm@staff.example"


def build_story(app: Flask) -> dict[str, str]:
    """Record the data set of ``tests/test_insights.py``'s docstring; return
    each departure's company by name (d1...)."""

    def departure(cancelled, currency, mrr, segment="smb", plan="growth"):
        return make_departure(
            app,
            cancelled_at=cancelled,
            currency=currency,
            mrr_cents=mrr,
            segment=segment,
            plan=plan,
            csm_email=STORY_CSM,
        )

    d1 = departure(at(3, 5), "USD", 10_000)
    d2 = departure(at(3, 10), "USD", 20_000, "enterprise", "scale")
    d3 = departure(at(3, 15), "EUR", 5_000)
    d4 = departure(at(3, 20), "USD", 3_000)
    departure(at(3, 25), "JPY", 1_000, plan="starter")  # d5: not invited yet
    d6 = departure(at(2, 20), "USD", 9_999)
    d7 = departure(at(3, 28), "USD", 7_000)
    # "switched", rising in February: flagged as of February 28.
    d8 = departure(at(2, 5), "USD", 4_000)
    d9 = departure(at(2, 12), "EUR", 2_500, "enterprise", "scale")
    d10 = departure(at(1, 15), "USD", 1_500, plan="starter")
    named = {"d1": d1, "d2": d2, "d3": d3, "d4": d4, "d7": d7, "d8": d8, "d9": d9}
    companies = {name: d.company for name, d in named.items()}
    with app.app_context(), db.write_session() as session:
        d1, d2, d3, d4, d6, d7, d8, d9, d10 = (
            session.merge(d) for d in (d1, d2, d3, d4, d6, d7, d8, d9, d10)
        )
        for d, when in ((d1, at(3, 5, 10)), (d2, at(3, 10, 10)), (d3, at(3, 15))):
            sent(session, d, when)
        sent(session, d4, at(3, 20))
        answer(session, d1, "too_expensive", at(3, 5, 12))
        answer(session, d2, "too_expensive", at(3, 11, 10))
        answer(session, d3, "switched", at(3, 15, 10))
        answer(session, d6, "switched", at(2, 21))
        answer(session, d8, "switched", at(2, 6))
        answer(session, d9, "switched", at(2, 13))
        answer(session, d10, "switched", at(1, 16))
        for d in (d1, d2, d3, d4):
            mark_opened(session.connection(), d.id)
        for granted in (True, False):
            record_consent(session, d3, granted=granted, channel="survey", wording="w")
        record_consent(session, d1, granted=True, channel="survey", wording="w")
        erase_person(session, d7.contact_email, actor_id=None, via="test")
        postmortem(
            session,
            d1,
            "postmortem_done",
            "poor_fit",
            "product_issues",
            preventable="yes",
            actions=[
                ActionItem(
                    text="Qualify seats before the demo",
                    team="sales",
                    done=True,
                    done_at=at(3, 12),
                )
            ],
        )
        postmortem(
            session,
            d2,
            "closed",
            "failed_adoption",
            preventable="partly",
            actions=[
                ActionItem(
                    text="Onboarding call in week one",
                    team="onboarding",
                    due_date=date(2026, 3, 25),
                ),
                ActionItem(
                    text="Seat usage report",
                    team="product",
                    due_date=date(2099, 1, 1),
                ),
            ],
        )
        postmortem(session, d3, "in_review", "competitor", done=False)
        postmortem(session, d4, "postmortem_done", "poor_service", preventable="no")
        session.commit()
    return companies

"""Reminders: the question once more, to contacts who have not answered.

``SURVEY_REMINDERS`` (0 to 2, default 1) reminders per departure, each
``SURVEY_REMINDER_AFTER_DAYS`` (default 3) after the email before it went
out. Never after an answer, a withdrawal of consent (by any of the person's
departures: it says "don't contact me"), an erasure, a reactivation, or the
invitation link's expiry. Those are checked when a reminder is queued; one
already queued is cancelled by the answer, the withdrawal or the
reactivation itself (``outbox.cancel_pending``), so an SMTP outage that
holds it back cannot make it arrive after them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session, aliased

from survey import clock
from survey.answers.models import Response
from survey.consent import ConsentEvent
from survey.departures.models import Departure
from survey.departures.service import for_writing, queue_reminder

log = logging.getLogger(__name__)

#: Departures looked at per pass; the next pass takes the rest.
BATCH = 500


def _due(now: datetime) -> ColumnElement[bool]:
    """The departures a reminder is due for at ``now``."""
    config = current_app.config
    after = timedelta(days=config["REMINDER_AFTER_DAYS"])
    link_age = timedelta(days=config["LINK_MAX_AGE_DAYS"])
    same_person = aliased(Departure)
    return and_(
        Departure.contact_email.is_not(None),
        Departure.erased_at.is_(None),
        Departure.reactivated_at.is_(None),
        Departure.reminders_sent < config["REMINDERS"],
        Departure.invitation_sent_at.is_not(None),
        func.coalesce(Departure.last_reminded_at, Departure.invitation_sent_at)
        <= now - after,
        Departure.invited_at > now - link_age,  # its link still opens
        ~select(Response.id).where(Response.departure_id == Departure.id).exists(),
        ~select(ConsentEvent.id)
        .join(same_person, same_person.id == ConsentEvent.departure_id)
        .where(
            same_person.contact_email == Departure.contact_email,
            ConsentEvent.action == "withdrawn",
        )
        .exists(),
    )


def queue_due(session: Session) -> int:
    """Queue the reminders due now (at most ``BATCH``); return how many.

    Safe with several workers: each departure is locked (skipping those
    another worker or an answer holds) and checked again once locked, in a
    statement of its own, so an answer or a reminder that committed
    meanwhile is seen. The caller commits.
    """
    if not current_app.config["REMINDERS"]:
        return 0
    now = clock.now()
    locked = list(
        session.scalars(
            select(Departure.id)
            .where(_due(now))
            .order_by(Departure.id)
            .limit(BATCH)
            .with_for_update(of=Departure, skip_locked=True)
        )
    )
    if not locked:
        return 0
    due = session.scalars(
        for_writing(select(Departure).where(Departure.id.in_(locked), _due(now)))
    ).all()
    for departure in due:
        queue_reminder(session, departure)
    if due:
        log.info("%d reminders queued", len(due))
    return len(due)

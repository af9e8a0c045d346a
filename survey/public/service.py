"""The customer's actions: open the link, answer, change consent, ask for a new link."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from survey import clock, links, outbox, tokens
from survey.consent import record_consent
from survey.departures.models import Departure
from survey.departures.service import find_by_public_id
from survey.public.models import Response
from survey.vocabulary import FOLLOW_UPS

log = logging.getLogger(__name__)


def departure_from_token(db: Session, purpose: str, token: str) -> Departure:
    """Return the departure a link names; raise TokenInvalid / TokenExpired."""
    departure = find_by_public_id(db, tokens.load_token(purpose, token))
    if departure is None:
        raise tokens.TokenInvalid
    return departure


def find_response(db: Session, departure: Departure) -> Response | None:
    """Return the departure's response, if the customer answered."""
    return db.scalar(select(Response).where(Response.departure_id == departure.id))


def mark_opened(departure: Departure) -> bool:
    """Note the first time the link was opened; return whether this was it."""
    if departure.first_opened_at is not None:
        return False
    departure.first_opened_at = clock.now()
    return True


def submit_reason(
    db: Session, departure: Departure, reason: str, reason_other: str | None
) -> Response:
    """Save the main reason at once, creating the one response or updating it.

    The unique key on ``responses.departure_id`` settles simultaneous first
    answers: the loser updates the winner's response instead.
    """
    now = clock.now()
    other = (reason_other or "").strip() or None if reason == "other" else None
    response = find_response(db, departure)
    if response is None:
        try:
            with db.begin_nested():
                response = Response(
                    departure_id=departure.id,
                    reason=reason,
                    reason_other=other,
                    factors=[],
                    answered_at=now,
                    updated_at=now,
                )
                db.add(response)
        except IntegrityError:
            response = find_response(db, departure)
            if response is None:
                raise
        else:
            log.info("departure %s answered", departure.public_id)
            return response
    if (response.reason, response.reason_other) != (reason, other):
        response.reason, response.reason_other = reason, other
        response.updated_at = now
    return response


def submit_details(
    db: Session,
    departure: Departure,
    response: Response,
    answers: dict[str, Any],
    *,
    winback_consent: bool,
    consent_wording: str,
) -> None:
    """Save the second page and the consent choice (as a ledger event if changed)."""
    now = clock.now()
    follow_up_reason = response.reason if response.reason in FOLLOW_UPS else None
    for name, value in answers.items():
        setattr(response, name, value)
    response.follow_up_reason = follow_up_reason
    if follow_up_reason is None:
        response.follow_up_answer = None
    response.details_saved_at = response.updated_at = now
    record_consent(
        db,
        departure,
        granted=winback_consent,
        channel="survey",
        wording=consent_wording,
    )
    db.flush()


def request_fresh_link(db: Session, public_id: str) -> None:
    """Send a new survey link to the address on record, at most once an interval.

    Says nothing about whether anything was sent: the caller answers the same
    way whatever happened.
    """
    departure = find_by_public_id(db, public_id)
    if departure is None:
        return
    now = clock.now()
    interval = timedelta(minutes=current_app.config["FRESH_LINK_INTERVAL_MINUTES"])
    if departure.fresh_link_sent_at and now - departure.fresh_link_sent_at < interval:
        log.info("fresh link for %s refused: sent recently", departure.public_id)
        return
    departure.fresh_link_sent_at = now
    outbox.enqueue(
        db,
        kind="fresh_link",
        recipient=departure.contact_email,
        locale=departure.locale,
        departure_id=departure.id,
        departure=departure,
        survey_url=links.survey_url(departure.public_id),
        withdraw_url=links.withdraw_url(departure.public_id),
        sender_name=current_app.config["COMPANY_NAME"],
    )
    log.info("fresh link queued for %s", departure.public_id)

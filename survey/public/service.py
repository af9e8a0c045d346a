"""The customer's actions: open the link, answer, change consent, ask for a new link."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from flask import current_app
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from survey import clock, tokens
from survey.answers.models import Response
from survey.consent import ConsentEvent, latest_consent
from survey.db.fastpath import Prepared
from survey.departures.models import Departure
from survey.departures.service import (
    Erased,
    Reactivated,
    find_by_public_id,
    queue_survey_email,
)
from survey.departures.tallies import KEY_COLUMNS, Key, Tally

log = logging.getLogger(__name__)


def departure_from_token(
    session: Session, purpose: str, token: str, *, writing: bool = False
) -> Departure:
    """Return the departure a link names; raise TokenInvalid, TokenExpired, Erased.

    ``writing``: locked for a write about its person (see ``for_writing``).
    """
    departure = find_by_public_id(
        session, tokens.load_token(purpose, token), writing=writing
    )
    if departure is None:
        raise tokens.TokenInvalid
    if departure.erased_at is not None:
        raise Erased
    if departure.reactivated_at is not None:
        raise Reactivated(departure.locale)
    return departure


#: Everything page 1 shows, in one statement (compiled once). Of the
#: departure's times only whether they are set: a time read is a time parsed.
SURVEY_STATE = Prepared(
    select(
        Departure.id.label("departure_id"),
        Departure.locale,
        Departure.first_opened_at.is_not(None).label("opened"),
        Departure.erased_at.is_not(None).label("erased"),
        Departure.reactivated_at.is_not(None).label("reactivated"),
        Response.reason,
        Response.reason_other,
        Response.answered_at,
        latest_consent(ConsentEvent.action).label("consent_state"),
    )
    .outerjoin(Response, Response.departure_id == Departure.id)
    .where(Departure.public_id == bindparam("public_id"))
)


class SurveyState(Protocol):
    """Page 1's view of a departure: a row of ``SURVEY_STATE``."""

    departure_id: int
    locale: str | None
    opened: bool  # the link was opened before
    erased: bool
    reactivated: bool  # the customer stayed
    reason: str | None
    reason_other: str | None
    answered_at: datetime | None
    consent_state: str | None  # granted, withdrawn, or None (no event yet)


def survey_state(engine: Engine, public_id: str) -> SurveyState:
    """Return page 1's view of a departure; raise TokenInvalid if there is none.

    One statement, read outside any transaction (``Prepared.read``): an ORM
    session, or a transaction begun and rolled back around the one read,
    would cost more than the query (no object is loaded, nothing is written).
    """
    found = SURVEY_STATE.read(engine, {"public_id": public_id})
    state = cast(SurveyState | None, found)
    if state is None:
        raise tokens.TokenInvalid
    if state.erased:
        raise Erased
    if state.reactivated:
        raise Reactivated(state.locale)
    return state


def mark_opened(connection: Connection, departure_id: int) -> None:
    """Note the first time the link was opened (later opens change nothing).

    The caller commits (page 1 through ``db.write_together``: a first open is
    a write on the busiest page; with an ORM session, pass
    ``session.connection()``).
    """
    opened = connection.execute(
        update(Departure)
        .where(
            Departure.id == departure_id,
            Departure.first_opened_at.is_(None),
            Departure.erased_at.is_(None),  # counted out already
        )
        .values(first_opened_at=clock.now())
        .returning(*KEY_COLUMNS)
        .execution_options(synchronize_session=False)
    ).first()
    if opened is not None:
        Tally().count(Key.of(*opened), opened=1).write(connection)


def request_fresh_link(session: Session, public_id: str) -> None:
    """Send a new survey link to the address on record, at most once an interval.

    Says nothing about whether anything was sent: the caller answers the same
    way whatever happened.
    """
    now = clock.now()
    interval = timedelta(minutes=current_app.config["FRESH_LINK_INTERVAL_MINUTES"])
    # One conditional UPDATE decides, so simultaneous requests send one link.
    claimed = session.execute(
        update(Departure)
        .where(
            Departure.public_id == public_id,
            Departure.erased_at.is_(None),
            or_(
                Departure.fresh_link_sent_at.is_(None),
                Departure.fresh_link_sent_at <= now - interval,
            ),
        )
        .values(fresh_link_sent_at=now)
        .execution_options(synchronize_session=False)
    )
    if not cast(CursorResult[Any], claimed).rowcount:
        log.info("fresh link refused: unknown departure or sent recently")
        return
    departure = find_by_public_id(session, public_id)
    assert departure is not None
    queue_survey_email(session, departure, "fresh_link")
    log.info("fresh link queued for %s", departure.public_id)

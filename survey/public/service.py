"""The customer's actions: open the link, answer, change consent, ask for a new link."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import (
    CursorResult,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from survey import clock, tokens
from survey.consent import ConsentEvent, latest_consent, record_consent
from survey.db import Prepared, Writer, per_dialect, write_together
from survey.departures.models import Departure
from survey.departures.service import (
    LINKED_AND_KEPT,
    Erased,
    find_by_public_id,
    for_writing,
    queue_survey_email,
)
from survey.public.models import Response
from survey.review import queue
from survey.vocabulary import FOLLOW_UPS

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
    return departure


def find_response(session: Session, departure: Departure) -> Response | None:
    """Return the departure's response, if the customer answered."""
    return session.scalar(select(Response).where(Response.departure_id == departure.id))


#: Everything page 1 shows, in one statement (built and compiled once).
SURVEY_STATE = Prepared(
    select(
        Departure.id.label("departure_id"),
        Departure.locale,
        Departure.first_opened_at,
        Departure.erased_at,
        Response.reason,
        Response.reason_other,
        Response.answered_at,
        latest_consent(ConsentEvent.action).label("consent_state"),
    )
    .outerjoin(Response, Response.departure_id == Departure.id)
    .where(Departure.public_id == bindparam("public_id"))
)


def survey_state(public_id: str) -> Any:
    """Return page 1's view of a departure; raise TokenInvalid if there is none."""
    state = SURVEY_STATE.first({"public_id": public_id})
    if state is None:
        raise tokens.TokenInvalid
    if state.erased_at is not None:
        raise Erased
    return state


#: Stamp the first open; later opens change nothing (built once, compiled once).
_MARK_OPENED = Prepared(
    update(Departure)
    .where(
        Departure.id == bindparam("departure_id"),
        Departure.first_opened_at.is_(None),
    )
    .values(first_opened_at=bindparam("now"))
)


def mark_opened(departure_id: int) -> None:
    """Note the first time the link was opened (later opens change nothing).

    Written with the other threads' answers and first opens on SQLite
    (``write_together``): a first open is a write on the busiest page.
    """
    write_together(
        _MARK_OPENED.bind({"departure_id": departure_id, "now": clock.now()}).execute
    )


def _upsert_reason(insert: Any) -> Any:
    column = Response.__table__.c
    now = bindparam("now", type_=column.answered_at.type)
    statement = insert(Response.__table__).from_select(
        [
            "departure_id",
            "reason",
            "reason_other",
            "factors",
            "answered_at",
            "updated_at",
        ],
        # Locked: an erasure waited for, or waiting, sees the answer.
        for_writing(
            select(
                Departure.id,
                bindparam("reason", type_=column.reason.type),
                bindparam("reason_other", type_=column.reason_other.type),
                bindparam("factors", [], type_=column.factors.type),
                now,
                now,
            ).where(LINKED_AND_KEPT)
        ),
    )
    return statement.on_conflict_do_update(
        index_elements=[Response.departure_id],
        set_={
            "reason": statement.excluded.reason,
            "reason_other": statement.excluded.reason_other,
            "updated_at": statement.excluded.updated_at,
        },
    )


#: Insert the response, or update the one there (built once per dialect).
_UPSERT_REASON = Prepared(per_dialect(_upsert_reason))


def reason_write(
    public_id: str, reason: str, reason_other: str | None
) -> Callable[[Writer], None]:
    """Return the write that saves page 1's answer, for ``db.write_together``.

    The answer's values (its time too) are fixed and processed for the
    database here, on the request's own thread; the write runs the two
    statements alone, while the SQLite write lock is held. One upsert on the
    unique ``responses.departure_id``: simultaneous first answers cannot make
    a second response, and the last one wins; then the answer is queued for
    review. Both statements find the departure themselves: an erased or
    unknown one gets nothing (the next page says why).
    """
    now = clock.now()
    answer = _UPSERT_REASON.bind(
        {
            "public_id": public_id,
            "reason": reason,
            # Kept whatever the reason: a customer's own words are never dropped.
            "reason_other": (reason_other or "").strip() or None,
            "now": now,
        }
    )
    queued = queue.queue_answer_statement(public_id, reason, now)

    def write(writer: Writer) -> None:
        answer.execute(writer)
        queued.execute(writer)

    return write


def follow_up_reason(reason: str | None) -> str | None:
    """Return ``reason`` if page 2 asks a follow-up question for it, else None."""
    return reason if reason in FOLLOW_UPS else None


def submit_details(
    session: Session,
    departure: Departure,
    response: Response,
    answers: dict[str, Any],
    *,
    follow_up_for: str | None,
    winback_consent: bool | None,
    consent_wording: str,
) -> None:
    """Save the second page, and the consent choice as a ledger event if it
    changes the state (None: no choice made, the consent stays as it is).

    ``follow_up_for`` is the main reason whose follow-up question the page
    asked. When the main reason has changed since (in another tab), an answer
    is kept with the question it answers, unless the new reason's question
    has been answered since; no answer leaves the stored one alone.
    """
    now = clock.now()
    answers = dict(answers)
    answer = answers.pop("follow_up_answer", None)
    for name, value in answers.items():
        setattr(response, name, value)
    asked = follow_up_reason(follow_up_for)
    current = follow_up_reason(response.reason)
    if asked == current:
        response.follow_up_reason = asked
        response.follow_up_answer = answer if asked else None
    elif answer and not (
        response.follow_up_reason == current and response.follow_up_answer
    ):
        response.follow_up_reason, response.follow_up_answer = asked, answer
    response.details_saved_at = response.updated_at = now
    if winback_consent is not None:
        record_consent(
            session,
            departure,
            granted=winback_consent,
            channel="survey",
            wording=consent_wording,
        )
    session.flush()


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

"""POST and GET /api/v1/departures."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request, url_for
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import clock, db, links
from survey.answers.service import find_response
from survey.api import bp
from survey.api.auth import require_scope
from survey.consent import current_consent
from survey.departures.models import Departure
from survey.departures.schemas import FIELDS, RECORDED, DepartureIn
from survey.departures.service import find_by_public_id, record_departure
from survey.errors import InvalidInput, NotFound
from survey.review_items import ReviewItem
from survey.validation import field_errors

#: The scope that may read what customers answered (response and consent).
READ_ANSWERS = "responses:read"


def departure_json(
    session: Session, departure: Departure, *, with_answers: bool = True
) -> dict[str, Any]:
    """Return the API's view of a departure, with its response and consent
    unless ``with_answers`` is false.

    Without the survey link: it lets whoever holds it answer as the customer,
    so only the request that records the departure gets it (see the POST).
    """
    facts: dict[str, Any] = {
        "id": departure.public_id,
        **clock.as_json(departure, FIELDS + RECORDED),
        # None until the departure enters the review queue.
        "review_status": session.scalar(
            select(ReviewItem.status).where(ReviewItem.departure_id == departure.id)
        ),
    }
    if not with_answers:
        return facts
    response = find_response(session, departure)
    consent = current_consent(session, departure.id)
    return facts | {
        "response": None
        if response is None
        else {
            "reason": response.reason,
            "reason_other": response.reason_other,
            "factors": response.factors,
            "details": response.details,
            "destination": response.destination,
            "destination_name": response.destination_name,
            "follow_up_reason": response.follow_up_reason,
            "follow_up_answer": response.follow_up_answer,
            "answered_at": clock.iso(response.answered_at),
            "updated_at": clock.iso(response.updated_at),
        },
        "consent": {"state": consent.state, "since": clock.iso(consent.since)},
    }


@bp.post("/departures")
@require_scope("departures:write")
def create_departure() -> tuple[WerkzeugResponse, int, dict[str, str]]:
    """Record a departure (idempotent on external_id) and queue its invitation.

    The customer's answers and consent come back only to a token that may
    read them (``responses:read``), and the survey link only to the request
    that recorded the departure (201): a known ``external_id`` must not let a
    billing system read, or answer, what the customer wrote.
    """
    try:
        data = DepartureIn.model_validate_json(
            request.get_data(cache=False), strict=True
        )
    except ValidationError as exc:
        raise InvalidInput("The departure is not valid.", field_errors(exc)) from None
    session = db.session()
    departure, created = record_departure(session, data, source="api")
    session.commit()
    location = url_for("api.get_departure", public_id=departure.public_id)
    body = departure_json(
        session, departure, with_answers=READ_ANSWERS in g.api_token.scopes
    )
    if created:
        body["survey_url"] = links.survey_url(departure.public_id)
    return (
        jsonify(body),
        201 if created else 200,
        {"Location": location},
    )


@bp.get("/departures/<public_id>")
@require_scope(READ_ANSWERS)
def get_departure(public_id: str) -> WerkzeugResponse:
    """Return a departure, its response (if any) and consent state.

    Scope ``responses:read``: the answers are the customer's words, which a
    billing system that only reports cancellations has no need to read.
    """
    session = db.session()
    departure = find_by_public_id(session, public_id)
    if departure is None:
        raise NotFound(f"No departure with id {public_id!r}.")
    return jsonify(departure_json(session, departure))

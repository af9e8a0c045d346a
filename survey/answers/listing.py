"""The answered surveys as a list for other programs, a page at a time.

Keyset pagination on the responses' primary key, as the win-back list pages
on its consent events' ids: each page is one index range scan, however deep
the reader is. Erased people's departures are left out (their words are
gone, and what is left is no longer theirs to be listed by).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from survey import db
from survey.answers.models import ANSWER_FIELDS, Response
from survey.answers.schemas import ConsentOut, ListedResponse, ResponsePage
from survey.consent import ConsentEvent
from survey.departures.models import Departure
from survey.errors import InvalidInput

#: The answers' columns, as the API names them.
_ANSWER_COLUMNS = ANSWER_FIELDS
#: The departure's, likewise (``departure_id`` is its public id).
_DEPARTURE_COLUMNS = (
    "external_id",
    "company",
    "contact_name",
    "contact_email",
    "plan",
    "mrr_cents",
    "currency",
    "segment",
    "cancelled_at",
    "source",
)


def listed(since: datetime | None = None, after: int | None = None) -> Select[Any]:
    """Return the query of answered, not erased surveys changed at or after
    ``since``, after the response id ``after``, in id order.

    One row each, consent included: the departure's latest consent event
    comes from a correlated ``max(id)`` on ``consent_events.departure_id``'s
    index, so a page costs one statement, not one per row.
    """
    latest = (
        select(func.max(ConsentEvent.id))
        .where(ConsentEvent.departure_id == Departure.id)
        .correlate(Departure)
        .scalar_subquery()
    )
    query = (
        select(
            Response.id.label("cursor"),
            Departure.public_id.label("departure_id"),
            *(getattr(Departure, name) for name in _DEPARTURE_COLUMNS),
            *(getattr(Response, name) for name in _ANSWER_COLUMNS),
            ConsentEvent.action.label("consent_state"),
            ConsentEvent.created_at.label("consent_since"),
        )
        .join(Departure, Departure.id == Response.departure_id)
        .outerjoin(ConsentEvent, ConsentEvent.id == latest)
        .where(Departure.erased_at.is_(None))
    )
    if since is not None:
        query = query.where(Response.updated_at >= since)
    if after is not None:
        query = query.where(Response.id > after)
    return query.order_by(Response.id)


def _item(row: Any) -> ListedResponse:
    values = row._mapping
    return ListedResponse(
        departure_id=values["departure_id"],
        **{name: values[name] for name in _DEPARTURE_COLUMNS + _ANSWER_COLUMNS},
        consent=ConsentOut(
            state=values["consent_state"] or "none", since=values["consent_since"]
        ),
    )


def parse_cursor(cursor: str | None) -> int | None:
    """Return the response id a cursor stands for; raise InvalidInput if damaged."""
    if not cursor:
        return None
    position = db.parse_int(cursor)
    if position is None:
        raise InvalidInput(
            "The cursor is not valid.", {"cursor": ["Not a valid cursor."]}
        )
    return position


def page(
    session: Session, since: datetime | None, cursor: str | None, limit: int
) -> ResponsePage:
    """Return one page of answered surveys after ``cursor``."""
    rows = session.execute(listed(since, parse_cursor(cursor)).limit(limit + 1)).all()
    more = len(rows) > limit
    return ResponsePage(
        responses=[_item(row) for row in rows[:limit]],
        next_cursor=str(rows[limit - 1].cursor) if more else None,
    )

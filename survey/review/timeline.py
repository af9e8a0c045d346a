"""A departure's story, in order: cancelled, invited, opened, answered, reviewed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from survey import audit
from survey.answers.models import Response
from survey.consent import ConsentEvent
from survey.departures.models import Departure
from survey.outbox import SENT, OutboxMessage
from survey.staff.models import StaffUser
from survey.vocabulary import REVIEW_STATUSES

_EMAILS = {
    "invitation": "Invitation sent",
    "reminder": "Reminder sent",
    "fresh_link": "Fresh link sent",
}


@dataclass(frozen=True)
class Event:
    """One line of the timeline."""

    at: datetime
    what: str
    who: str | None = None


def timeline(
    session: Session, departure: Departure, response: Response | None
) -> list[Event]:
    """Return everything that happened to a departure, oldest first."""
    events = [Event(departure.cancelled_at, "Cancelled")]
    if departure.invited_at:
        events.append(Event(departure.invited_at, "Invitation queued"))
    for message in session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.departure_id == departure.id, OutboxMessage.status == SENT
        )
    ):
        if message.sent_at:
            events.append(
                Event(message.sent_at, _EMAILS.get(message.kind, message.kind))
            )
    if departure.first_opened_at:
        events.append(Event(departure.first_opened_at, "Survey link opened"))
    if response is not None:
        events.append(Event(response.answered_at, "Answered the question"))
        if response.details_saved_at:
            events.append(Event(response.details_saved_at, "Answered the follow-ups"))
    for consent in session.scalars(
        select(ConsentEvent).where(ConsentEvent.departure_id == departure.id)
    ):
        events.append(
            Event(
                consent.created_at,
                f"Win-back consent {consent.action} ({consent.channel})",
            )
        )
    names: dict[int, str] = {
        row.id: row.name
        for row in session.execute(select(StaffUser.id, StaffUser.name))
    }
    for event in audit.for_departure(session, departure.id):
        who = names.get(event.actor_id) if event.actor_id else None
        events.append(Event(event.at, _describe(event.kind, event.detail, names), who))
    return sorted(events, key=lambda event: event.at)


def _describe(kind: str, detail: dict[str, object], names: dict[int, str]) -> str:
    if kind == "review.status":
        old = REVIEW_STATUSES.get(str(detail.get("old")), detail.get("old"))
        new = REVIEW_STATUSES.get(str(detail.get("new")), detail.get("new"))
        return f"Status: {old} → {new}"
    if kind == "review.assigned":
        new = detail.get("new")
        return (
            f"Assigned to {names.get(new, 'someone')}"
            if isinstance(new, int)
            else "Unassigned"
        )
    return {
        "postmortem.saved": "Postmortem saved",
        "postmortem.done": "Postmortem marked done",
        "note.added": "Note added",
        "action.done": "Action item done",
    }.get(kind, kind)

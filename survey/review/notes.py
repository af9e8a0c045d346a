"""Internal notes staff write on a departure."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from survey import audit, clock
from survey.departures.service import lock_departure
from survey.errors import InvalidInput, SurveyError
from survey.review.models import Note

MAX_LENGTH = 10_000


class WrittenBeforeErasure(SurveyError):
    """A note begun before its person's data was erased: it may hold it."""

    status = 409
    code = "conflict"

    def __init__(self) -> None:
        message = (
            "This person's data was erased while you were writing. Check that "
            "your note holds none of it (name, address, their words), then add it."
        )
        super().__init__(message, {"body": [message]})


def add_note(
    session: Session,
    departure_id: int,
    body: str,
    *,
    author_id: int,
    after_erasure: bool = False,
) -> Note:
    """Add a note; raise InvalidInput when it is empty or too long.

    The departure is locked first, as an erasure locks it: a note sent while
    its person is being erased is erased with the rest, or comes after. One
    that comes after is refused (WrittenBeforeErasure) unless it was written
    knowing of the erasure (``after_erasure``).
    """
    text = body.strip()
    if not text or len(text) > MAX_LENGTH:
        message = f"Write a note of 1 to {MAX_LENGTH} characters."
        raise InvalidInput(message, {"body": [message]})
    departure = lock_departure(session, departure_id, erased_ok=True)
    if departure.erased_at is not None and not after_erasure:
        raise WrittenBeforeErasure
    note = Note(
        departure_id=departure_id,
        author_id=author_id,
        body=text,
        created_at=clock.now(),
    )
    session.add(note)
    session.flush()
    audit.record(
        session,
        "note.added",
        actor_id=author_id,
        departure_id=departure_id,
        note_id=note.id,
    )
    return note


def notes_for(session: Session, departure_id: int) -> list[Note]:
    """Return a departure's notes, oldest first."""
    return list(
        session.scalars(
            select(Note).where(Note.departure_id == departure_id).order_by(Note.id)
        )
    )

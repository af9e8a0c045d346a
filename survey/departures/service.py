"""Recording departures; each one queues its invitation in the same transaction."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from survey import clock, i18n, links, outbox, webhooks
from survey.branding import service as branding
from survey.branding.logos import SVG
from survey.departures.models import Departure
from survey.departures.schemas import DepartureFacts
from survey.departures.tallies import KEY_COLUMNS, Key, Tally
from survey.errors import SurveyError
from survey.wording import service as wordings

log = logging.getLogger(__name__)

Query = TypeVar("Query", bound=Select[*tuple[Any, ...]])


class Erased(SurveyError):
    """The person's data has been erased: nothing more is written about them."""

    status = 410
    code = "erased"

    def __init__(self) -> None:
        super().__init__("This person's data has been erased.")


class Reactivated(SurveyError):
    """The customer took the cancellation back: nothing more is asked of them."""

    status = 200
    code = "reactivated"

    def __init__(self, locale: str | None = None) -> None:
        super().__init__("This customer stayed.")
        #: The departure's language: the page saying so speaks it.
        self.locale = locale


def for_writing(query: Query) -> Query:
    """Return ``query`` locking the departure rows it finds until the transaction
    ends, and reading them as they are once locked.

    Every write about a person (an answer, a consent change, their erasure)
    locks their departure's row first, so such writes happen one after the
    other: an answer that waited for an erasure sees the departure erased
    and writes nothing; an erasure that waited for an answer erases it.
    On PostgreSQL this is ``FOR UPDATE`` (a waiting statement re-checks its
    conditions on the row as the other transaction left it); SQLite lets
    one transaction write at a time, and ours take that lock when they begin.
    """
    return query.with_for_update(of=Departure).execution_options(populate_existing=True)


def departure_event(
    session: Session, event_type: str, departure: Departure | int, **data: Any
) -> None:
    """Publish a webhook event about ``departure`` (or the one with that id)
    in the caller's transaction.

    Ids, codes and amounts (and ``data``) for every endpoint; the account's
    free text and the contact only for those that include them. With no
    endpoint for the event, nothing is read or built.
    """
    subscribed = webhooks.subscribers(session, event_type)
    if not subscribed:
        return
    if isinstance(departure, int):
        found = session.get(Departure, departure)
        if found is None:
            return
        departure = found
    personal = {
        "company": departure.company,
        "contact_name": departure.contact_name,
        "contact_email": departure.contact_email,
        "billing_reason": departure.billing_reason,
    }
    facts = {
        "departure_id": departure.public_id,
        "external_id": departure.external_id,
        "source": departure.source,
        "plan": departure.plan,
        "segment": departure.segment,
        "mrr_cents": departure.mrr_cents,
        "currency": departure.currency,
        "cancelled_at": clock.iso(departure.cancelled_at),
    }
    webhooks.publish(
        session,
        webhooks.Event(
            type=event_type,
            data={**facts, **{k: v for k, v in data.items() if k != "personal"}},
            personal={**personal, **data.get("personal", {})},
            departure_id=departure.id,
            link=links.external_url("review.item", public_id=departure.public_id),
        ),
        subscribed,
    )


def find_by_external_id(session: Session, external_id: str) -> Departure | None:
    """Return the departure recorded for ``external_id``, if any."""
    return session.scalar(select(Departure).where(Departure.external_id == external_id))


#: In a statement: the departure named by the bound ``public_id``, unless its
#: data has been erased (nothing may be written about it any more) or the
#: customer stayed after all (nothing more is asked of them).
LINKED_AND_KEPT = and_(
    Departure.public_id == bindparam("public_id"),
    Departure.erased_at.is_(None),
    Departure.reactivated_at.is_(None),
)


def find_by_public_id(
    session: Session, public_id: str, *, writing: bool = False
) -> Departure | None:
    """Return the departure with this public id, if any.

    ``writing``: locked for a write about its person (see ``for_writing``),
    with all their departures, in the order every such write locks them: a
    withdrawal of consent changes them all (``consent.record_consent``).
    """
    query = select(Departure).where(Departure.public_id == public_id)
    if writing and (found := session.scalar(query)) and found.contact_email:
        departures_of(session, found.contact_email, writing=True)
    return session.scalar(for_writing(query) if writing else query)


def departures_of(
    session: Session, address: str, *, writing: bool = False
) -> list[Departure]:
    """Return the departures of a normalized address, oldest first.

    ``writing``: locked (in that order) for a write about the person.
    """
    query = (
        select(Departure)
        .where(Departure.contact_email == address)
        .order_by(Departure.id)
    )
    return list(session.scalars(for_writing(query) if writing else query))


def lock_departure(
    session: Session, departure_id: int, *, erased_ok: bool = False
) -> Departure:
    """Lock a departure for a write about its person (see ``for_writing``) and
    return it; raise Erased if their data is gone by then, unless ``erased_ok``
    (staff's own analysis goes on without the person's data)."""
    locked = session.scalar(
        for_writing(select(Departure).where(Departure.id == departure_id))
    )
    if locked is None or (locked.erased_at is not None and not erased_ok):
        raise Erased
    return locked


def record_departure(
    session: Session, data: DepartureFacts, *, source: str
) -> tuple[Departure, bool]:
    """Record a departure and queue its invitation; return (departure, created).

    A departure without a contact is kept all the same, with no invitation.

    Idempotent on ``external_id``, also when the same departure arrives twice
    at once: the database's unique key decides, and the loser returns the
    winner's departure without queuing a second email.
    """
    existing = find_by_external_id(session, data.external_id)
    if existing is not None:
        _note_differences(existing, data)
        return existing, False
    now = clock.now()
    try:
        with session.begin_nested():
            departure = Departure(
                **data.model_dump(exclude={"cancelled_at"}),
                cancelled_at=data.cancelled_at or now,
                source=source,
                created_at=now,
            )
            session.add(departure)
            session.flush()
            Tally().count(
                Key.of_departure(departure),
                departures=1,
                lost_mrr_cents=departure.mrr_cents,
            ).write(session.connection())
            if departure.contact_email:
                queue_invitation(session, departure)
            departure_event(session, "departure.recorded", departure)
    except IntegrityError:
        existing = find_by_external_id(session, data.external_id)
        if existing is None:
            raise
        return existing, False
    log.info("recorded departure %s from %s", departure.public_id, source)
    return departure, True


def _note_differences(existing: Departure, data: DepartureFacts) -> None:
    """Log which facts a repeated departure would have changed (the first wins).

    Names only: the values are customer data.
    """
    given = data.model_dump(exclude_unset=True, exclude={"external_id"})
    changed = sorted(
        name
        for name, value in given.items()
        if value is not None and getattr(existing, name) != value
    )
    if changed:
        log.warning(
            "departure %s sent again with different %s; the first record is kept",
            existing.public_id,
            ", ".join(changed),
        )


def queue_survey_email(
    session: Session, departure: Departure, kind: str, **context: Any
) -> None:
    """Write an email holding ``departure``'s survey link to the outbox.

    ``kind`` names its template (``invitation``, ``fresh_link``); every such
    email carries the survey link, the consent withdrawal link (also as the
    one-click unsubscribe) and who sends it.
    """
    if departure.contact_email is None:
        raise ValueError(f"departure {departure.public_id} has no one to write to")
    brand = branding.current()
    outbox.enqueue(
        session,
        kind=kind,
        recipient=departure.contact_email,
        locale=i18n.email_locale(departure.locale),
        departure_id=departure.id,
        departure=departure,
        sender_name=brand.sender,
        reply_to=brand.reply_to,
        **survey_email_context(
            brand,
            links.survey_url(departure.public_id),
            links.withdraw_url(departure.public_id),
        ),
        **context,
    )


def survey_email_context(
    brand: Any, survey_url: str, withdraw_url: str
) -> dict[str, Any]:
    """What every email holding a survey link draws from its links and the
    brand (the wording preview draws it with stand-in links)."""
    return {
        "survey_url": survey_url,
        "withdraw_url": withdraw_url,
        "brand": brand,
        # Mail programs draw no SVG: the name alone then.
        "logo_url": links.external_url("brand.logo", file=brand.logo_file)
        if brand.logo and brand.logo.content_type != SVG
        else None,
    }


def question_context(survey_url: str, wording: wordings.Wording) -> dict[str, Any]:
    """The question an email asks, each reason a link to its answer."""
    reason_links = [(code, f"{survey_url}?reason={code}") for code in wording.shown]
    return {"wording": wording, "reason_links": reason_links}


def _queue_question(session: Session, departure: Departure, kind: str) -> None:
    """Write an email asking the question, each reason a link to its answer."""
    survey_url = links.survey_url(departure.public_id)
    queue_survey_email(
        session, departure, kind, **question_context(survey_url, wordings.current())
    )


def queue_invitation(session: Session, departure: Departure) -> None:
    """Write the survey invitation for ``departure`` to the outbox."""
    _queue_question(session, departure, "invitation")
    departure.invited_at = clock.now()


def queue_reminder(session: Session, departure: Departure) -> None:
    """Write a reminder repeating the question for ``departure`` (locked by
    the caller, who checked it is due) and count it on the departure."""
    _queue_question(session, departure, "reminder")
    departure.reminders_sent += 1
    departure.last_reminded_at = clock.now()


def _invited_departures(messages: tuple[outbox.OutboxMessage, ...]) -> list[int]:
    return sorted(
        {
            m.departure_id
            for m in messages
            if m.kind == "invitation" and m.departure_id is not None
        }
    )


@outbox.messages_settling.connect
def _lock_for_invitations(
    messages: tuple[outbox.OutboxMessage, ...], *, session: Session
) -> None:
    """Invitations' sending is about to be noted on their departures: lock the
    departures first (see ``for_writing``), as an erasure does, in id order
    (two workers' batches never wait for each other in a circle)."""
    if departure_ids := _invited_departures(messages):
        session.execute(
            for_writing(
                select(Departure.id)
                .where(Departure.id.in_(departure_ids))
                .order_by(Departure.id)
            )
        )


@outbox.messages_sent.connect
def _note_invitations_sent(
    messages: tuple[outbox.OutboxMessage, ...], *, session: Session
) -> None:
    """Keep when a departure's first invitation went out, and count it."""
    if not (departure_ids := _invited_departures(messages)):
        return
    noted = session.execute(
        update(Departure)
        .where(
            Departure.id.in_(departure_ids),
            Departure.invitation_sent_at.is_(None),
            Departure.erased_at.is_(None),  # counted out already
        )
        .values(invitation_sent_at=messages[0].sent_at)
        .returning(*KEY_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    tally = Tally()
    for row in noted:
        tally.count(Key.of(*row), invited=1)
    tally.write(session.connection())

"""Win-back consent: an append-only ledger of granted / withdrawn events."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    String,
    Text,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column, relationship

from survey import audit, clock, outbox, tokens
from survey.db import Base
from survey.departures.models import Departure
from survey.departures.service import departure_event, departures_of, lock_departure
from survey.departures.tallies import Key, Tally
from survey.i18n import gettext
from survey.wording import service as wordings
from survey.wording.service import BUILT_IN_CONSENT_VERSION

log = logging.getLogger(__name__)

#: The built-in consent wording's version, stored with events given under it.
WORDING_VERSION = BUILT_IN_CONSENT_VERSION


def consent_wording() -> str:
    """Return the consent sentence the survey shows now (in the language
    being rendered): the built-in one, or the team's own."""
    return wordings.current().consent()


def withdrawal_wording() -> str:
    """Return the sentence shown with the withdrawal button."""
    return gettext("Please do not contact me about coming back.")


class ConsentEvent(Base):
    """One change of a contact's win-back consent; never updated or deleted."""

    __tablename__ = "consent_events"
    __table_args__ = (
        CheckConstraint("action IN ('granted', 'withdrawn')", name="action_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    departure_id: Mapped[int] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE"), index=True
    )
    #: ``granted`` or ``withdrawn``.
    action: Mapped[str] = mapped_column(String(10))
    #: Where it came from: survey, withdrawal_link, staff, api.
    channel: Mapped[str] = mapped_column(String(20))
    #: The exact words the person saw when they acted, and their version.
    wording: Mapped[str] = mapped_column(Text)
    wording_version: Mapped[str] = mapped_column(String(40))
    #: Why: a staff member's note (a customer's written request), or that the
    #: withdrawal was carried over from an erased departure of the person.
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]

    departure: Mapped[Departure] = relationship()


@event.listens_for(ConsentEvent, "before_update")
@event.listens_for(ConsentEvent, "before_delete")
def _refuse_change(_mapper: Any, _connection: Any, target: ConsentEvent) -> None:
    raise RuntimeError("consent events are append-only; record a new event instead")


@dataclass(frozen=True)
class ConsentState:
    """Where a contact's consent stands: ``granted``, ``withdrawn`` or ``none``."""

    state: str
    since: datetime | None

    @property
    def granted(self) -> bool:
        return self.state == "granted"


def latest_consent(column: Any) -> Any:
    """Return ``column`` of a departure's latest consent event, as a subquery
    correlated to ``Departure`` (NULL when it has none)."""
    return (
        select(column)
        .where(ConsentEvent.departure_id == Departure.id)
        .order_by(ConsentEvent.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def latest_consent_event(session: Session, departure_id: int) -> ConsentEvent | None:
    """Return the latest consent event of a departure, if any."""
    return session.scalar(
        select(ConsentEvent)
        .where(ConsentEvent.departure_id == departure_id)
        .order_by(ConsentEvent.id.desc())
        .limit(1)
    )


def current_consent(session: Session, departure_id: int) -> ConsentState:
    """Return the state set by the latest consent event of a departure."""
    latest = latest_consent_event(session, departure_id)
    if latest is None:
        return ConsentState("none", None)
    return ConsentState(latest.action, latest.created_at)


#: The note on a withdrawal recorded through another departure of the person.
CARRIED_FROM = "Withdrawn by the person through their departure {public_id}."


def record_consent(
    session: Session,
    departure: Departure,
    *,
    granted: bool,
    channel: str,
    wording: str,
    wording_version: str = WORDING_VERSION,
    note: str | None = None,
    carry: bool = True,
) -> ConsentEvent | None:
    """Append a consent event when it changes the state; return it, or None.

    A withdrawal is always recorded when the state is not already withdrawn,
    so an explicit "don't contact me" stands even without an earlier grant;
    it is the person's, so it is recorded too on each of their other
    departures that holds a grant (unless ``carry`` is false: the caller
    records those itself), and a later "yes" on any of them counts again.
    The departure is locked first (raise Erased if its person's data is
    gone): the state is read once the changes made meanwhile are in, so one
    change makes one event, however many arrive at once. A withdrawal takes
    the person off the win-back list through all their departures, so it
    locks them all, in the order every writer about a person does: a caller
    that locked the departure beforehand locked the person
    (``find_by_public_id(writing=True)``).
    """
    if not granted and departure.contact_email:
        departures_of(session, departure.contact_email, writing=True)
    locked = lock_departure(session, departure.id)
    state = current_consent(session, departure.id)
    wanted = "granted" if granted else "withdrawn"
    if state.state == wanted or (
        not granted and state.state == "none" and channel == "survey"
    ):
        return None
    consent_event = ConsentEvent(
        departure_id=departure.id,
        action=wanted,
        channel=channel,
        wording=wording,
        wording_version=wording_version,
        note=note,
        created_at=clock.now(),
    )
    session.add(consent_event)
    session.flush()
    # The copies kept for counting and for the win-back list. A withdrawal
    # also unlists the person's other departures: by the events it carries.
    session.execute(
        update(Departure)
        .where(Departure.id == departure.id)
        .values(
            consent_granted=granted,
            winback_grant_id=consent_event.id if granted else None,
            withdraw_token=tokens.make_token(
                tokens.WITHDRAW_CONSENT, departure.public_id
            )
            if granted
            else None,
        )
    )
    if change := granted - (state.state == "granted"):
        Tally().count(Key.of_departure(locked), consented=change).write(
            session.connection()
        )
    session.flush()
    departure_event(session, f"consent.{wanted}", locked, channel=channel)
    log.info("consent %s for departure %s via %s", wanted, departure.public_id, channel)
    if not granted:  # "don't contact me": no reminder, by any departure
        outbox.cancel_pending(
            session,
            outbox.OutboxMessage.kind == "reminder",
            outbox.OutboxMessage.departure_id.in_(
                select(Departure.id).where(
                    Departure.contact_email == locked.contact_email
                    if locked.contact_email
                    else Departure.id == locked.id
                )
            ),
            why="consent withdrawn",
        )
    if not granted and carry:
        for other in granted_elsewhere(session, locked):
            record_consent(
                session,
                other,
                granted=False,
                channel=channel,
                wording=wording,
                wording_version=wording_version,
                note=CARRIED_FROM.format(public_id=locked.public_id),
                carry=False,
            )
    return consent_event


def rebuild_winback_list(session: Session) -> int:
    """Work the win-back list out again from the ledger (what ``record_consent``
    keeps on each departure) and sign its withdrawal links anew, with the
    current key; return how many departures are listed.

    For a repair, or after a key rotation that drops the key the stored
    links were signed with. Consent changes wait until it commits.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE consent_events IN SHARE ROW EXCLUSIVE MODE"))
    # Set-based, so that the databases plan it as joins: each departure's
    # latest event, kept when it is a grant no withdrawal of the person
    # (through any of their departures) has followed.
    latest = (
        select(ConsentEvent.departure_id, func.max(ConsentEvent.id).label("event_id"))
        .group_by(ConsentEvent.departure_id)
        .subquery()
    )
    withdrawal = aliased(ConsentEvent)
    same_person = aliased(Departure)
    session.execute(
        update(Departure)
        .where(Departure.winback_grant_id.is_not(None))
        .values(winback_grant_id=None, withdraw_token=None)
        .execution_options(synchronize_session=False)
    )
    listed = session.execute(
        select(Departure.id, Departure.public_id, latest.c.event_id)
        .join(latest, latest.c.departure_id == Departure.id)
        .join(ConsentEvent, ConsentEvent.id == latest.c.event_id)
        .where(
            ConsentEvent.action == "granted",
            Departure.erased_at.is_(None),
            ~select(withdrawal.id)
            .join(same_person, same_person.id == withdrawal.departure_id)
            .where(
                same_person.contact_email == Departure.contact_email,
                withdrawal.action == "withdrawn",
                withdrawal.id > latest.c.event_id,
            )
            .exists(),
        )
        .order_by(Departure.id)
    ).all()
    sign = tokens.make_token
    for start in range(0, len(listed), 5_000):
        session.execute(
            update(Departure),
            [
                {
                    "id": id,
                    "winback_grant_id": grant_id,
                    "withdraw_token": sign(tokens.WITHDRAW_CONSENT, public_id),
                }
                for id, public_id, grant_id in listed[start : start + 5_000]
            ],
        )
    return len(listed)


def granted_elsewhere(
    session: Session, departure: Departure, *, before: int | None = None
) -> list[Departure]:
    """Return the person's other departures (same address, not erased) whose
    consent stands granted: by an event older than ``before``, if given.
    """
    query = select(Departure).where(
        Departure.contact_email == departure.contact_email,
        Departure.erased_at.is_(None),
        Departure.id != departure.id,
        latest_consent(ConsentEvent.action) == "granted",
    )
    if before is not None:
        query = query.where(latest_consent(ConsentEvent.id) < before)
    return list(session.scalars(query.order_by(Departure.id)))


def staff_withdrawal(
    session: Session, departure: Departure, *, note: str, actor_id: int
) -> int:
    """Withdraw consent for a customer who asked in writing; the note says where.

    On this departure, and on every other departure of the person that holds
    a grant (``granted_elsewhere``): the request is theirs, whichever
    departure the page shows. Return how many departures changed.
    """
    # Each of the person's departures is locked, in one order (as an erasure
    # locks them), before any is changed.
    if departure.contact_email:
        departures_of(session, departure.contact_email, writing=True)
    changed = 0
    for each in [departure, *granted_elsewhere(session, departure)]:
        event = record_consent(
            session,
            each,
            granted=False,
            channel="staff",
            wording="Withdrawn by staff at the customer's written request.",
            note=note.strip(),
            carry=False,
        )
        if event is not None:
            changed += 1
            audit.record(
                session,
                "consent.withdrawn_by_staff",
                actor_id=actor_id,
                departure_id=each.id,
                consent_event_id=event.id,
            )
    return changed

"""People's data rights: what we hold about a person (GDPR art. 15), erasure
(art. 17) and retention.

Erasure removes the person's name, address and free-text answers, and every
copy of them (emails in the outbox and as ``.eml`` files, notes and
postmortems that quote them, audit details), while reason codes, MRR, dates,
root causes and postmortem structure stay, so the numbers still add up. The
audit log keeps a keyed hash of the address and who erased it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import JSON, String, Text, cast, func, or_, select, update
from sqlalchemy.orm import Session

from survey import audit, clock, outbox
from survey.consent import ConsentEvent
from survey.db import Base
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from survey.public.models import Response
from survey.review.models import Note

log = logging.getLogger(__name__)

ERASED = "[erased]"
#: Free-text answers: erased whole (the reason codes stay).
_FREE_TEXT = ("reason_other", "details", "destination_name", "follow_up_answer")


def departures_of(session: Session, email: str) -> list[Departure]:
    """Return a person's departures, matching the address in any case."""
    return list(
        session.scalars(
            select(Departure)
            .where(func.lower(Departure.contact_email) == email.strip().lower())
            .order_by(Departure.id)
        )
    )


def email_hash(email: str) -> str:
    """Return the keyed hash of an address that the audit log keeps."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _row(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: _iso(value)
        if isinstance(value := getattr(obj, name), datetime)
        else value
        for name in names
    }


def export_person(session: Session, email: str) -> dict[str, Any]:
    """Return everything held about a person, as JSON-ready data."""
    departures = []
    for departure in departures_of(session, email):
        response = session.scalar(
            select(Response).where(Response.departure_id == departure.id)
        )
        events = session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.departure_id == departure.id)
            .order_by(ConsentEvent.id)
        )
        messages = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.departure_id == departure.id)
            .order_by(OutboxMessage.id)
        )
        notes = session.scalars(
            select(Note).where(Note.departure_id == departure.id).order_by(Note.id)
        )
        departures.append(
            _row(
                departure,
                (
                    "public_id",
                    "external_id",
                    "company",
                    "contact_name",
                    "contact_email",
                    "plan",
                    "mrr_cents",
                    "currency",
                    "segment",
                    "locale",
                    "csm_email",
                    "cancelled_at",
                    "billing_reason",
                    "source",
                    "created_at",
                    "invited_at",
                    "first_opened_at",
                    "erased_at",
                ),
            )
            | {
                "response": None
                if response is None
                else _row(
                    response,
                    (
                        "reason",
                        "reason_other",
                        "factors",
                        "details",
                        "destination",
                        "destination_name",
                        "follow_up_reason",
                        "follow_up_answer",
                        "answered_at",
                        "updated_at",
                    ),
                ),
                "consent_events": [
                    _row(
                        e,
                        (
                            "action",
                            "channel",
                            "wording",
                            "wording_version",
                            "note",
                            "created_at",
                        ),
                    )
                    for e in events
                ],
                "emails": [
                    _row(
                        m,
                        (
                            "kind",
                            "recipient",
                            "subject",
                            "body_text",
                            "status",
                            "created_at",
                            "sent_at",
                        ),
                    )
                    for m in messages
                ],
                "staff_notes": [_row(n, ("body", "created_at")) for n in notes],
            }
        )
    return {"email": email.strip(), "departures": departures}


@dataclass(frozen=True)
class Erasure:
    """What an erasure did."""

    departures: int
    scrubbed_cells: int
    eml_files: int


#: Staff accounts are our colleagues' data, not a departing customer's: an
#: erasure that happened to match a staff address must not lock them out.
_NOT_SWEPT = frozenset({"staff_users", "staff_sessions", "alembic_version"})


def _text_columns() -> list[tuple[Any, Any, Any]]:
    """Return (table, primary key column, column) for every text-like column."""
    found = []
    for table in Base.metadata.sorted_tables:
        if table.name in _NOT_SWEPT:
            continue
        [primary] = list(table.primary_key.columns)
        for column in table.columns:
            if isinstance(column.type, String | Text | JSON) or isinstance(
                getattr(column.type, "impl", None), String | Text
            ):
                found.append((table, primary, column))
    return found


def _scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    if isinstance(value, dict):
        return {key: _scrub(item, pattern) for key, item in value.items()}
    return value


def _sweep(session: Session, terms: list[str]) -> int:
    """Replace every occurrence of ``terms`` in every text column; return cells."""
    pattern = re.compile("|".join(re.escape(term) for term in terms), re.IGNORECASE)
    changed = 0
    for table, primary, column in _text_columns():
        as_text = cast(column, Text) if isinstance(column.type, JSON) else column
        matches = or_(
            *(func.lower(as_text).contains(t.lower(), autoescape=True) for t in terms)
        )
        rows = session.execute(select(primary, column).where(matches)).all()
        for key, value in rows:
            session.execute(
                update(table)
                .where(primary == key)
                .values({column.name: _scrub(value, pattern)})
            )
            changed += 1
    return changed


def erase_person(
    session: Session, email: str, *, actor_id: int | None, via: str
) -> Erasure:
    """Erase a person's personal data everywhere; keep the anonymous facts.

    ``actor_id`` is the staff user who asked (None for a command or a
    machine); ``via`` says how (``cli``, ``admin``, ``api:<token name>``...).
    """
    return erase_people(session, [email], actor_id=actor_id, via=via)


def erase_people(
    session: Session, emails: list[str], *, actor_id: int | None, via: str
) -> Erasure:
    """Erase several people at once (one sweep of the text columns for all)."""
    terms: set[str] = set()
    now = clock.now()
    erased = eml_removed = 0
    for email in emails:
        departures = departures_of(session, email)
        terms |= {email.strip()} | {d.contact_email for d in departures}
        terms |= {
            name
            for d in departures
            if d.contact_name and len(name := d.contact_name.strip()) >= 3
        }
        for departure in departures:
            eml_removed += _erase_departure(session, departure, now)
        erased += len(departures)
        audit.record(
            session,
            "contact.erased",
            actor_id=actor_id,
            email_hash=email_hash(email),
            departures=len(departures),
            via=via,
        )
    session.flush()
    scrubbed = _sweep(session, sorted(terms, key=len, reverse=True)) if terms else 0
    log.info("erased %d people (%d departures) via %s", len(emails), erased, via)
    return Erasure(erased, scrubbed, eml_removed)


def _erase_departure(session: Session, departure: Departure, now: datetime) -> int:
    """Blank one departure's personal fields and emails; return .eml files removed."""
    departure.contact_email = f"erased-{departure.public_id}@erased.invalid"
    departure.contact_name = None
    departure.erased_at = now
    session.execute(
        update(Response)
        .where(Response.departure_id == departure.id)
        .values(dict.fromkeys(_FREE_TEXT))
    )
    removed = 0
    for message in session.scalars(
        select(OutboxMessage).where(OutboxMessage.departure_id == departure.id)
    ):
        for path in outbox.eml_files(message.id):
            path.unlink(missing_ok=True)
            removed += 1
        message.recipient = departure.contact_email
        message.subject = message.body_text = ERASED
        message.body_html = None
        if message.status == outbox.PENDING:
            message.status, message.last_error = outbox.FAILED, "recipient erased"
    return removed


def _scrub_departure_texts(
    session: Session, departure_id: int, terms: list[str]
) -> int:
    """Replace ``terms`` in the texts tied to one departure; return cells changed.

    Notes, postmortem sections, consent notes and audit details of that
    departure only: the person's other departures keep their data.
    """
    if not terms:
        return 0
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    changed = 0
    for table, primary, column in _text_columns():
        owner = table.c.get("departure_id")
        if owner is None or column is owner:
            continue
        rows = session.execute(
            select(primary, column).where(owner == departure_id, column.is_not(None))
        ).all()
        for key, value in rows:
            scrubbed = _scrub(value, pattern)
            if scrubbed != value:
                session.execute(
                    update(table).where(primary == key).values({column.name: scrubbed})
                )
                changed += 1
    return changed


def purge_expired(session: Session, *, actor_id: int | None = None) -> int:
    """Erase the personal data of departures older than ``SURVEY_RETENTION_DAYS``.

    Departure by departure: a person who left again recently keeps the data
    of that newer departure until it expires too. Return how many departures
    were erased (0 when no retention period is set).
    """
    days = current_app.config.get("RETENTION_DAYS")
    if not days:
        return 0
    cutoff = clock.now() - timedelta(days=days)
    expired = session.scalars(
        select(Departure).where(
            Departure.cancelled_at < cutoff, Departure.erased_at.is_(None)
        )
    ).all()
    now = clock.now()
    for departure in expired:
        terms = [departure.contact_email]
        if departure.contact_name and len(departure.contact_name.strip()) >= 3:
            terms.append(departure.contact_name.strip())
        _erase_departure(session, departure, now)
        session.flush()
        _scrub_departure_texts(session, departure.id, terms)
    if expired:
        audit.record(
            session,
            "contact.retention",
            actor_id=actor_id,
            departures=len(expired),
            cutoff=cutoff.isoformat(),
        )
        log.info("retention: erased %d departures", len(expired))
    return len(expired)


def to_json(data: dict[str, Any]) -> str:
    """Return an export as indented JSON."""
    return json.dumps(data, indent=2, ensure_ascii=False)

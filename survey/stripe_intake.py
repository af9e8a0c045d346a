"""Cancellations straight from Stripe: its webhook events become departures.

Each event is verified (``verify``), stored once under its id (``store``:
a repeat, even one arriving at the same moment, finds it there), then
handled (``handle``): the customer's address is read from Stripe's API
before any write, and the event is locked and handled only if still
pending, so the request and the worker never both handle it. When Stripe's
API cannot be reached the event waits, and the worker tries it again with
back-off (``handle_due``); after the last attempt it is handled with what
the subscription itself says.

Stripe does not promise to deliver a subscription's events in order, and a
cancellation may wait for its customer while the customer's change of mind
arrives. A reactivation that finds no departure yet, or a cancellation
still pending that Stripe made before it, waits (until its last attempt);
the cancellation, once handled, settles the reactivations waiting for it by
Stripe's ``created`` time: those made after it apply at once, in the same
transaction (the invitation it queued never leaves), those made before it
are obsolete. Handlers of one subscription's events take its lock first, so
none of them reads the departure while another writes it.

An event may also come after one Stripe made later was handled (Stripe
retries for days). Each stored event keeps its subscription and its
``created`` time, and once handled, what it asked for, after its JSON is
gone: a reactivation made before a handled cancellation is obsolete; a
cancellation made before a handled reactivation never makes the customer
leave again (and the departure it records, if the reactivation found none,
is recorded as reactivated). Whatever the event, the last one Stripe made
decides.

A subscription's metadata that fails our rules is left out field by field
(an amount with its currency: never an amount taken for USD); an event
whose subscription id we cannot keep as a departure's ``external_id`` is
closed with the reason, not tried again for ever.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import requests
import stripe
from flask import current_app
from pydantic import ValidationError
from sqlalchemy import Index, String, Text, exists, func, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from survey import clock, db, outbox
from survey.db import Base
from survey.departures.models import Departure
from survey.departures.schemas import DepartureFacts, normalize_email
from survey.departures.service import (
    departure_event,
    find_by_external_id,
    lock_departure,
    queue_invitation,
    record_departure,
)
from survey.errors import DatabaseBusy, SurveyError
from survey.review_items import ITEM_COLUMNS, ReviewItem, new_items

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
PENDING, DONE = "pending", "done"
#: Attempts at reading the customer before the event is handled without it,
#: or at finding its departure before a reactivation is given up (about a day).
MAX_ATTEMPTS = 12
#: How long the request that stored an event has to handle it before the
#: worker may take it over.
GRACE = timedelta(seconds=60)
HANDLED_TYPES = frozenset(
    {
        "customer.subscription.deleted",
        "customer.subscription.updated",
        "customer.subscription.resumed",
    }
)
#: The event types that can record a departure, and those that can reactivate one.
CANCELLING_TYPES = ("customer.subscription.deleted", "customer.subscription.updated")
REACTIVATING_TYPES = ("customer.subscription.updated", "customer.subscription.resumed")


class StripeEvent(Base):
    """A Stripe event as received: kept once per id, handled once."""

    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    #: The subscription the event is about (None: none, or an id too long).
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    #: When Stripe made the event: kept after the JSON is gone, it orders the
    #: subscription's events however late they come.
    created: Mapped[datetime | None]
    #: What the event asked for, noted once it is handled: ``depart``,
    #: ``reactivate`` or None (neither).
    action: Mapped[str | None] = mapped_column(String(10))
    #: The event's JSON until it is handled (it names a person), then None.
    payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    handled_at: Mapped[datetime | None]


class BadEvent(SurveyError):
    """The request is not a genuine, readable Stripe event."""

    status = 400
    code = "bad_signature"


def verify(payload: bytes, signature: str | None) -> dict[str, Any]:
    """Return the event if Stripe signed it within the tolerance; raise BadEvent.

    Stripe's own check: several ``v1`` signatures are accepted (while a
    secret is rolled, Stripe signs with both).
    """
    secret = current_app.config["STRIPE_WEBHOOK_SECRET"]
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, secret, TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        raise BadEvent("The Stripe-Signature header does not match.") from None
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        event = None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        error = BadEvent("The body is not a Stripe event.")
        error.code = "bad_payload"
        raise error
    return event


def store(session: Session, event: dict[str, Any]) -> bool:
    """Keep the event; return False if it was kept already. The caller commits."""
    now = clock.now()
    subscription_id = _subscription_id(event)
    try:
        with session.begin_nested():
            session.add(
                StripeEvent(
                    id=event["id"][:255],
                    type=event["type"][:100],
                    subscription_id=(
                        subscription_id
                        if subscription_id and len(subscription_id) <= 255
                        else None
                    ),
                    created=_when(event.get("created")),
                    payload=json.dumps(event),
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now + GRACE,
                    received_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


# --- reading the subscription ---------------------------------------------------


#: How many of each interval make a month.
_PER_MONTH = {"day": Decimal(365) / 12, "week": Decimal(52) / 12, "month": Decimal(1)}


def monthly_cents(subscription: dict[str, Any]) -> int:
    """Return the subscription's recurring amount per month, in minor units.

    Quantity times unit amount for each item, brought to a month: yearly
    divided by 12, weekly times 52/12, daily times 365/12, each divided by its
    ``interval_count``.
    """
    total = Decimal(0)
    for item in (subscription.get("items") or {}).get("data") or []:
        price = item.get("price") or item.get("plan") or {}
        recurring = price.get("recurring") or price
        interval = recurring.get("interval") or "month"
        count = Decimal(recurring.get("interval_count") or 1)
        unit = price.get("unit_amount_decimal") or price.get("unit_amount") or 0
        amount = Decimal(str(unit)) * Decimal(item.get("quantity") or 1)
        if interval == "year":
            total += amount / (12 * count)
        else:
            total += amount * _PER_MONTH.get(interval, Decimal(1)) / count
    return max(0, int(total.quantize(Decimal(1))))


def _plan(subscription: dict[str, Any]) -> str | None:
    items = (subscription.get("items") or {}).get("data") or []
    if not items:
        return None
    price = items[0].get("price") or items[0].get("plan") or {}
    product = price.get("product")
    if isinstance(product, dict):
        product = product.get("name") or product.get("id")
    name = price.get("nickname") or product
    return str(name)[:80] if name else None


def _currency(subscription: dict[str, Any]) -> str:
    items = (subscription.get("items") or {}).get("data") or []
    price = (items[0].get("price") or {}) if items else {}
    return str(subscription.get("currency") or price.get("currency") or "usd").upper()


def _when(*stamps: Any) -> datetime | None:
    """The first of Stripe's Unix times that is one (None: none is)."""
    for stamp in stamps:
        if isinstance(stamp, int) and not isinstance(stamp, bool) and stamp > 0:
            try:
                return datetime.fromtimestamp(stamp, UTC)
            except (OverflowError, OSError, ValueError):  # beyond any calendar
                continue
    return None


def _period_end(subscription: dict[str, Any]) -> Any:
    """The current period's end (on the items in newer API versions)."""
    items = (subscription.get("items") or {}).get("data") or []
    return subscription.get("current_period_end") or (
        items[0].get("current_period_end") if items else None
    )


@dataclass(frozen=True)
class Contact:
    """Whom to ask, as far as anyone knows."""

    email: str | None = None
    name: str | None = None
    locale: str | None = None


class StripeUnreachable(Exception):
    """Stripe's API did not answer; try again later."""


class Unrecordable(Exception):
    """No departure can be recorded from the event, however often it is tried."""


def read_customer(customer_id: str | None) -> Contact:
    """Return the customer's email and name from Stripe's API (an empty Contact
    without an API key or a customer); raise StripeUnreachable."""
    key = current_app.config["STRIPE_API_KEY"]
    if not key or not customer_id:
        return Contact()
    base = current_app.config["STRIPE_API_BASE"]
    http = requests.Session()
    client = stripe.StripeClient(
        key,
        base_addresses={"api": base} if base else None,
        max_network_retries=0,  # the worker retries, with back-off
        http_client=stripe.RequestsClient(timeout=10, session=http),
    )
    try:
        customer = client.v1.customers.retrieve(customer_id)
    except stripe.InvalidRequestError:  # no such customer: metadata it is
        return Contact()
    except stripe.StripeError as error:
        raise StripeUnreachable(f"{type(error).__name__}: {error}") from None
    finally:
        http.close()
    found = customer.to_dict()
    if found.get("deleted"):
        return Contact()
    locales = found.get("preferred_locales") or []
    return Contact(
        email=found.get("email"),
        name=found.get("name"),
        locale=locales[0] if locales else None,
    )


def _contact(subscription: dict[str, Any], found: Contact) -> Contact:
    """The API's answer, else the subscription's ``email``/``name`` metadata."""
    metadata = subscription.get("metadata") or {}
    email = found.email or metadata.get("email")
    try:
        email = normalize_email(str(email)) if email else None
    except ValueError:
        log.warning(
            "subscription %s: the contact's address is not valid",
            subscription.get("id"),
        )
        email = None
    return Contact(email, found.name or metadata.get("name"), found.locale)


def _facts(subscription: dict[str, Any], contact: Contact, cancelled: Any) -> Any:
    metadata = subscription.get("metadata") or {}
    details = subscription.get("cancellation_details") or {}
    reason = details.get("feedback")
    if details.get("comment"):
        reason = f"{reason or 'other'}: {details['comment']}"
    if isinstance(reason, str):  # Stripe's feedback code and the customer's words
        reason = reason[: _max_length("billing_reason")]
    raw = {
        "external_id": subscription.get("id"),
        "company": metadata.get("company") or contact.name,
        "contact_name": contact.name,
        "contact_email": contact.email,
        "plan": _plan(subscription),
        "mrr_cents": monthly_cents(subscription),
        "currency": _currency(subscription),
        "segment": metadata.get("segment"),
        "cancelled_at": cancelled,
        "csm_email": metadata.get("csm_email"),
        "billing_reason": reason,
    }
    try:
        return DepartureFacts.model_validate(raw)
    except ValidationError as error:
        # A subscription's metadata may not fit our rules (a CSM's address
        # that is none, a long segment): keep the departure with every fact
        # that does, the amount with its currency above all. Field names
        # only in the log: the values may name a person.
        bad = {str(problem["loc"][0]) for problem in error.errors() if problem["loc"]}
        if "external_id" in bad:  # the departure's key: nothing to record under
            raise Unrecordable("external_id not valid") from None
        if "currency" in bad:  # an amount without its currency would be USD
            bad.add("mrr_cents")
        log.warning(
            "subscription %s: %s left out (not valid)",
            subscription.get("id"),
            ", ".join(sorted(bad)),
        )
        kept = {name: value for name, value in raw.items() if name not in bad}
        return DepartureFacts.model_validate(kept)


def _max_length(name: str) -> int:
    """The longest text DepartureFacts takes in the field ``name``."""
    lengths = [
        length
        for rule in DepartureFacts.model_fields[name].metadata
        if isinstance(length := getattr(rule, "max_length", None), int)
    ]
    return min(lengths)


# --- handling -------------------------------------------------------------------


def _what_to_do(event: dict[str, Any]) -> str | None:
    """Return ``depart``, ``reactivate`` or None for an event."""
    subscription = event["data"]["object"]
    before = event["data"].get("previous_attributes") or {}
    kind = event["type"]
    if kind == "customer.subscription.deleted":
        return "depart"
    if kind == "customer.subscription.resumed":
        return "reactivate"
    if kind == "customer.subscription.updated":
        cancelling = bool(subscription.get("cancel_at_period_end")) or bool(
            subscription.get("cancel_at")
        )
        was_cancelling = bool(
            before.get("cancel_at_period_end", subscription.get("cancel_at_period_end"))
        ) or bool(before.get("cancel_at", subscription.get("cancel_at")))
        if cancelling and not was_cancelling:
            return "depart"
        if was_cancelling and not cancelling:
            return "reactivate"
    return None


def _readable_action(event: dict[str, Any]) -> str | None:
    try:
        return _what_to_do(event)
    except Exception:  # unreadable: its own attempts keep it and report it
        return None


def needs_customer(event: dict[str, Any]) -> bool:
    """Return whether handling the event reads the customer from Stripe."""
    return _what_to_do(event) == "depart"


def _subscription_id(event: dict[str, Any]) -> str | None:
    found = event["data"]["object"].get("id")
    return found if isinstance(found, str) and found else None


def _made_before(event: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether Stripe made ``event`` before ``other`` (by ``created``; in the
    same second, or without a time, it is not known to be before)."""
    made, other_made = event.get("created"), other.get("created")
    return isinstance(made, int) and isinstance(other_made, int) and made < other_made


def _lock_subscription(session: Session, subscription_id: str) -> None:
    """Hold the subscription's lock until the transaction ends (PostgreSQL).

    Taken before any event's row, by every handler of the subscription's
    events: a reactivation then never looks for its departure while the
    cancellation that records it is still uncommitted. (SQLite writes one
    transaction at a time anyway.)
    """
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.blake2b(
            f"stripe subscription {subscription_id}".encode(), digest_size=8
        ).digest()
        key = int.from_bytes(digest, "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))


Outcome = Literal["handled", "duplicate", "postponed"]


def handle(
    session: Session, event_id: str, contact: Contact | None, *, final: bool = False
) -> Outcome:
    """Handle a stored event if it is still pending; return what became of it.

    ``contact``: what Stripe's API said (None: it could not be asked, and
    the subscription's metadata will do). ``postponed``: a reactivation
    whose departure has not come yet waits for it, unless ``final``.
    ``duplicate``: it was handled already. The caller commits.
    """
    db.begin_write(session)
    payload = session.scalar(
        select(StripeEvent.payload).where(StripeEvent.id == event_id)
    )
    if payload is None:
        return "duplicate"
    event = json.loads(payload)
    subscription_id = _subscription_id(event)
    if subscription_id:
        _lock_subscription(session, subscription_id)
    stored = session.scalar(
        select(StripeEvent)
        .where(StripeEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if stored is None or stored.status != PENDING or stored.payload is None:
        return "duplicate"
    subscription = event["data"]["object"]
    action = _what_to_do(event)
    if action == "depart":
        cancelled = (
            _when(subscription.get("canceled_at"), subscription.get("ended_at"))
            if event["type"] == "customer.subscription.deleted"
            else _when(subscription.get("cancel_at"), _period_end(subscription))
        )
        try:
            facts = _facts(
                subscription, _contact(subscription, contact or Contact()), cancelled
            )
        except Unrecordable as error:
            log.error("Stripe event %s closed, nothing recorded: %s", stored.id, error)
            _close(stored, action, error=str(error))
            return "handled"
        departure, created = record_departure(session, facts, source="stripe")
        stayed_after = _handled_after(session, stored, "reactivate")
        if created and departure.contact_email is None:
            _queue_without_contact(session, departure)
        if stayed_after:
            # The customer came back after this cancellation: a departure it
            # records (its reactivation found none) is reactivated at once.
            log.info("Stripe event %s late: a reactivation came after", stored.id)
            if created:
                _reactivate(session, departure.external_id)
        elif not created and departure.reactivated_at is not None:
            _leave_again(session, departure)
        _settle_waiting_reactivations(session, event, departure.external_id)
    elif action == "reactivate" and subscription_id:
        if _handled_after(session, stored, "depart"):
            log.info("Stripe event %s obsolete: a cancellation came after", stored.id)
        elif not final and (
            find_by_external_id(session, subscription_id) is None
            or _cancellation_pending_before(session, event, subscription_id)
        ):
            _back_off(stored, "waiting for the subscription's cancellation")
            return "postponed"
        else:
            _reactivate(session, subscription_id)
    _close(stored, action)
    return "handled"


def _close(stored: StripeEvent, action: str | None, error: str | None = None) -> None:
    """Mark a locked event handled: its JSON goes, what it asked for stays."""
    stored.status, stored.payload, stored.action = DONE, None, action
    stored.handled_at, stored.last_error = clock.now(), error


def _handled_after(session: Session, stored: StripeEvent, action: str) -> bool:
    """Whether an event of the same subscription that ``action`` and that
    Stripe made after ``stored`` (not in the same second) was handled already."""
    if stored.subscription_id is None or stored.created is None:
        return False
    return bool(
        session.scalar(
            select(
                exists().where(
                    StripeEvent.subscription_id == stored.subscription_id,
                    StripeEvent.status == DONE,
                    StripeEvent.action == action,
                    StripeEvent.created > stored.created,
                )
            )
        )
    )


def _queue_without_contact(session: Session, departure: Departure) -> None:
    """No one can be asked: the departure goes to the review queue at once."""
    session.connection().execute(
        insert(ReviewItem).from_select(
            ITEM_COLUMNS, new_items("unanswered").where(Departure.id == departure.id)
        ),
        {"now": clock.now(), "reason": None},
    )


def _reactivate(session: Session, subscription_id: str) -> None:
    """Mark the subscription's departure reactivated: its unsent emails stay so."""
    found = find_by_external_id(session, subscription_id)
    if found is None:
        return
    departure = lock_departure(session, found.id, erased_ok=True)
    if departure.reactivated_at is not None:
        return
    departure.reactivated_at = clock.now()
    outbox.cancel_pending(
        session,
        outbox.OutboxMessage.departure_id == departure.id,
        outbox.OutboxMessage.kind.in_(("invitation", "reminder")),
        why="the customer stayed",
    )
    departure_event(session, "departure.reactivated", departure)
    log.info("departure %s reactivated", departure.public_id)


def _settle_waiting_reactivations(
    session: Session, cancellation: dict[str, Any], subscription_id: str
) -> None:
    """Settle the reactivations of the subscription that waited for
    ``cancellation``: one Stripe made after it (or in the same second)
    applies now, one made before it is obsolete (the customer cancelled
    after staying)."""
    waiting = _pending(
        session, subscription_id, "reactivate", REACTIVATING_TYPES, cancellation
    )
    for stored, event in waiting:
        if not _made_before(event, cancellation):
            _reactivate(session, subscription_id)
        else:
            log.info("Stripe event %s obsolete: a cancellation came after", stored.id)
        _close(stored, "reactivate")


def _cancellation_pending_before(
    session: Session, reactivation: dict[str, Any], subscription_id: str
) -> bool:
    """Whether a cancellation of the subscription that Stripe made before
    ``reactivation`` (or in the same second) is still to be handled."""
    cancellations = _pending(
        session, subscription_id, "depart", CANCELLING_TYPES, reactivation
    )
    return any(not _made_before(reactivation, event) for _, event in cancellations)


def _pending(
    session: Session,
    subscription_id: str,
    action: str,
    types: tuple[str, ...],
    besides: dict[str, Any],
) -> list[tuple[StripeEvent, dict[str, Any]]]:
    """The subscription's other pending events that ``action``, locked.

    Few events are pending (those Stripe's outage holds back, or waiting),
    and only theirs are read: what a pending event asks for is in its JSON.
    """
    rows = session.scalars(
        select(StripeEvent)
        .where(
            StripeEvent.subscription_id == subscription_id,
            StripeEvent.status == PENDING,
            StripeEvent.type.in_(types),
            StripeEvent.id != besides["id"],
        )
        .order_by(StripeEvent.received_at, StripeEvent.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    found = []
    for stored in rows:
        event = json.loads(stored.payload) if stored.payload else None
        if event is not None and _readable_action(event) == action:
            found.append((stored, event))
    return found


def _leave_again(session: Session, found: Departure) -> None:
    """A customer who stayed cancels after all: the departure stands again,
    and its invitation goes out if the first never did."""
    departure = lock_departure(session, found.id, erased_ok=True)
    if departure.reactivated_at is None:
        return
    departure.reactivated_at = None
    if (
        departure.contact_email
        and departure.erased_at is None
        and departure.invitation_sent_at is None
    ):
        queue_invitation(session, departure)
    departure_event(session, "departure.recorded", departure)
    log.info("departure %s cancelled again after a reactivation", departure.public_id)


def _back_off(stored: StripeEvent, error: str) -> None:
    """Note a failed attempt on a locked, pending event: the worker tries again."""
    stored.attempts += 1
    stored.last_error = error[:1000]
    delay = 30 * 2 ** min(stored.attempts - 1, 10)
    stored.next_attempt_at = clock.now() + timedelta(seconds=min(delay, 6 * 3600))
    log.warning(
        "Stripe event %s postponed (attempt %d): %s", stored.id, stored.attempts, error
    )


def postpone(session: Session, event_id: str, error: str) -> None:
    """Note a failed attempt at handling an event; the worker tries again."""
    db.begin_write(session)
    stored = session.get(StripeEvent, event_id, with_for_update=True)
    if stored is None or stored.status != PENDING:
        return
    _back_off(stored, error)


def take_in(session: Session, event: dict[str, Any]) -> Outcome:
    """Store, then handle, an event just received; return what became of it:
    ``duplicate``, ``handled`` or ``postponed`` (the worker goes on)."""
    db.begin_write(session)
    if not store(session, event):
        session.rollback()
        return "duplicate"
    session.commit()
    return _attempt(session, event["id"], event, final=False)


def _attempt(
    session: Session, event_id: str, event: dict[str, Any], *, final: bool
) -> Outcome:
    try:
        return _try(session, event_id, event, final=final)
    except (SQLAlchemyError, DatabaseBusy):
        raise  # the database's trouble: the caller's to report
    except Exception as error:  # an event we cannot read: kept, tried again later
        session.rollback()
        log.exception("Stripe event %s could not be handled", event_id)
        postpone(session, event_id, f"{type(error).__name__}: {error}")
        session.commit()
        return "postponed"


def _try(
    session: Session, event_id: str, event: dict[str, Any], *, final: bool
) -> Outcome:
    contact: Contact | None = None
    if needs_customer(event):
        subscription = event["data"]["object"]
        customer = subscription.get("customer")
        customer_id = customer.get("id") if isinstance(customer, dict) else customer
        try:
            contact = read_customer(customer_id)  # outside any transaction
        except StripeUnreachable as error:
            if not final:
                postpone(session, event_id, str(error))
                session.commit()
                return "postponed"
            log.error(
                "Stripe event %s handled without the customer: %s", event_id, error
            )
    outcome = handle(session, event_id, contact, final=final)
    session.commit()
    return outcome


def handle_due(session: Session, limit: int = 50) -> int:
    """Try the events left pending whose time has come; return how many were handled."""
    now = clock.now()
    due = [
        (row.id, row.payload, row.attempts)
        for row in session.execute(
            select(StripeEvent.id, StripeEvent.payload, StripeEvent.attempts)
            .where(StripeEvent.status == PENDING, StripeEvent.next_attempt_at <= now)
            .order_by(StripeEvent.next_attempt_at)
            .limit(limit)
        )
    ]
    session.rollback()
    handled = 0
    for event_id, payload, attempts in due:
        if payload is None:
            continue
        outcome = _attempt(
            session, event_id, json.loads(payload), final=attempts + 1 >= MAX_ATTEMPTS
        )
        handled += outcome == "handled"
    return handled

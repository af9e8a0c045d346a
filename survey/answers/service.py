"""Recording a customer's answers: page 1's reason, page 2's details and consent.

Verbs that any door calls (the survey pages, the demo, tests): they take
the connection or session they run on and leave the commit to the caller.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Connection, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from survey import clock, i18n, outbox
from survey.answers.models import Response
from survey.consent import record_consent
from survey.db import per_dialect
from survey.db.fastpath import Prepared
from survey.departures.models import Departure
from survey.departures.service import LINKED_AND_KEPT, departure_event, for_writing
from survey.departures.tallies import KEY_COLUMNS, Key, Tally
from survey.review_items import ITEM_COLUMNS, ReviewItem, new_items
from survey.wording.service import Wording


def find_response(session: Session, departure: Departure) -> Response | None:
    """Return the departure's response, if the customer answered."""
    return session.scalar(select(Response).where(Response.departure_id == departure.id))


def _answering() -> Any:
    """The departure, locked (see ``for_writing``): what it is counted under."""
    return select(
        Departure.id,
        *KEY_COLUMNS,
        Departure.mrr_cents,
        Departure.locale,
        Departure.invitation_sent_at,
    ).where(LINKED_AND_KEPT)


#: The departure, locked, with the reason it gave so far. PostgreSQL reads a
#: joined row as it was when the statement began, not once the lock is
#: granted: there the reason is read by a statement of its own
#: (``_REASON_SO_FAR``); SQLite lets one transaction write at a time, and the
#: answer's began as a writing one, so one statement reads both.
_LOCK_ANSWERING = Prepared(
    {
        "postgresql": for_writing(_answering()),
        "sqlite": _answering()
        .add_columns(Response.reason)
        .outerjoin(Response, Response.departure_id == Departure.id),
    }
)
_REASON_SO_FAR = Prepared(
    select(Response.reason).where(Response.departure_id == bindparam("departure_id"))
)
#: A first answer: how long after the invitation went out.
_NOTE_WAIT = Prepared(
    update(Departure)
    .where(Departure.id == bindparam("departure_id"))
    .values(answer_wait_seconds=bindparam("seconds"))
)


def _upsert_reason(insert: Any) -> Any:
    column = Response.__table__.c
    now = bindparam("now", type_=column.answered_at.type)
    statement = insert(Response.__table__).from_select(
        [
            "departure_id",
            "reason",
            "reason_other",
            "survey_version_id",
            "locale",
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
                bindparam("survey_version_id", type_=column.survey_version_id.type),
                bindparam("locale", type_=column.locale.type),
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
            # A page that sent no words of its own (the confirmation of a
            # reason clicked in the email) keeps those saved.
            "reason_other": case(
                (bindparam("keep_own_words", type_=Boolean()), column.reason_other),
                else_=statement.excluded.reason_other,
            ),
            "survey_version_id": statement.excluded.survey_version_id,
            # Unknown (a caller with no page): the language kept stays.
            "locale": func.coalesce(statement.excluded.locale, column.locale),
            "updated_at": statement.excluded.updated_at,
        },
    )


#: Insert the response, or update the one there (built once per dialect).
_UPSERT_REASON = Prepared(per_dialect(_upsert_reason))


def _answer_upsert(insert: Any) -> Any:
    statement = insert(ReviewItem.__table__).from_select(
        ITEM_COLUMNS, for_writing(new_items("answered").where(LINKED_AND_KEPT))
    )
    return statement.on_conflict_do_update(
        index_elements=[ReviewItem.departure_id],
        set_={"reason": statement.excluded.reason},
    )


#: Queue an answered departure or update its reason (built once per dialect).
_QUEUE_ANSWER = Prepared(per_dialect(_answer_upsert))


def record_reason(
    connection: Connection,
    public_id: str,
    reason: str,
    reason_other: str | None,
    survey_version: int = 0,
    *,
    keep_own_words: bool = False,
    chosen_locale: str | None = None,
    browser_locale: str | None = None,
) -> None:
    """Save page 1's answer and queue it for review, in ``connection``'s transaction.

    ``keep_own_words``: the page sent no own-words field (the confirmation
    of a reason clicked in the email), so the words saved stay; page 1
    itself always sends the field, and an empty one clears them.
    ``chosen_locale`` (switched on the page) and ``browser_locale`` (the
    browser's, else the default) are the request's part of the page's
    language (``i18n.customer_locale``): the departure's, read here, comes
    between them. Decided by the request, as the write may run on another
    thread (``survey.db.fastpath.Batches``).

    The caller commits (the survey page through ``db.write_together``; with
    an ORM session, flush it and pass ``session.connection()``, which does
    not flush: rows still pending in the session are not seen here, e.g. a
    reminder to cancel). One upsert on the unique
    ``responses.departure_id``: simultaneous first answers cannot make a
    second response, and the last one wins. Then one upsert on the unique
    ``review_items.departure_id`` queues the answered departure, or updates
    its reason. Both statements find the departure themselves, locked (see
    ``for_writing``): an erased or unknown one gets nothing, and the next
    page says why.
    """
    departure = {"public_id": public_id, "reason": reason, "now": clock.now()}
    version = {"survey_version_id": survey_version or None}
    # Kept whatever the reason: a customer's own words are never dropped.
    other = (reason_other or "").strip() or None
    locked = _LOCK_ANSWERING.first(connection, {"public_id": public_id})
    if locked is None:
        return  # erased or unknown: nothing to write, the next page says why
    locale = chosen_locale or (
        locked.locale if i18n.speaks(locked.locale) else browser_locale
    )
    if connection.dialect.name == "sqlite":  # read with the departure
        before = locked.reason
    else:
        so_far = _REASON_SO_FAR.first(connection, {"departure_id": locked.id})
        before = so_far.reason if so_far is not None else None
    _UPSERT_REASON.execute(
        connection,
        {
            **departure,
            **version,
            "reason_other": other,
            "keep_own_words": keep_own_words,
            "locale": locale,
        },
    )
    _QUEUE_ANSWER.execute(connection, departure)
    if before == reason:
        return  # the same answer again: nothing else changes
    key = Key.of(locked.cancelled_at, locked.currency, locked.segment, locked.plan)
    tally = Tally()
    if before is None:
        tally.count(key, answered=1)
        _first_answer(connection, locked, reason, other, departure["now"])
    else:
        tally.count_reason(key, before, -1, locked.mrr_cents)
    tally.count_reason(key, reason, 1, locked.mrr_cents).write(connection)


def _first_answer(
    connection: Connection, locked: Any, reason: str, other: str | None, now: Any
) -> None:
    """What a departure's first answer sets off, in ``connection``'s transaction:
    its webhook event, no more reminders, and how long the answer took."""
    # The event and the outbox are ORM work: a session joins the caller's
    # transaction, also a SAVEPOINT, and neither commits nor rolls it back
    # (SQLAlchemy's default would open a savepoint of its own there, and
    # roll it back on close).
    with Session(bind=connection, join_transaction_mode="rollback_only") as session:
        departure_event(
            session,
            "response.submitted",
            locked.id,
            reason=reason,
            personal={"reason_other": other},
        )
        outbox.cancel_pending(
            session,
            outbox.OutboxMessage.departure_id == locked.id,
            outbox.OutboxMessage.kind == "reminder",
            why="answered",
        )
        session.flush()
    sent_at = locked.invitation_sent_at
    if sent_at is not None and now >= sent_at:
        wait = int((now - sent_at).total_seconds())
        _NOTE_WAIT.execute(connection, {"departure_id": locked.id, "seconds": wait})


def follow_up_reason(reason: str | None, wording: Wording) -> str | None:
    """Return ``reason`` if page 2 asks a follow-up question for it, else None."""
    return reason if wording.follow_up(reason) else None


def submit_details(
    session: Session,
    departure: Departure,
    response: Response,
    answers: dict[str, Any],
    *,
    follow_up_for: str | None,
    winback_consent: bool | None,
    wording: Wording,
    locale: str | None = None,
) -> None:
    """Save the second page as asked in ``wording``, and the consent choice
    as a ledger event (with the consent sentence shown) if it changes the
    state (None: no choice made, the consent stays as it is).

    ``follow_up_for`` is the main reason whose follow-up question the page
    asked. When the main reason has changed since (in another tab), an answer
    is kept with the question it answers, unless the new reason's question
    has been answered since; no answer leaves the stored one alone.
    ``locale`` is the language the page was drawn in (None: unknown, the
    stored one stays).
    """
    now = clock.now()
    answers = dict(answers)
    answer = answers.pop("follow_up_answer", None)
    for name, value in answers.items():
        setattr(response, name, value)
    asked = follow_up_reason(follow_up_for, wording)
    current = follow_up_reason(response.reason, wording)
    if asked == current:
        response.follow_up_reason = asked
        response.follow_up_answer = answer if asked else None
    elif answer and not (
        response.follow_up_reason == current and response.follow_up_answer
    ):
        response.follow_up_reason, response.follow_up_answer = asked, answer
    response.details_saved_at = response.updated_at = now
    response.survey_version_id = wording.version or None
    if locale:
        response.locale = locale
    if winback_consent is not None:
        record_consent(
            session,
            departure,
            granted=winback_consent,
            channel="survey",
            wording=wording.consent(),
            wording_version=wording.consent_version(),
        )
    session.flush()

"""The review queue: items enter, are filtered and paged, assigned, moved on.

Allowed status changes live here (``TRANSITIONS``) and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from survey import audit, clock
from survey.answers.models import Response
from survey.db import BIGINT_MAX, parse_int
from survey.departures.models import Departure
from survey.errors import InvalidInput, SurveyError
from survey.review.models import Postmortem, RootCause
from survey.review_items import ITEM_COLUMNS, ReviewItem, new_items, of_csm
from survey.staff.models import ADMIN, CSM, StaffUser
from survey.vocabulary import FINISHED_STATUSES, REVIEW_STATUSES

log = logging.getLogger(__name__)

#: status -> the statuses it may move to.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"in_review"}),
    "in_review": frozenset({"postmortem_done"}),
    "postmortem_done": frozenset({"closed"}),
    "closed": frozenset({"in_review"}),  # reopen
}

PAGE_SIZE = 50

#: Who may take review items: active admins and CSMs.
REVIEWER_ROLES = (ADMIN, CSM)
MAY_REVIEW = and_(StaffUser.active.is_(True), StaffUser.role.in_(REVIEWER_ROLES))


class InvalidTransition(SurveyError):
    """A status change the review workflow does not allow."""

    status = 409
    code = "invalid_transition"


def check_transition(current: str, new: str) -> None:
    """Raise InvalidTransition unless ``current`` may move to ``new``."""
    if new not in TRANSITIONS.get(current, frozenset()):
        allowed = " or ".join(
            f"“{REVIEW_STATUSES[s]}”" for s in sorted(TRANSITIONS.get(current, ()))
        )
        raise InvalidTransition(
            f"“{REVIEW_STATUSES.get(current, current)}” cannot move to "
            f"“{REVIEW_STATUSES.get(new, new)}”"
            + (f"; it can move to {allowed}." if allowed else ".")
        )


# --- entering the queue ----------------------------------------------------------


def queue_unanswered(session: Session) -> int:
    """Queue departures unanswered for long enough and worth enough; return how many.

    ``SURVEY_REVIEW_UNANSWERED_AFTER_DAYS`` after the invitation, when the lost
    MRR is at least ``SURVEY_REVIEW_MIN_MRR_CENTS``; never an erased one.
    """
    config = current_app.config
    due = clock.now() - timedelta(days=config["REVIEW_UNANSWERED_AFTER_DAYS"])
    # Locked, skipping any being written now (an erasure, an answer): the
    # next pass sees how they ended.
    candidates = (
        new_items("unanswered")
        .where(
            Departure.erased_at.is_(None),  # as answers: no one erased is queued
            Departure.invited_at <= due,
            Departure.mrr_cents >= config["REVIEW_MIN_MRR_CENTS"],
            # Explicit subqueries: a bare exists() would pull review_items, the
            # insert's own table, into the outer FROM on PostgreSQL.
            ~select(ReviewItem.id)
            .where(ReviewItem.departure_id == Departure.id)
            .exists(),
            ~select(Response.id).where(Response.departure_id == Departure.id).exists(),
        )
        .with_for_update(of=Departure, skip_locked=True)
    )
    # Counted from RETURNING: drivers disagree on an INSERT ... SELECT's rowcount.
    queued = (
        session.connection()
        .execute(
            insert(ReviewItem)
            .from_select(ITEM_COLUMNS, candidates)
            .returning(ReviewItem.id),
            {"now": clock.now(), "reason": None},
        )
        .scalars()
        .all()
    )
    count = len(queued)
    if count:
        log.info("%d unanswered departures queued for review", count)
    return count


# --- listing -------------------------------------------------------------------

SORTS = {"mrr": "Lost MRR", "newest": "Newest", "oldest": "Oldest"}


@dataclass
class QueueFilter:
    """What the queue page was asked to show."""

    status: str | None = None  # a status, "open" (not closed) or None (all)
    assignee: str | None = None  # "mine", "unassigned", a user id, or None
    reason: str | None = None  # a reason code, "none" (unanswered) or None
    root_cause: str | None = None  # the postmortem's primary root cause
    segment: str | None = None
    plan: str | None = None
    currency: str | None = None  # a three-letter code
    csm: str | None = None  # the departure's CSM's email
    mrr_min_cents: int | None = None
    mrr_max_cents: int | None = None
    cancelled_from: date | None = None
    cancelled_to: date | None = None
    text: str | None = None
    sort: str = "mrr"
    viewer_id: int | None = None


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue and the cursor of the next (None on the last)."""

    items: Sequence[ReviewItem]
    next_cursor: str | None


def _conditions(wanted: QueueFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if wanted.status == "open":
        conditions.append(ReviewItem.status != "closed")
    elif wanted.status == "finished":
        conditions.append(ReviewItem.status.in_(FINISHED_STATUSES))
    elif wanted.status:
        conditions.append(ReviewItem.status == wanted.status)
    if wanted.assignee == "mine":
        conditions.append(
            ReviewItem.assignee_id == wanted.viewer_id
            if wanted.viewer_id is not None
            else false()
        )
    elif wanted.assignee == "unassigned":
        conditions.append(ReviewItem.assignee_id.is_(None))
    elif (assignee := parse_int(wanted.assignee)) is not None:
        conditions.append(ReviewItem.assignee_id == assignee)
    if wanted.reason == "none":
        conditions.append(ReviewItem.reason.is_(None))
    elif wanted.reason:
        conditions.append(ReviewItem.reason == wanted.reason)
    if wanted.root_cause:
        conditions.append(
            select(RootCause.id)
            .join(Postmortem, Postmortem.id == RootCause.postmortem_id)
            .where(
                Postmortem.departure_id == ReviewItem.departure_id,
                RootCause.is_primary.is_(True),
                RootCause.code == wanted.root_cause,
            )
            .exists()
        )
    if wanted.segment:
        conditions.append(ReviewItem.segment == wanted.segment)
    if wanted.plan:
        conditions.append(ReviewItem.plan == wanted.plan)
    if wanted.currency:
        conditions.append(ReviewItem.currency == wanted.currency)
    if wanted.csm:
        conditions.append(of_csm(wanted.csm))
    if wanted.mrr_min_cents is not None:
        conditions.append(ReviewItem.mrr_cents >= wanted.mrr_min_cents)
    if wanted.mrr_max_cents is not None:
        conditions.append(ReviewItem.mrr_cents <= wanted.mrr_max_cents)
    if wanted.cancelled_from:
        start = datetime.combine(wanted.cancelled_from, time.min, UTC)
        conditions.append(ReviewItem.cancelled_at >= start)
    if wanted.cancelled_to:
        end = datetime.combine(
            min(wanted.cancelled_to, date(9998, 12, 31)) + timedelta(days=1),
            time.min,
            UTC,
        )
        conditions.append(ReviewItem.cancelled_at < end)
    if wanted.text:
        pattern = "%" + _escape_like(wanted.text.strip().lower()) + "%"
        searched = (
            Departure.company,
            Departure.contact_name,
            Departure.contact_email,
            Response.reason_other,
            Response.details,
            Response.destination_name,
            Response.follow_up_answer,
        )
        conditions.append(
            or_(*(column.ilike(pattern, escape="\\") for column in searched))
        )
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _order(sort: str) -> tuple[Any, Any, bool]:
    """Return (key column, tie-breaker, descending) of a sort."""
    if sort == "newest":
        return ReviewItem.queued_at, ReviewItem.id, True
    if sort == "oldest":
        return ReviewItem.queued_at, ReviewItem.id, False
    return ReviewItem.mrr_cents, ReviewItem.id, True


def encode_cursor(sort: str, item: ReviewItem) -> str:
    """Return the cursor that continues after ``item``."""
    if sort in ("newest", "oldest"):
        key = int(item.queued_at.timestamp() * 1_000_000)
    else:
        key = item.mrr_cents
    return f"{key}.{item.id}"


_DAMAGED_CURSOR = "That page link is damaged; start again from page one."


def _decode_cursor(sort: str, cursor: str) -> tuple[Any, int]:
    key_text, _, id_text = cursor.partition(".")
    # The key is an amount (BIGINT) or microseconds; the id an INTEGER.
    key, item_id = parse_int(key_text, BIGINT_MAX), parse_int(id_text)
    if key is None or item_id is None:
        raise InvalidInput(_DAMAGED_CURSOR)
    if sort in ("newest", "oldest"):
        try:
            return datetime.fromtimestamp(key / 1_000_000, UTC), item_id
        except (OverflowError, OSError, ValueError):
            raise InvalidInput(_DAMAGED_CURSOR) from None
    return key, item_id


def queue_page(
    session: Session,
    wanted: QueueFilter,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> QueuePage:
    """Return one page of the queue, after ``cursor`` (keyset pagination).

    No OFFSET and no count: the next page starts after the last row's sort key
    and id, so rows arriving meanwhile neither repeat nor push others out.
    """
    key, tie, descending = _order(wanted.sort)
    query: Select[ReviewItem] = (
        select(ReviewItem)
        .join(ReviewItem.departure)
        .options(contains_eager(ReviewItem.departure))  # one join, not two
    )
    if wanted.text:
        query = query.outerjoin(
            Response, Response.departure_id == ReviewItem.departure_id
        )
    conditions = _conditions(wanted)
    if cursor:
        after_key, after_id = _decode_cursor(wanted.sort, cursor)
        conditions.append(
            tuple_(key, tie) < tuple_(after_key, after_id)
            if descending
            else tuple_(key, tie) > tuple_(after_key, after_id)
        )
    query = query.where(and_(*conditions)) if conditions else query
    query = query.order_by(
        *((key.desc(), tie.desc()) if descending else (key.asc(), tie.asc()))
    ).limit(limit + 1)
    rows = list(session.scalars(query).unique())
    items, more = rows[:limit], len(rows) > limit
    return QueuePage(
        items=items,
        next_cursor=encode_cursor(wanted.sort, items[-1]) if more else None,
    )


# --- changing items ---------------------------------------------------------------


def get_item(session: Session, public_id: str) -> ReviewItem | None:
    """Return the queue item of the departure with this public id."""
    return session.scalar(
        select(ReviewItem)
        .join(ReviewItem.departure)
        .options(contains_eager(ReviewItem.departure))
        .where(Departure.public_id == public_id)
    )


def change_status(
    session: Session, item: ReviewItem, status: str, *, actor_id: int | None
) -> None:
    """Move an item to ``status``; raise InvalidTransition if not allowed.

    ``postmortem_done`` needs the item's postmortem finished. The move applies
    only if nobody moved the item meanwhile (a conditional update), so two
    people cannot both move it from the same status.
    """
    check_transition(item.status, status)
    if status == "postmortem_done" and (
        session.scalar(
            select(Postmortem.done_at).where(
                Postmortem.departure_id == item.departure_id
            )
        )
        is None
    ):
        raise InvalidTransition(
            "Finish the postmortem first (root causes, preventable, what happened)."
        )
    now = clock.now()
    moved = session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == item.id, ReviewItem.status == item.status)
        .values(status=status, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(moved, "rowcount", 0):
        raise InvalidTransition(
            "Someone changed this item meanwhile; reload the page and try again."
        )
    audit.record(
        session,
        "review.status",
        actor_id=actor_id,
        departure_id=item.departure_id,
        old=item.status,
        new=status,
    )
    set_committed_value(item, "status", status)
    set_committed_value(item, "updated_at", now)


def reviewers(session: Session) -> list[StaffUser]:
    """Return the staff who may take review items: active admins and CSMs."""
    return list(
        session.scalars(select(StaffUser).where(MAY_REVIEW).order_by(StaffUser.name))
    )


def _reviews(session: Session, user_id: int) -> bool:
    """Return whether the staff user ``user_id`` may take review items."""
    found = session.scalar(
        select(StaffUser.id).where(StaffUser.id == user_id, MAY_REVIEW)
    )
    return found is not None


def assign(
    session: Session, item: ReviewItem, assignee_id: int | None, *, actor_id: int | None
) -> None:
    """Give an item to a staff user who reviews (None: to nobody); raise
    InvalidInput for anyone else."""
    if item.assignee_id == assignee_id:
        return
    if assignee_id is not None and not _reviews(session, assignee_id):
        message = "Choose someone who reviews."
        raise InvalidInput(message, {"assignee": [message]})
    audit.record(
        session,
        "review.assigned",
        actor_id=actor_id,
        departure_id=item.departure_id,
        old=item.assignee_id,
        new=assignee_id,
    )
    item.assignee_id = assignee_id
    item.updated_at = clock.now()

"""A departure's place in the review queue, and how it enters it.

Below the answers: recording an answer puts its departure in the queue (see
``survey.answers``), as do the worker (unanswered departures worth a look)
and Stripe's intake (departures without a contact). The staff's work on
the queue is ``survey.review``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    ForeignKey,
    Index,
    Select,
    String,
    bindparam,
    false,
    literal,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from survey.db import Base, one_of
from survey.departures.models import Departure
from survey.vocabulary import REVIEW_STATUSES

if TYPE_CHECKING:
    from survey.staff.models import StaffUser


class ReviewItem(Base):
    """A departure waiting for (or done with) its review: one per departure.

    ``mrr_cents``, ``segment``, ``plan`` and ``cancelled_at`` copy the
    departure's, and ``reason`` the response's, so the queue sorts and filters
    on one table's indexes (a departure's facts do not change once recorded).
    """

    __tablename__ = "review_items"
    __table_args__ = (
        one_of("status", REVIEW_STATUSES, "status_known"),
        Index("ix_review_items_mrr", "mrr_cents", "id"),
        Index("ix_review_items_status_mrr", "status", "mrr_cents", "id"),
        Index("ix_review_items_queued", "queued_at", "id"),
        Index("ix_review_items_status_queued", "status", "queued_at", "id"),
        Index("ix_review_items_reason_mrr", "reason", "mrr_cents", "id"),
        Index("ix_review_items_assignee_mrr", "assignee_id", "mrr_cents", "id"),
        Index("ix_review_items_segment_mrr", "segment", "mrr_cents", "id"),
        Index("ix_review_items_plan_mrr", "plan", "mrr_cents", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    departure_id: Mapped[int] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[str] = mapped_column(String(20), default="new")
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    #: When it entered the queue (its age counts from here).
    queued_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: ``answered``, or ``unanswered`` (queued for its value, without a response).
    origin: Mapped[str] = mapped_column(String(12))
    mrr_cents: Mapped[int] = mapped_column(BigInteger)
    #: The customer's stated main reason; None while unanswered.
    reason: Mapped[str | None] = mapped_column(String(40))
    segment: Mapped[str | None] = mapped_column(String(80))
    plan: Mapped[str | None] = mapped_column(String(80))
    cancelled_at: Mapped[datetime]
    #: The departure's currency (copied, as the facts above, for counting
    #: without reading the departures), and whether its person was erased.
    currency: Mapped[str] = mapped_column(String(3))
    # Only a server default: the answer inserts its item through a prepared
    # statement, which leaves out what SQLAlchemy would add on the way.
    erased: Mapped[bool] = mapped_column(server_default=false())

    departure: Mapped[Departure] = relationship(lazy="joined", innerjoin=True)
    assignee: Mapped[StaffUser | None] = relationship(lazy="joined")


# --- entering the queue: an item is made from its departure -------------------


def new_items(origin: str) -> Select[Any]:
    """Return the departures as new queue items (their facts copied), to insert.

    The caller narrows it with ``.where`` and binds ``now`` and ``reason`` (the
    stated reason, or None); ``ITEM_COLUMNS`` names its columns.
    """
    now = bindparam("now", type_=ReviewItem.queued_at.type)
    items = select(
        Departure.id,
        literal("new"),
        now,
        now,
        literal(origin),
        Departure.mrr_cents,
        bindparam("reason", type_=ReviewItem.reason.type),
        Departure.segment,
        Departure.plan,
        Departure.cancelled_at,
        Departure.currency,
    )
    return cast(Select[Any], items)


ITEM_COLUMNS = [
    "departure_id",
    "status",
    "queued_at",
    "updated_at",
    "origin",
    "mrr_cents",
    "reason",
    "segment",
    "plan",
    "cancelled_at",
    "currency",
]


def of_csm(csm_email: str) -> ColumnElement[bool]:
    """Items whose departure has ``csm_email`` as its CSM (an item does not
    copy its departure's CSM)."""
    return ReviewItem.departure_id.in_(
        select(Departure.id).where(Departure.csm_email == csm_email)
    )

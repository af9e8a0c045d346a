"""Review items (the queue), staff notes, postmortems, root causes, action items."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Select,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    false,
    literal,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from survey.db import Base
from survey.departures.models import Departure
from survey.vocabulary import (
    REVIEW_STATUSES,
    ROOT_CAUSES,
    TEAMS,
    WINBACK_RECOMMENDATIONS,
    YES_PARTLY_NO,
)

if TYPE_CHECKING:
    from survey.staff.models import StaffUser


def _one_of(column: str, codes: object, name: str) -> CheckConstraint:
    values = ", ".join(f"'{code}'" for code in codes)  # type: ignore[attr-defined]
    return CheckConstraint(f"{column} IN ({values})", name=name)


class ReviewItem(Base):
    """A departure waiting for (or done with) its review: one per departure.

    ``mrr_cents``, ``segment``, ``plan`` and ``cancelled_at`` copy the
    departure's, and ``reason`` the response's, so the queue sorts and filters
    on one table's indexes (a departure's facts do not change once recorded).
    """

    __tablename__ = "review_items"
    __table_args__ = (
        _one_of("status", REVIEW_STATUSES, "status_known"),
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


class Note(Base):
    """A staff member's internal note on a departure."""

    __tablename__ = "review_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    departure_id: Mapped[int] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    author: Mapped[StaffUser | None] = relationship(lazy="joined")


class Postmortem(Base):
    """The structured analysis of one loss (see the template in PRODUCT.md).

    ``version`` counts saves: a save based on an older version is refused, so
    two people editing at once never overwrite each other silently.
    """

    __tablename__ = "postmortems"
    __table_args__ = (
        _one_of("followed_process", YES_PARTLY_NO, "followed_process_known"),
        _one_of("preventable", YES_PARTLY_NO, "preventable_known"),
        _one_of(
            "winback_recommendation", WINBACK_RECOMMENDATIONS, "recommendation_known"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    departure_id: Mapped[int] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE"), unique=True
    )
    # Immediate circumstances
    what_happened: Mapped[str | None] = mapped_column(Text)
    who_was_involved: Mapped[str | None] = mapped_column(Text)
    followed_process: Mapped[str | None] = mapped_column(String(10))
    process_deviation: Mapped[str | None] = mapped_column(Text)
    immediate_steps: Mapped[str | None] = mapped_column(Text)
    # The relationship
    communication: Mapped[str | None] = mapped_column(Text)
    sale_sticking_points: Mapped[str | None] = mapped_column(Text)
    conflict_cycle: Mapped[str | None] = mapped_column(Text)
    outside_factors: Mapped[str | None] = mapped_column(Text)
    customer_said: Mapped[str | None] = mapped_column(Text)
    # Conclusion
    preventable: Mapped[str | None] = mapped_column(String(10))
    lessons: Mapped[str | None] = mapped_column(Text)
    winback_recommendation: Mapped[str | None] = mapped_column(String(20))

    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL")
    )
    #: When it was marked done (complete); None while a draft.
    done_at: Mapped[datetime | None]

    updated_by: Mapped[StaffUser | None] = relationship(lazy="joined")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy's API)

    root_causes: Mapped[list[RootCause]] = relationship(
        cascade="all, delete-orphan",
        order_by="(RootCause.is_primary.desc(), RootCause.id)",
        lazy="selectin",
    )
    action_items: Mapped[list[ActionItem]] = relationship(
        cascade="all, delete-orphan", order_by="ActionItem.id", lazy="selectin"
    )


class RootCause(Base):
    """One root cause of a loss; exactly one per postmortem is the primary."""

    __tablename__ = "root_causes"
    __table_args__ = (
        UniqueConstraint("postmortem_id", "code"),
        _one_of("code", ROOT_CAUSES, "code_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    postmortem_id: Mapped[int] = mapped_column(
        ForeignKey("postmortems.id", ondelete="CASCADE")
    )
    code: Mapped[str] = mapped_column(String(40))
    is_primary: Mapped[bool] = mapped_column(default=False)
    #: Required for ``other``: what it was.
    note: Mapped[str | None] = mapped_column(Text)


class ActionItem(Base):
    """Something to change so it does not happen again, owned by a team."""

    __tablename__ = "action_items"
    __table_args__ = (
        _one_of("team", TEAMS, "team_known"),
        Index("ix_action_items_open", "done", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    postmortem_id: Mapped[int] = mapped_column(
        ForeignKey("postmortems.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(Text)
    team: Mapped[str] = mapped_column(String(30))
    #: A person (free text: owners need not have an account here).
    owner: Mapped[str | None] = mapped_column(String(200))
    due_date: Mapped[date | None]
    done: Mapped[bool] = mapped_column(default=False)
    done_at: Mapped[datetime | None]


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

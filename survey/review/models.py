"""What staff write about a departure: notes, postmortems, root causes and
action items. The queue's items themselves are ``survey.review_items``."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from survey.db import Base, one_of
from survey.vocabulary import (
    ROOT_CAUSES,
    TEAMS,
    WINBACK_RECOMMENDATIONS,
    YES_PARTLY_NO,
)

if TYPE_CHECKING:
    from survey.staff.models import StaffUser


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
        one_of("followed_process", YES_PARTLY_NO, "followed_process_known"),
        one_of("preventable", YES_PARTLY_NO, "preventable_known"),
        one_of(
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
        one_of("code", ROOT_CAUSES, "code_known"),
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
        one_of("team", TEAMS, "team_known"),
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

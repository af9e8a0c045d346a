"""The Response model: a departure's answers, one per departure."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from survey.db import Base

if TYPE_CHECKING:
    from survey.departures.models import Departure

#: A response's answers, as exports and the API name them.
ANSWER_FIELDS = (
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
)


class Response(Base):
    """The customer's answers; the database allows one per departure."""

    __tablename__ = "responses"
    #: The API lists answers "changed since" a time.
    __table_args__ = (Index("ix_responses_updated_at", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    departure_id: Mapped[int] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE"), unique=True
    )
    #: The main reason (a survey reason code), from the first page.
    reason: Mapped[str] = mapped_column(String(40))
    reason_other: Mapped[str | None] = mapped_column(Text)
    #: Other reason codes that played a part (second page).
    factors: Mapped[list[str]] = mapped_column(JSON, default=list)
    details: Mapped[str | None] = mapped_column(Text)
    destination: Mapped[str | None] = mapped_column(String(20))
    destination_name: Mapped[str | None] = mapped_column(String(200))
    #: The reason-specific question that was asked (its reason code) and the answer.
    follow_up_reason: Mapped[str | None] = mapped_column(String(40))
    follow_up_answer: Mapped[str | None] = mapped_column(Text)
    #: The survey version the customer last answered in (None: the built-in
    #: wording); staff read the answers in its words.
    survey_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("survey_versions.id")
    )
    #: The language the page was drawn in when the customer last answered
    #: (None before it was kept: the departure's); staff read it in that.
    locale: Mapped[str | None] = mapped_column(String(35))
    answered_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: When the second page was last saved.
    details_saved_at: Mapped[datetime | None]

    departure: Mapped[Departure] = relationship()

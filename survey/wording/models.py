"""The SurveyVersion model: one saved wording, never changed afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from survey.db import Base


class SurveyVersion(Base):
    """A version of the survey's wording; the newest is the one asked.

    A response keeps the version it was answered with, so staff read each
    answer in the words the customer saw. No version at all means the
    built-in wording (version 0).
    """

    __tablename__ = "survey_versions"

    #: The version's number: 1, 2, 3...
    id: Mapped[int] = mapped_column(primary_key=True)
    #: The version it was made from (0: the built-in wording). Unique: of
    #: two admins saving changes to the same version at once, one is told.
    based_on: Mapped[int] = mapped_column(unique=True)
    #: What differs from the built-in wording (see survey.wording.service):
    #: ``reasons`` (the codes shown, in order), ``custom`` (the team's own
    #: reasons: code -> root cause), ``texts`` (language -> key -> text).
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: What this version changed, in a few words, for the list of versions.
    summary: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL")
    )


@event.listens_for(SurveyVersion, "before_update")
def _refuse_change(_mapper: Any, _connection: Any, _target: SurveyVersion) -> None:
    raise RuntimeError("survey versions are never changed; save a new one")

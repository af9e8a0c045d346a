"""The audit log: who did what, when, to which departure. Append-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from survey import clock
from survey.db import Base


class AuditEvent(Base):
    """One thing that happened: an assignment, a status change, a user created..."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_departure_id_at", "departure_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    #: The staff user who acted; None for the system or the customer.
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL"), index=True
    )
    departure_id: Mapped[int | None] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE")
    )
    #: What happened, e.g. ``review.assigned``, ``review.status``, ``user.created``.
    kind: Mapped[str] = mapped_column(String(40))
    #: Facts about it (ids, codes, old and new values); never free text a
    #: customer typed.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def record(
    session: Session,
    kind: str,
    *,
    actor_id: int | None,
    departure_id: int | None = None,
    **detail: Any,
) -> AuditEvent:
    """Append an event to the log (in the caller's transaction)."""
    event = AuditEvent(
        at=clock.now(),
        actor_id=actor_id,
        departure_id=departure_id,
        kind=kind,
        detail=detail,
    )
    session.add(event)
    return event


def for_departure(session: Session, departure_id: int) -> list[AuditEvent]:
    """Return a departure's events, oldest first."""
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.departure_id == departure_id)
            .order_by(AuditEvent.at, AuditEvent.id)
        )
    )

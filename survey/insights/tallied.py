"""Insights read from the running counts (``survey.departures.tallies``).

A year of departures is a few thousand count rows: the panels that count
departures by day, currency, segment, plan and stated reason read these
instead of the departures (the same figures, see the tests). A CSM filter is
not in the counts: the panels then count the departures themselves.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session

from survey.answers.models import Response
from survey.departures.models import Departure
from survey.departures.tallies import (
    DEPARTURE_COUNTS,
    REASON_COUNTS,
    DepartureTally,
    ReasonTally,
)

_KEYS = ("day", "currency", "segment", "plan")


def usable(csm: str | None) -> bool:
    """Whether the counts can answer for these filters (no CSM among them)."""
    return csm is None


def where(
    table: Any,
    start: date,
    end: date,
    *,
    segment: str | None = None,
    plan: str | None = None,
    currency: str | None = None,
) -> list[Any]:
    """Conditions on a tally table: days from ``start`` to ``end`` (inclusive)
    and the filters that are set."""
    conditions = [table.day >= start, table.day <= end]
    for column, value in (
        (table.segment, segment),
        (table.plan, plan),
        (table.currency, currency),
    ):
        if value:
            conditions.append(column == value)
    return conditions


def answered(session: Session, conditions: list[Any], *group: Any) -> list[Any]:
    """Rows of ``group`` (ReasonTally columns), answers, and their MRR."""
    return list(
        session.execute(
            select(
                *group,
                whole(func.sum(ReasonTally.answers)),
                whole(func.sum(ReasonTally.lost_mrr_cents)),
            )
            .where(*conditions)
            .group_by(*group)
        )
    )


def departed(session: Session, conditions: list[Any], *group: Any) -> list[Any]:
    """Rows of ``group`` (DepartureTally columns) and the sums of its counts,
    in ``DEPARTURE_COUNTS`` order."""
    sums = (whole(func.sum(getattr(DepartureTally, name))) for name in DEPARTURE_COUNTS)
    return list(
        session.execute(select(*group, *sums).where(*conditions).group_by(*group))
    )


def whole(total: Any) -> Any:
    """A sum as a whole number on every database (PostgreSQL's SUM of a
    BIGINT is NUMERIC), 0 for none."""
    return cast(func.coalesce(total, 0), BigInteger)


def month(session: Session, day: Any) -> Any:
    """SQL: the month (``YYYY-MM``) of a day column."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(day, "YYYY-MM")
    return func.strftime("%Y-%m", day)


def stored(value: str) -> str | None:
    """A segment or plan as the departures have it (``""``: none)."""
    return value or None


def rebuild(connection: Connection) -> None:
    """Count everything again from the departures (not erased) and answers."""
    day = _day(connection)
    kept = Departure.erased_at.is_(None)
    segment, plan = (
        func.coalesce(Departure.segment, ""),
        func.coalesce(Departure.plan, ""),
    )
    connection.execute(delete(DepartureTally))
    connection.execute(delete(ReasonTally))
    grouped = (day, Departure.currency, segment, plan)
    connection.execute(
        insert(DepartureTally).from_select(
            [*_KEYS, *DEPARTURE_COUNTS],
            select(
                *grouped,
                func.count(Departure.id),
                func.coalesce(func.sum(Departure.mrr_cents), 0),
                func.count(Departure.invitation_sent_at),
                func.count(Departure.first_opened_at),
                func.count(Response.id),
                func.count(Departure.id).filter(Departure.consent_granted.is_(True)),
            )
            .outerjoin(Response, Response.departure_id == Departure.id)
            .where(kept)
            .group_by(*grouped),
        )
    )
    connection.execute(
        insert(ReasonTally).from_select(
            [*_KEYS, "reason", *REASON_COUNTS],
            select(
                *grouped,
                Response.reason,
                func.count(Response.id),
                func.coalesce(func.sum(Departure.mrr_cents), literal(0)),
            )
            .join(Response, Response.departure_id == Departure.id)
            .where(kept)
            .group_by(*grouped, Response.reason),
        )
    )


def _day(connection: Connection) -> Any:
    """SQL: the UTC day of ``cancelled_at``."""
    if connection.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", Departure.cancelled_at))
    return func.date(Departure.cancelled_at)

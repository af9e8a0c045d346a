"""Running counts of departures per day, kept in the transactions that change them.

Insights count a year of departures in a fraction of a second by reading
these instead of the departures: one row per day (of ``cancelled_at``, UTC),
currency, segment and plan, with how many departed, the MRR lost, and how
many were invited (the invitation sent), opened the link, answered and
stand consented to win-back; and one row per day, currency, segment, plan
and stated reason with the answers and their MRR. Erased departures are
taken out. Segment and plan are ``""`` when unknown (a key has no NULL).

Every change goes through ``Tally``: the writers add what changed for a
departure and ``write`` applies it as increments (``INSERT … ON CONFLICT DO
UPDATE``), the rows in one order (so that two transactions never wait for
each other in a circle). ``survey.insights.tallied.rebuild`` counts
everything again from the departures and answers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from survey.db import Base, per_dialect
from survey.db.fastpath import Prepared
from survey.departures.models import Departure

#: What a ``DepartureTally`` row counts, and a ``ReasonTally`` row.
DEPARTURE_COUNTS = (
    "departures",
    "lost_mrr_cents",
    "invited",
    "opened",
    "answered",
    "consented",
)
REASON_COUNTS = ("answers", "lost_mrr_cents")


class _Keyed:
    """The key every tally row has: a day, a currency, a segment, a plan."""

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    segment: Mapped[str] = mapped_column(String(80), primary_key=True)
    plan: Mapped[str] = mapped_column(String(80), primary_key=True)


class DepartureTally(_Keyed, Base):
    """Departures of one day, currency, segment and plan, and how far they got."""

    __tablename__ = "departure_tallies"

    departures: Mapped[int] = mapped_column(BigInteger, default=0)
    lost_mrr_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    invited: Mapped[int] = mapped_column(BigInteger, default=0)
    opened: Mapped[int] = mapped_column(BigInteger, default=0)
    answered: Mapped[int] = mapped_column(BigInteger, default=0)
    consented: Mapped[int] = mapped_column(BigInteger, default=0)


class ReasonTally(_Keyed, Base):
    """Answers of one day, currency, segment and plan that gave one reason."""

    __tablename__ = "reason_tallies"

    reason: Mapped[str] = mapped_column(String(40), primary_key=True)
    answers: Mapped[int] = mapped_column(BigInteger, default=0)
    lost_mrr_cents: Mapped[int] = mapped_column(BigInteger, default=0)


#: The departure's columns its key is made of, in ``Key.of``'s order.
KEY_COLUMNS = (
    Departure.cancelled_at,
    Departure.currency,
    Departure.segment,
    Departure.plan,
)


@dataclass(frozen=True, order=True)
class Key:
    """Where a departure is counted: its day, currency, segment and plan."""

    day: date
    currency: str
    segment: str
    plan: str

    @classmethod
    def of(
        cls,
        cancelled_at: datetime,
        currency: str,
        segment: str | None,
        plan: str | None,
    ) -> Key:
        """The key of a departure's facts."""
        return cls(
            cancelled_at.astimezone(UTC).date(), currency, segment or "", plan or ""
        )

    @classmethod
    def of_departure(cls, departure: Departure) -> Key:
        """The key of ``departure``."""
        return cls.of(
            departure.cancelled_at,
            departure.currency,
            departure.segment,
            departure.plan,
        )


class Tally:
    """What one transaction changes in the counts; ``write`` applies it."""

    def __init__(self) -> None:
        self.departures: dict[Key, Counter[str]] = {}
        self.reasons: dict[tuple[Key, str], Counter[str]] = {}

    def count(self, key: Key, **deltas: int) -> Tally:
        """Add ``deltas`` (of ``DEPARTURE_COUNTS``) to ``key``'s row."""
        self.departures.setdefault(key, Counter()).update(deltas)
        return self

    def count_reason(self, key: Key, reason: str, sign: int, mrr_cents: int) -> Tally:
        """Add (``sign`` 1) or take back (-1) an answer giving ``reason``."""
        row = self.reasons.setdefault((key, reason), Counter())
        row.update(answers=sign, lost_mrr_cents=sign * mrr_cents)
        return self

    def add(self, other: Tally) -> Tally:
        """Add ``other``'s changes to these."""
        for key, deltas in other.departures.items():
            self.departures.setdefault(key, Counter()).update(deltas)
        for reason_key, deltas in other.reasons.items():
            self.reasons.setdefault(reason_key, Counter()).update(deltas)
        return self

    def write(self, connection: Connection) -> None:
        """Apply the changes in ``connection``'s transaction, rows in key order.

        With an ORM session, pass ``session.connection()``.
        """
        for key, deltas in sorted(self.departures.items()):
            if any(deltas.values()):
                _BUMP_DEPARTURES.execute(
                    connection,
                    {**_key_params(key), **{n: deltas[n] for n in DEPARTURE_COUNTS}},
                )
        for (key, reason), deltas in sorted(self.reasons.items()):
            if any(deltas.values()):
                _BUMP_REASON.execute(
                    connection,
                    {
                        **_key_params(key),
                        "reason": reason,
                        **dict.fromkeys(REASON_COUNTS, 0),
                        **deltas,
                    },
                )


def _key_params(key: Key) -> dict[str, Any]:
    return {
        "day": key.day,
        "currency": key.currency,
        "segment": key.segment,
        "plan": key.plan,
    }


def _bump(table: Any, keys: tuple[str, ...], counts: tuple[str, ...]) -> Any:
    def build(insert_: Any) -> Any:
        statement = insert_(table)
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: table.c[name] + statement.excluded[name] for name in counts},
        )

    return build


_KEYS = ("day", "currency", "segment", "plan")
_BUMP_DEPARTURES = Prepared(
    per_dialect(_bump(DepartureTally.__table__, _KEYS, DEPARTURE_COUNTS))
)
_BUMP_REASON = Prepared(
    per_dialect(_bump(ReasonTally.__table__, (*_KEYS, "reason"), REASON_COUNTS))
)


def departure_left(departure: Departure, *, answer: str | None) -> Tally:
    """What counting ``departure`` out takes back (its person is erased):
    everything it added, ``answer`` being its stated reason (None: none)."""
    key = Key.of_departure(departure)
    tally = Tally().count(
        key,
        departures=-1,
        lost_mrr_cents=-departure.mrr_cents,
        invited=-(departure.invitation_sent_at is not None),
        opened=-(departure.first_opened_at is not None),
        answered=-(answer is not None),
        consented=-departure.consent_granted,
    )
    if answer is not None:
        tally.count_reason(key, answer, -1, departure.mrr_cents)
    return tally

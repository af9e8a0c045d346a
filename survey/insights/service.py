"""Insights: what the answers and postmortems say, counted in SQL.

Every panel is one function of a ``Scope`` (the period and the filters) that
runs its aggregation in the database and returns plain rows. Money is never
added across currencies: every amount is per currency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from flask import current_app
from pydantic import BeforeValidator, Field, WithJsonSchema
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    select,
)
from sqlalchemy.orm import Session

from survey.answers.models import Response
from survey.departures.models import Departure
from survey.departures.schemas import normalize_email
from survey.departures.tallies import DepartureTally, ReasonTally
from survey.errors import InvalidInput
from survey.insights import tallied
from survey.money import currency_code
from survey.review.models import ActionItem, Postmortem, RootCause
from survey.review_items import ReviewItem, of_csm
from survey.validation import Blank, Query, normalized, read_query
from survey.vocabulary import FINISHED_STATUSES, ROOT_CAUSES, TEAMS
from survey.wording import service as wordings


@dataclass(frozen=True)
class Scope:
    """The departures a panel counts: cancelled from ``start`` to ``end``
    (inclusive, UTC days), narrowed by the filters that are set."""

    start: date
    end: date
    segment: str | None = None
    plan: str | None = None
    csm: str | None = None
    currency: str | None = None

    @property
    def since(self) -> datetime:
        """The first moment of the period."""
        return datetime.combine(self.start, time.min, UTC)

    @property
    def until(self) -> datetime:
        """The first moment after the period."""
        return datetime.combine(self.end + timedelta(days=1), time.min, UTC)

    def filters(self) -> list[ColumnElement[bool]]:
        """Return the conditions of the filters alone (not the period)."""
        conditions: list[ColumnElement[bool]] = [Departure.erased_at.is_(None)]
        for column, value in (
            (Departure.segment, self.segment),
            (Departure.plan, self.plan),
            (Departure.csm_email, self.csm),
            (Departure.currency, self.currency),
        ):
            if value:
                conditions.append(column == value)
        return conditions

    def counted(self, table: Any, start: date | None = None) -> list[Any]:
        """Return the conditions on a tally table for the period (from
        ``start`` instead, if given) and the filters but the CSM's."""
        return tallied.where(
            table,
            start or self.start,
            self.end,
            segment=self.segment,
            plan=self.plan,
            currency=self.currency,
        )

    def item_filters(self) -> list[ColumnElement[bool]]:
        """Return the filters as conditions on ``ReviewItem`` (which copies its
        departure's facts): postmortems are counted without the departures,
        but for a CSM filter."""
        conditions: list[ColumnElement[bool]] = [ReviewItem.erased.is_(False)]
        for column, value in (
            (ReviewItem.segment, self.segment),
            (ReviewItem.plan, self.plan),
            (ReviewItem.currency, self.currency),
        ):
            if value:
                conditions.append(column == value)
        if self.csm:
            conditions.append(of_csm(self.csm))
        return conditions

    def items(self) -> list[ColumnElement[bool]]:
        """Return the conditions on ``ReviewItem`` for the period and filters."""
        return [
            ReviewItem.cancelled_at >= self.since,
            ReviewItem.cancelled_at < self.until,
            *self.item_filters(),
        ]

    def departures(self) -> list[ColumnElement[bool]]:
        """Return the conditions on ``Departure`` for the period and filters."""
        return [
            Departure.cancelled_at >= self.since,
            Departure.cancelled_at < self.until,
            *self.filters(),
        ]


def _lost_mrr(*where: ColumnElement[bool], of: Any = Departure.mrr_cents) -> Any:
    """The MRR of the counted departures (of those matching ``where``), in
    minor units: a whole number on every database (PostgreSQL's SUM of a
    BIGINT is NUMERIC); ``of``: the column that holds it."""
    total: Any = func.sum(of)
    return tallied.whole(total.filter(*where) if where else total)


@dataclass(frozen=True)
class ReasonRow:
    """Departures of one stated reason (None: no answer) in one currency."""

    reason: str | None
    currency: str
    departures: int
    lost_mrr_cents: int


def _by_reason(
    session: Session,
    answered_where: list[Any],
    departed_where: list[Any],
    *group: str,
    month: bool = False,
) -> list[tuple[Any, ...]]:
    """From the tallies: (``group``..., reason, departures, lost MRR) rows,
    ``None`` the reason of those without an answer (departed less answered);
    ``month``: grouped by the month of the day first."""

    def columns(table: Any) -> list[Any]:
        by_month = [tallied.month(session, table.day)] if month else []
        return by_month + [getattr(table, name) for name in group]

    answers = tallied.answered(
        session, answered_where, *columns(ReasonTally), ReasonTally.reason
    )
    rows, answered_cents = [], Counter[tuple[Any, ...]]()
    for *key, reason, count, cents in answers:
        if count:
            rows.append((*key, reason, count, cents))
        answered_cents[tuple(key)] += cents
    for (
        *key,
        departures,
        lost,
        _invited,
        _opened,
        answered,
        _consented,
    ) in tallied.departed(session, departed_where, *columns(DepartureTally)):
        if departures > answered:
            rows.append(
                (*key, None, departures - answered, lost - answered_cents[tuple(key)])
            )
    return rows


def reasons(session: Session, scope: Scope) -> list[ReasonRow]:
    """Why they say they leave: departures and lost MRR by reason and currency,
    most departures first; departures without an answer under ``None``."""
    if tallied.usable(scope.csm):
        rows = [
            ReasonRow(reason, currency, count, cents)
            for currency, reason, count, cents in _by_reason(
                session,
                scope.counted(ReasonTally),
                scope.counted(DepartureTally),
                "currency",
            )
        ]
        return sorted(
            rows,
            key=lambda r: (-r.departures, r.reason is None, r.reason or "", r.currency),
        )
    departures = func.count(Departure.id)
    statement = (
        select(
            Response.reason,
            Departure.currency,
            departures,
            _lost_mrr(),
        )
        .outerjoin(Response, Response.departure_id == Departure.id)
        .where(*scope.departures())
        .group_by(Response.reason, Departure.currency)
        .order_by(
            departures.desc(),
            Response.reason.is_(None),  # "no answer" last, on every database
            Response.reason,
            Departure.currency,
        )
    )
    return [ReasonRow(*row) for row in session.execute(statement)]


def costliest(rows: Sequence[ReasonRow]) -> list[ReasonRow]:
    """Of ``reasons`` rows, the stated reason losing the most MRR in each
    currency (more departures, then the code, break a tie); no answer is no
    reason. Currencies in order."""
    best: dict[str, ReasonRow] = {}
    for row in rows:
        if row.reason is None:
            continue
        held = best.get(row.currency)
        rank = (row.lost_mrr_cents, row.departures, row.reason)
        if held is None or rank > (held.lost_mrr_cents, held.departures, held.reason):
            best[row.currency] = row
    return [best[currency] for currency in sorted(best)]


@dataclass(frozen=True)
class OtherText:
    """A customer's own words for "something else", with whose item it is."""

    public_id: str
    company: str | None
    text: str
    answered_at: datetime


def other_texts(session: Session, scope: Scope, limit: int = 5) -> list[OtherText]:
    """The latest "something else" answers of the scope, newest first (for the
    page only: the API and the CSVs carry numbers, not customers' words)."""
    statement = (
        select(
            Departure.public_id,
            Departure.company,
            Response.reason_other,
            Response.answered_at,
        )
        .join(Response, Response.departure_id == Departure.id)
        .where(
            Response.reason == "other",
            Response.reason_other.is_not(None),
            *scope.departures(),
        )
        .order_by(Response.answered_at.desc(), Departure.id.desc())
        .limit(limit)
    )
    return [
        OtherText(public_id, company, text or "", answered_at)
        for public_id, company, text, answered_at in session.execute(statement)
    ]


@dataclass(frozen=True)
class Funnel:
    """How far the departures of a scope got, and how fast they answered."""

    departed: int
    invited: int
    opened: int
    answered: int
    consented: int
    #: Median time from the invitation's sending to the answer (None: none).
    median_answer_time: timedelta | None


def funnel(session: Session, scope: Scope) -> Funnel:
    """Departed, invited (the invitation sent), opened, answered, consented
    (the latest consent event a grant), and the median time to answer."""
    median = _median_answer_time(session, scope)
    if tallied.usable(scope.csm):
        departed, _lost, invited, opened, answered, consented = tallied.departed(
            session, scope.counted(DepartureTally)
        )[0]
        return Funnel(departed, invited, opened, answered, consented, median)
    row = session.execute(
        select(
            func.count(Departure.id),
            func.count(Departure.invitation_sent_at),
            func.count(Departure.first_opened_at),
            func.count(Response.id),
            func.count(Departure.id).filter(Departure.consent_granted.is_(True)),
        )
        .outerjoin(Response, Response.departure_id == Departure.id)
        .where(*scope.departures())
    ).one()
    return Funnel(*row, median_answer_time=median)


def _median_answer_time(session: Session, scope: Scope) -> timedelta | None:
    """The median wait from the invitation's sending to the answer, in SQL:
    the middle one (the mean of the two middle ones for an even count) of the
    waits in order, read from their index (see ``Departure``)."""
    wait = Departure.answer_wait_seconds
    waits = (
        select(
            wait,
            func.row_number().over(order_by=wait).label("place"),
            func.count().over().label("count"),
        )
        .where(wait.is_not(None), *scope.departures())
        .subquery()
    )
    middle = session.scalars(
        select(waits.c.answer_wait_seconds).where(
            waits.c.place.in_([(waits.c.count + 1) // 2, (waits.c.count + 2) // 2])
        )
    ).all()
    if not middle:
        return None
    return timedelta(seconds=round(sum(middle) / len(middle)))


def percent(part: int, whole: int) -> int | None:
    """Return ``part`` as a whole percentage of ``whole`` (None if ``whole`` is
    0): how the page, its summaries and its CSVs write a share or a rate."""
    return round(100 * part / whole) if whole else None


@dataclass(frozen=True)
class SaidFound:
    """Finished postmortems whose customer said ``said`` and whose primary
    root cause was found to be ``found``."""

    said: str | None
    found: str
    count: int


def said_vs_found(session: Session, scope: Scope) -> list[SaidFound]:
    """Stated reason by primary root cause, over finished postmortems."""
    count = func.count(Postmortem.id)
    said = ReviewItem.reason  # the answer's, kept on its item (None: no answer)
    statement = (
        select(said, RootCause.code, count)
        .select_from(ReviewItem)
        .join(Postmortem, Postmortem.departure_id == ReviewItem.departure_id)
        .join(
            RootCause,
            and_(RootCause.postmortem_id == Postmortem.id, RootCause.is_primary),
        )
        .where(ReviewItem.status.in_(FINISHED_STATUSES), *scope.items())
        .group_by(said, RootCause.code)
        .order_by(count.desc(), said.is_(None), said, RootCause.code)
    )
    return [SaidFound(*row) for row in session.execute(statement)]


@dataclass(frozen=True)
class Matrix:
    """Said versus found as a grid: stated reasons (rows, None last), primary
    root causes (columns), the count of each pair, and the share of the
    postmortems whose cause differs from what the customer said."""

    said: list[str | None]
    found: list[str]
    counts: dict[tuple[str | None, str], int]
    #: The postmortems counted, and those whose cause differs.
    total: int
    differs: int
    differs_share: float | None


def said_found_matrix(rows: list[SaidFound]) -> Matrix:
    """Arrange ``said_vs_found`` rows as a grid, in the vocabulary's order."""
    reasons, causes = list(wordings.known_reasons()), list(ROOT_CAUSES)
    said = sorted(
        {row.said for row in rows},
        key=lambda code: len(reasons) if code is None else reasons.index(code),
    )
    found = sorted({row.found for row in rows}, key=causes.index)
    total = sum(row.count for row in rows)
    differs = sum(
        row.count for row in rows if wordings.named_cause(row.said) != row.found
    )
    return Matrix(
        said,
        found,
        {(row.said, row.found): row.count for row in rows},
        total,
        differs,
        round(differs / total, 4) if total else None,
    )


@dataclass(frozen=True)
class RootCauseRow:
    """A root cause over the finished postmortems of one currency.

    Money and the preventable verdicts count where it was the primary cause
    (each loss once); ``contributing`` counts where it was one of the others.
    """

    code: str
    team: str
    currency: str
    primary: int
    contributing: int
    lost_mrr_cents: int
    preventable_yes: int
    preventable_partly: int
    preventable_no: int


def root_causes(session: Session, scope: Scope) -> list[RootCauseRow]:
    """Root causes of finished postmortems, grouped by the team owning the fix."""
    primary = RootCause.is_primary.is_(True)

    def verdict(value: str) -> Any:
        return func.count(Postmortem.id).filter(
            primary, Postmortem.preventable == value
        )

    statement = (
        select(
            RootCause.code,
            ReviewItem.currency,
            func.count(RootCause.id).filter(primary),
            func.count(RootCause.id).filter(RootCause.is_primary.is_(False)),
            _lost_mrr(primary, of=ReviewItem.mrr_cents),
            verdict("yes"),
            verdict("partly"),
            verdict("no"),
        )
        .select_from(ReviewItem)
        .join(Postmortem, Postmortem.departure_id == ReviewItem.departure_id)
        .join(RootCause, RootCause.postmortem_id == Postmortem.id)
        .where(ReviewItem.status.in_(FINISHED_STATUSES), *scope.items())
        .group_by(RootCause.code, ReviewItem.currency)
    )
    rows = [
        RootCauseRow(code, ROOT_CAUSES[code][1], currency, *counts)
        for code, currency, *counts in session.execute(statement)
    ]
    teams, codes = list(TEAMS), list(ROOT_CAUSES)
    return sorted(
        rows, key=lambda r: (teams.index(r.team), codes.index(r.code), r.currency)
    )


@dataclass(frozen=True)
class Breakdown:
    """The departures of one segment (or plan): how many, the MRR lost in
    each currency, and the stated reason given most (None: no answers)."""

    value: str | None
    departures: int
    lost_mrr_cents: dict[str, int]
    top_reason: str | None


def breakdown(session: Session, scope: Scope, by: str) -> list[Breakdown]:
    """Departures by ``segment`` or ``plan``: most departures first."""
    money: Sequence[Any]
    answers: Sequence[Any]
    if tallied.usable(scope.csm):
        value = getattr(DepartureTally, by)
        money = [
            (tallied.stored(key), currency, departures, lost)
            for key, currency, departures, lost, *_rest in tallied.departed(
                session, scope.counted(DepartureTally), value, DepartureTally.currency
            )
        ]
        answers = [
            (tallied.stored(key), reason, count)
            for key, reason, count, _cents in tallied.answered(
                session,
                scope.counted(ReasonTally),
                getattr(ReasonTally, by),
                ReasonTally.reason,
            )
            if count
        ]
        return _breakdown_rows(money, answers)
    column = {"segment": Departure.segment, "plan": Departure.plan}[by]
    money = session.execute(
        select(
            column,
            Departure.currency,
            func.count(Departure.id),
            _lost_mrr(),
        )
        .where(*scope.departures())
        .group_by(column, Departure.currency)
    ).all()
    answers = session.execute(
        select(column, Response.reason, func.count(Response.id))
        .select_from(Departure)
        .join(Response, Response.departure_id == Departure.id)
        .where(*scope.departures())
        .group_by(column, Response.reason)
    ).all()
    return _breakdown_rows(money, answers)


def _breakdown_rows(money: Sequence[Any], answers: Sequence[Any]) -> list[Breakdown]:
    """Breakdown rows from (value, currency, departures, lost MRR) and (value,
    reason, answers) aggregates: most departures first."""
    # Aggregates only, a few rows a group: the top reason, ties by code.
    top: dict[str | None, tuple[int, str]] = {}
    for value, reason, count in answers:
        best = top.get(value)
        if best is None or (-count, reason) < (-best[0], best[1]):
            top[value] = (count, reason)
    departures: dict[str | None, int] = {}
    lost: dict[str | None, dict[str, int]] = {}
    for value, currency, count, cents in money:
        departures[value] = departures.get(value, 0) + count
        lost.setdefault(value, {})[currency] = cents
    rows = [
        Breakdown(value, count, lost[value], top[value][1] if value in top else None)
        for value, count in departures.items()
    ]
    return sorted(rows, key=lambda r: (-r.departures, r.value is None, r.value or ""))


#: The recent window and the baseline before it, in days.
RECENT_DAYS, BASELINE_DAYS = 30, 90


@dataclass(frozen=True)
class Recurring:
    """A stated reason or (primary) root cause seen often lately, and more
    often than before: how often in the last 30 days, against its rate per
    30 days over the 90 days before."""

    kind: str  # "reason" or "root_cause"
    code: str
    last_30_days: int
    baseline_per_30_days: float


def recurring(
    session: Session, scope: Scope, *, min_count: int, rise_percent: int
) -> list[Recurring]:
    """Flags as of the period's end (its filters apply, its start does not).

    Flagged: seen at least ``min_count`` times in the last 30 days, and at
    least ``rise_percent`` % above the baseline (any count is above none).
    Root causes count the primary one of every postmortem, finished or not:
    a flag is an early warning.
    """
    recent_since = scope.until - timedelta(days=RECENT_DAYS)
    baseline_since = recent_since - timedelta(days=BASELINE_DAYS)
    when = Departure.cancelled_at

    def counts(code: Any, select_from: Select[Any]) -> list[Any]:
        statement = (
            select_from.add_columns(
                code,
                func.count(Departure.id).filter(when >= recent_since),
                func.count(Departure.id).filter(when < recent_since),
            )
            .where(when >= baseline_since, when < scope.until, *scope.filters())
            .group_by(code)
        )
        return list(session.execute(statement))

    if tallied.usable(scope.csm):
        lately = ReasonTally.day >= recent_since.date()
        reasons = list(
            session.execute(
                select(
                    ReasonTally.reason,
                    tallied.whole(func.sum(ReasonTally.answers).filter(lately)),
                    tallied.whole(func.sum(ReasonTally.answers).filter(~lately)),
                )
                .where(*scope.counted(ReasonTally, baseline_since.date()))
                .group_by(ReasonTally.reason)
            )
        )
    else:
        reasons = counts(
            Response.reason,
            select()
            .select_from(Departure)
            .join(Response, Response.departure_id == Departure.id),
        )
    lost = ReviewItem.cancelled_at
    causes = list(
        session.execute(
            select(
                RootCause.code,
                func.count(RootCause.id).filter(lost >= recent_since),
                func.count(RootCause.id).filter(lost < recent_since),
            )
            .select_from(ReviewItem)
            .join(Postmortem, Postmortem.departure_id == ReviewItem.departure_id)
            .join(
                RootCause,
                and_(RootCause.postmortem_id == Postmortem.id, RootCause.is_primary),
            )
            .where(lost >= baseline_since, lost < scope.until, *scope.item_filters())
            .group_by(RootCause.code)
        )
    )
    flags = []
    for kind, rows in (("reason", reasons), ("root_cause", causes)):
        for code, recent, before in rows:
            baseline = before * RECENT_DAYS / BASELINE_DAYS
            if recent >= min_count and recent * 100 >= baseline * (100 + rise_percent):
                flags.append(Recurring(kind, code, recent, round(baseline, 2)))
    return sorted(flags, key=lambda f: (-f.last_30_days, f.kind, f.code))


#: The windows before and after a fix, in days.
FIX_WINDOW_DAYS = 90


@dataclass(frozen=True)
class FixEffect:
    """Departures with ``code`` as their primary root cause, per 30 days,
    before and after the last action item on that cause was done."""

    code: str
    last_done_at: datetime
    before_per_30_days: float
    after_per_30_days: float | None  # None: done today, nothing to compare yet
    #: Change from before to after, in percent (None: no departures before).
    change_percent: float | None


def fix_effects(session: Session, scope: Scope, *, now: datetime) -> list[FixEffect]:
    """For each root cause with action items done: departures with it as the
    primary cause per 30 days in the 90 days before the last one was done,
    and in the 90 days after (or the days since, when fewer). The filters
    apply, not the period: a fix is judged on its own dates. Departures
    count once their postmortem names the cause.
    """
    last_done = session.execute(
        select(RootCause.code, func.max(ActionItem.done_at))
        .join(Postmortem, Postmortem.id == RootCause.postmortem_id)
        .join(ActionItem, ActionItem.postmortem_id == Postmortem.id)
        .where(RootCause.is_primary.is_(True), ActionItem.done.is_(True))
        .group_by(RootCause.code)
    ).all()
    window = timedelta(days=FIX_WINDOW_DAYS)
    windows = {
        code: (done_at, min(done_at + window, now))
        for code, done_at in last_done
        if done_at is not None
    }
    if not windows:
        return []
    # One pass over the primary causes (few, next to their items), two
    # counts per cause: its own days before and after.
    when = ReviewItem.cancelled_at
    counts: list[Any] = []
    for code, (done_at, after_until) in windows.items():
        is_code = RootCause.code == code
        counts.append(
            func.count(RootCause.id).filter(
                is_code, when >= done_at - window, when < done_at
            )
        )
        counts.append(
            func.count(RootCause.id).filter(
                is_code, when >= done_at, when < after_until
            )
        )
    row = session.execute(
        select(*counts)
        .select_from(RootCause)
        .join(Postmortem, Postmortem.id == RootCause.postmortem_id)
        .join(ReviewItem, ReviewItem.departure_id == Postmortem.departure_id)
        .where(
            RootCause.is_primary.is_(True),
            RootCause.code.in_(list(windows)),
            *scope.item_filters(),
        )
    ).one()
    effects = []
    for index, (code, (done_at, after_until)) in enumerate(windows.items()):
        before, after = row[2 * index], row[2 * index + 1]
        before_rate = before * 30 / FIX_WINDOW_DAYS
        days_after = (after_until - done_at).total_seconds() / 86400
        after_rate = after * 30 / days_after if days_after > 0 else None
        change = None
        if before_rate and after_rate is not None:
            change = round((after_rate - before_rate) * 100 / before_rate, 1)
        effects.append(
            FixEffect(
                code,
                done_at,
                round(before_rate, 2),
                None if after_rate is None else round(after_rate, 2),
                change,
            )
        )
    return sorted(effects, key=lambda e: list(ROOT_CAUSES).index(e.code))


@dataclass(frozen=True)
class TeamActions:
    """A team's action items still open, and how many of them are overdue."""

    team: str
    open: int
    overdue: int


def open_actions(session: Session, scope: Scope, *, today: date) -> list[TeamActions]:
    """Open and overdue action items by team (the filters apply, not the
    period: an item stays open whenever its loss was)."""
    statement = (
        select(
            ActionItem.team,
            func.count(ActionItem.id),
            func.count(ActionItem.id).filter(ActionItem.due_date < today),
        )
        .join(Postmortem, Postmortem.id == ActionItem.postmortem_id)
        .join(ReviewItem, ReviewItem.departure_id == Postmortem.departure_id)
        .where(ActionItem.done.is_(False), *scope.item_filters())
        .group_by(ActionItem.team)
    )
    teams = list(TEAMS)
    rows = [TeamActions(*row) for row in session.execute(statement)]
    return sorted(rows, key=lambda r: teams.index(r.team))


@dataclass(frozen=True)
class MonthRow:
    """Departures of one month (``YYYY-MM``, UTC), stated reason (None: no
    answer) and currency, and the MRR they lost (in that currency)."""

    month: str
    reason: str | None
    currency: str
    departures: int
    lost_mrr_cents: int


def months_ending(end: date, count: int = 12) -> list[str]:
    """Return the ``count`` months (``YYYY-MM``) ending with ``end``'s, in order."""
    index = end.year * 12 + end.month - 1
    return [
        f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)
    ]


def over_time(session: Session, scope: Scope) -> list[MonthRow]:
    """Departures and lost MRR per month, for the 12 months ending with the
    period's end, by stated reason and currency (the filters apply)."""
    first = months_ending(scope.end)[0]
    since = datetime(int(first[:4]), int(first[5:]), 1, tzinfo=UTC)
    if tallied.usable(scope.csm):
        rows = [
            MonthRow(month, reason, currency, count, cents)
            for month, currency, reason, count, cents in _by_reason(
                session,
                scope.counted(ReasonTally, since.date()),
                scope.counted(DepartureTally, since.date()),
                "currency",
                month=True,
            )
        ]
        return sorted(
            rows, key=lambda r: (r.month, r.reason is None, r.reason or "", r.currency)
        )
    if session.get_bind().dialect.name == "postgresql":
        month = func.to_char(func.timezone("UTC", Departure.cancelled_at), "YYYY-MM")
    else:  # stored as UTC without a zone
        month = func.strftime("%Y-%m", Departure.cancelled_at)
    statement = (
        select(
            month,
            Response.reason,
            Departure.currency,
            func.count(Departure.id),
            _lost_mrr(),
        )
        .outerjoin(Response, Response.departure_id == Departure.id)
        .where(
            Departure.cancelled_at >= since,
            Departure.cancelled_at < scope.until,
            *scope.filters(),
        )
        .group_by(month, Response.reason, Departure.currency)
        .order_by(month, Response.reason.is_(None), Response.reason, Departure.currency)
    )
    return [MonthRow(*row) for row in session.execute(statement)]


#: Periods offered as presets (days ending today), and the longest allowed.
PRESET_DAYS = (30, 90, 365)
MAX_PERIOD_DAYS = 3660
#: The dates a period may name.
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)


def _iso_date(given: Any) -> date | None:
    try:
        day = date.fromisoformat(given.strip()) if given.strip() else None
    except (AttributeError, ValueError):
        raise ValueError("Give a date as YYYY-MM-DD.") from None
    if day is not None and not EARLIEST <= day <= LATEST:
        # Periods and the 12-month chart count back and forth from it.
        raise ValueError(f"Give a date between {EARLIEST} and {LATEST}.")
    return day


def _preset(given: Any) -> int | None:
    given = str(given).strip() if given is not None else ""
    if not given:
        return None
    if given not in {str(days) for days in PRESET_DAYS}:
        raise ValueError(f"Use one of {', '.join(map(str, PRESET_DAYS))}.")
    return int(given)


#: A day, inclusive (YYYY-MM-DD, UTC).
IsoDate = Annotated[
    date | None,
    BeforeValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]
#: Text compared exactly, as long as any stored value can be.
Exact = Annotated[str | None, Blank, normalized(lambda text: text[:200])]


class InsightsPeriod(Query):
    """The period as a query string gives it (the page, the API)."""

    start: IsoDate = Field(
        None,
        alias="from",
        description="First day (YYYY-MM-DD, UTC, inclusive); default: `days` "
        f"before `to`. At most {MAX_PERIOD_DAYS} days.",
    )
    end: IsoDate = Field(
        None, alias="to", description="Last day (YYYY-MM-DD, inclusive); default today."
    )
    days: Annotated[
        int | None,
        BeforeValidator(_preset),
        WithJsonSchema({"type": "integer", "enum": list(PRESET_DAYS)}),
    ] = Field(None, description="A preset period ending on `to`.")

    def bounds(self, today: date) -> tuple[date, date]:
        """Return the first and last day; raise ValueError for a period that
        ends before it starts, or is too long."""
        end = self.end or today
        start = self.start or end - timedelta(days=(self.days or PRESET_DAYS[0]) - 1)
        if start > end:
            raise ValueError("The period must start on or before its end.")
        if (end - start).days >= MAX_PERIOD_DAYS:
            raise ValueError(f"Ask for at most {MAX_PERIOD_DAYS} days at once.")
        return start, end


class InsightsFilter(Query):
    """The filters as a query string gives them (the page, the API)."""

    segment: Exact = Field(None, description="Segment, exactly.")
    plan: Exact = Field(None, description="Plan, exactly.")
    # As the departures store them: "Ana@Example.com" is ana@..., "usd" is USD.
    csm: Annotated[str | None, Blank, normalized(normalize_email)] = Field(
        None, description="The CSM's email."
    )
    currency: Annotated[str | None, Blank, normalized(currency_code)] = Field(
        None, description="A three-letter currency code."
    )


def scope_from(args: Mapping[str, str], today: date) -> Scope:
    """Read a Scope from a query string (``InsightsPeriod``, by default the
    last 30 days, and ``InsightsFilter``). Raise InvalidInput with every
    problem, per field, for anything else."""
    invalid = "The period or filters are not valid."
    problems: dict[str, list[str]] = {}
    start = end = today
    wanted = None
    try:
        start, end = read_query(InsightsPeriod, args, invalid).bounds(today)
    except InvalidInput as error:
        problems |= error.fields
    except ValueError as error:
        problems["from"] = [str(error)]
    try:
        wanted = read_query(InsightsFilter, args, invalid)
    except InvalidInput as error:
        problems |= error.fields
    if problems or wanted is None:
        raise InvalidInput(invalid, problems)
    return Scope(start, end, wanted.segment, wanted.plan, wanted.csm, wanted.currency)


@dataclass(frozen=True)
class Panels:
    """Every panel of one scope."""

    scope: Scope
    recurring: list[Recurring]
    reasons: list[ReasonRow]
    other_texts: list[OtherText]
    over_time: list[MonthRow]
    funnel: Funnel
    said_vs_found: list[SaidFound]
    root_causes: list[RootCauseRow]
    fixes: list[FixEffect]
    open_actions: list[TeamActions]
    by_segment: list[Breakdown]
    by_plan: list[Breakdown]


def _recurring_now(session: Session, scope: Scope) -> list[Recurring]:
    config = current_app.config
    return recurring(
        session,
        scope,
        min_count=config["RECURRING_MIN_COUNT"],
        rise_percent=config["RECURRING_RISE_PERCENT"],
    )


#: How each panel is computed, by name (a field of ``Panels``), as of a time.
PANELS: dict[str, Callable[[Session, Scope, datetime], Any]] = {
    "recurring": lambda session, scope, _now: _recurring_now(session, scope),
    "reasons": lambda session, scope, _now: reasons(session, scope),
    "other_texts": lambda session, scope, _now: other_texts(session, scope),
    "over_time": lambda session, scope, _now: over_time(session, scope),
    "funnel": lambda session, scope, _now: funnel(session, scope),
    "said_vs_found": lambda session, scope, _now: said_vs_found(session, scope),
    "root_causes": lambda session, scope, _now: root_causes(session, scope),
    "fixes": lambda session, scope, now: fix_effects(session, scope, now=now),
    "open_actions": lambda session, scope, now: open_actions(
        session, scope, today=now.date()
    ),
    "by_segment": lambda session, scope, _now: breakdown(session, scope, "segment"),
    "by_plan": lambda session, scope, _now: breakdown(session, scope, "plan"),
}


def panel(session: Session, scope: Scope, name: str, *, now: datetime) -> Any:
    """Compute the one panel ``name`` of ``scope`` as of ``now``."""
    return PANELS[name](session, scope, now)


def panels(session: Session, scope: Scope, *, now: datetime) -> Panels:
    """Compute every panel of ``scope`` as of ``now`` (the app's thresholds)."""
    return Panels(
        scope, **{name: panel(session, scope, name, now=now) for name in PANELS}
    )


@dataclass(frozen=True)
class MonthGrid:
    """``over_time`` rows as the page shows them: for each month, departures
    by stated reason (``"none"``: no answer) added up over the currencies (a
    count), and for each currency the MRR lost by stated reason (the reasons
    of that currency's departures)."""

    months: list[str]
    departures: dict[str, list[int]]
    lost_mrr_cents: dict[str, dict[str, list[int]]]

    @property
    def totals(self) -> list[int]:
        """Departures per month, all reasons."""
        return _per_month(self.departures.values(), len(self.months))

    def lost_totals(self, currency: str) -> list[int]:
        """MRR lost per month in ``currency``, all reasons."""
        series = self.lost_mrr_cents[currency].values()
        return _per_month(series, len(self.months))


def _per_month(series: Iterable[list[int]], months: int) -> list[int]:
    values = list(series)
    return [sum(one[i] for one in values) for i in range(months)]


def month_grid(rows: list[MonthRow], months: list[str]) -> MonthGrid:
    """Arrange ``over_time`` rows by month, reasons in the vocabulary's order,
    currencies in theirs."""
    index = {month: i for i, month in enumerate(months)}
    order = {key: n for n, key in enumerate([*wordings.known_reasons(), "none"])}
    departures: dict[str, list[int]] = {}
    lost: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        if row.month not in index:
            continue
        i, key = index[row.month], row.reason or "none"
        departures.setdefault(key, [0] * len(months))[i] += row.departures
        series = lost.setdefault(row.currency, {})
        series.setdefault(key, [0] * len(months))[i] += row.lost_mrr_cents

    def ordered(series: dict[str, list[int]]) -> dict[str, list[int]]:
        return dict(
            sorted(series.items(), key=lambda item: order.get(item[0], len(order)))
        )

    return MonthGrid(
        months,
        ordered(departures),
        {currency: ordered(lost[currency]) for currency in sorted(lost)},
    )

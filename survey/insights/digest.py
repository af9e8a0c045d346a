"""The weekly digest: last week's insights, by email, to the staff who asked.

Sent on Monday morning (``DIGEST_HOUR`` in ``DIGEST_TIMEZONE``) by the mail
worker (later in the week if no worker ran then), or by hand (``flask --app
survey digest send``). A week's digest is sent once: its row in
``digest_weeks`` is written in the transaction that queues the emails, so of
several workers (or a worker and a person) only the first commits; the
others find the week taken and queue nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from survey import links, outbox
from survey.db import Base
from survey.insights.service import (
    Recurring,
    Scope,
    TeamActions,
    open_actions,
    reasons,
    recurring,
)
from survey.staff.models import StaffUser

log = logging.getLogger(__name__)

#: How many stated reasons the digest names.
TOP_REASONS = 3


class DigestWeek(Base):
    """A week whose digest was queued (its Monday is the key: once a week)."""

    __tablename__ = "digest_weeks"

    week_start: Mapped[date] = mapped_column(primary_key=True)
    recipients: Mapped[int]
    #: ``worker <id>`` or ``command``.
    sent_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]


@dataclass(frozen=True)
class Digest:
    """What one week's digest says."""

    week: Scope
    departed: int
    #: Lost MRR per currency, never added across them.
    lost_mrr_cents: dict[str, int]
    #: The stated reasons given most (None: no answer), with their counts.
    top_reasons: list[tuple[str | None, int]]
    #: Flags raised at the week's end that were not up a week before.
    new_flags: list[Recurring]
    #: Teams with overdue action items.
    overdue: list[TeamActions]
    #: The insights page for that week.
    url: str


def local_now(now: datetime) -> datetime:
    """``now`` in the digest's time zone."""
    return now.astimezone(ZoneInfo(current_app.config["DIGEST_TIMEZONE"]))


def last_week(today: date) -> Scope:
    """Monday to Sunday of the week before ``today``'s."""
    monday = today - timedelta(days=today.weekday() + 7)
    return Scope(monday, monday + timedelta(days=6))


def due_week(now: datetime) -> Scope | None:
    """The week whose digest is due at ``now``: last week's, from Monday's
    ``DIGEST_HOUR`` on (local time) until the week ends, so that a worker
    down on Monday sends it late rather than never; None on Monday before."""
    local = local_now(now)
    if local.weekday() == 0 and local.hour < current_app.config["DIGEST_HOUR"]:
        return None
    return last_week(local.date())


def build(session: Session, week: Scope, *, today: date) -> Digest:
    """Gather ``week``'s digest (action items overdue as of ``today``)."""
    rows = reasons(session, week)
    money: Counter[str] = Counter()
    per_reason: Counter[str | None] = Counter()
    for row in rows:
        money[row.currency] += row.lost_mrr_cents
        per_reason[row.reason] += row.departures
    config = current_app.config

    def flags(scope: Scope) -> list[Recurring]:
        return recurring(
            session,
            scope,
            min_count=config["RECURRING_MIN_COUNT"],
            rise_percent=config["RECURRING_RISE_PERCENT"],
        )

    before = {
        (flag.kind, flag.code)
        for flag in flags(Scope(week.start, week.end - timedelta(days=7)))
    }
    return Digest(
        week=week,
        departed=sum(per_reason.values()),
        lost_mrr_cents=dict(sorted(money.items())),
        top_reasons=per_reason.most_common(TOP_REASONS),
        new_flags=[f for f in flags(week) if (f.kind, f.code) not in before],
        overdue=[t for t in open_actions(session, week, today=today) if t.overdue],
        url=links.external_url(
            "insights.page",
            **{"from": week.start.isoformat(), "to": week.end.isoformat()},
        ),
    )


def recipients(session: Session, roles: frozenset[str]) -> list[StaffUser]:
    """Active staff of ``roles`` who asked for the digest, by address."""
    return list(
        session.scalars(
            select(StaffUser)
            .where(
                StaffUser.weekly_digest.is_(True),
                StaffUser.active.is_(True),
                StaffUser.role.in_(sorted(roles)),
            )
            .order_by(StaffUser.email)
        )
    )


def already_sent(session: Session, week: Scope) -> bool:
    """Whether ``week``'s digest was queued."""
    return session.get(DigestWeek, week.start) is not None


def send(
    session: Session,
    week: Scope,
    *,
    roles: frozenset[str],
    now: datetime,
    sent_by: str,
) -> int | None:
    """Queue ``week``'s digest for every recipient and commit; return how many
    were queued, or None when the week's digest was queued already (by this
    or another worker). ``session`` must be in a writing transaction."""
    if already_sent(session, week):
        session.rollback()
        return None
    people = recipients(session, roles)
    digest = build(session, week, today=local_now(now).date())
    session.add(
        DigestWeek(
            week_start=week.start,
            recipients=len(people),
            sent_by=sent_by,
            created_at=now,
        )
    )
    try:
        session.flush()  # the week's key: a second worker waits here, then fails
    except IntegrityError:
        session.rollback()
        return None
    for person in people:
        outbox.enqueue(
            session,
            kind="digest",
            recipient=person.email,
            locale=None,
            digest=digest,
            reader=person.name,
        )
    session.commit()
    log.info("weekly digest for %s queued for %d staff", week.start, len(people))
    return len(people)


def render(digest: Digest) -> tuple[str, str]:
    """The digest's subject and plain text (for ``--dry-run``)."""
    subject, text, _html = outbox.render_email(
        "digest", None, digest=digest, reader=None
    )
    return subject, text

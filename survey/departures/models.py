"""The Departure model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from survey.db import Base, Str80, new_public_id
from survey.vocabulary import DEPARTURE_SOURCES

#: The departures whose wait counts: answered after the invitation, not erased.
WAITED = "answer_wait_seconds IS NOT NULL AND erased_at IS NULL"


class Departure(Base):
    """One lost account and the one contact we ask why."""

    __tablename__ = "departures"
    __table_args__ = (
        # Insights' median wait reads only this: the waits of a period, in order.
        Index(
            "ix_departures_answer_wait",
            "cancelled_at",
            "answer_wait_seconds",
            sqlite_where=text(WAITED),
            postgresql_where=text(WAITED),
        ),
        CheckConstraint("mrr_cents >= 0", name="mrr_not_negative"),
        CheckConstraint(
            "source IN ({})".format(", ".join(f"'{s}'" for s in DEPARTURE_SOURCES)),
            name="source_known",
        ),
        # Finding a person's departures: erasure, export, win-back.
        Index("ix_departures_contact_email", "contact_email"),
        # The win-back list, in the order of its cursor.
        Index("ix_departures_winback_grant_id", "winback_grant_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Random id used in links and the API; the integer key never leaves the app.
    public_id: Mapped[str] = mapped_column(
        String(24), unique=True, default=new_public_id
    )
    #: The billing system's id for this cancellation; recording is idempotent on it.
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    company: Mapped[str | None] = mapped_column(String(200))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    #: None: no one to ask (a Stripe customer without an address).
    contact_email: Mapped[str | None] = mapped_column(String(320))
    plan: Mapped[str | None] = mapped_column(String(80))
    #: Monthly recurring revenue lost, in minor units of ``currency``.
    mrr_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    segment: Mapped[str | None] = mapped_column(String(80))
    locale: Mapped[str | None] = mapped_column(String(35))
    csm_email: Mapped[str | None] = mapped_column(String(320))
    cancelled_at: Mapped[datetime]
    billing_reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[Str80]
    created_at: Mapped[datetime]
    #: When the invitation was queued.
    invited_at: Mapped[datetime | None]
    #: When the first invitation went out (the mail worker sent it).
    invitation_sent_at: Mapped[datetime | None]
    #: First GET of the survey link (the only thing a GET records).
    first_opened_at: Mapped[datetime | None]
    #: Seconds from the invitation's sending to the first answer (None: not
    #: answered, or answered before the sending was noted), for the median.
    answer_wait_seconds: Mapped[int | None] = mapped_column(BigInteger)
    #: Whether the latest win-back consent event is a grant: the ledger
    #: (``consent_events``) decides; this copy, written with each event, is
    #: for counting without reading the ledger.
    consent_granted: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The grant (a ``consent_events`` id) that puts the contact on the
    #: win-back list, None when not listed: the departure's latest event when
    #: it is a grant that no withdrawal by the same person, through any of
    #: their departures, has followed. Written with each consent event (see
    #: ``consent.record_consent``), so listing a million contacts reads no
    #: ledger history. Not a foreign key: the ledger already refers here.
    winback_grant_id: Mapped[int | None]
    #: The signed consent-withdrawal token the win-back list hands out with
    #: that grant, made when it was given (an export then signs nothing).
    withdraw_token: Mapped[str | None] = mapped_column(String(120))
    #: Last time a fresh link was sent after the old one expired.
    fresh_link_sent_at: Mapped[datetime | None]
    #: When the contact's personal data was erased (their links then answer 410).
    erased_at: Mapped[datetime | None]
    #: When the customer took the cancellation back (Stripe): no reminder, and
    #: their link thanks them for staying and records nothing.
    reactivated_at: Mapped[datetime | None]
    #: Reminders queued so far (at most ``SURVEY_REMINDERS``) and the latest.
    reminders_sent: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    last_reminded_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<Departure {self.public_id}>"

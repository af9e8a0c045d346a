"""What the API answers, described once as pydantic models.

The OpenAPI document (``survey.api.openapi``) publishes their JSON Schema;
the answers' own descriptions (``survey.answers.schemas``) are also what
``GET /api/v1/responses`` writes its JSON with. The tests check every other
answer against these models through the document.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from survey.answers.schemas import AnswersOut, ConsentOut
from survey.insights import service as insights


class ErrorOut(BaseModel):
    """Every error under /api: a code, a sentence, and per-field messages."""

    error: str = Field(description="A stable code: invalid, unauthorized, ...")
    message: str
    fields: dict[str, list[str]] = Field(
        description="Per input field, what is wrong with it (may be empty)."
    )


class DepartureOut(BaseModel):
    """A departure as the API shows it: never with the survey link but in
    the 201 that recorded it, and with the customer's answers only for a
    token holding ``responses:read``."""

    id: str = Field(description="The departure's public id.")
    external_id: str
    company: str | None
    contact_name: str | None
    contact_email: str | None = Field(description="Null: no one to ask.")
    plan: str | None
    mrr_cents: int
    currency: str
    segment: str | None
    cancelled_at: datetime
    locale: str | None
    csm_email: str | None
    billing_reason: str | None
    source: str
    created_at: datetime
    invited_at: datetime | None
    first_opened_at: datetime | None
    review_status: str | None = Field(
        description="Null until the departure enters the review queue."
    )
    response: AnswersOut | None = Field(
        default=None,
        description="Only with responses:read; null when not answered.",
    )
    consent: ConsentOut | None = Field(
        default=None, description="Only with responses:read."
    )
    survey_url: str | None = Field(
        default=None,
        description="Only in the 201 of the POST that recorded the departure.",
    )


class WinbackContact(BaseModel):
    """A contact who consented to hear from us again."""

    contact_email: str
    contact_name: str | None
    company: str | None
    plan: str | None
    segment: str | None
    mrr_cents: int
    currency: str
    primary_reason: str | None
    postmortem_recommendation: str | None
    consented_at: datetime
    consent_wording_version: str
    unsubscribe_url: str


class WinbackPage(BaseModel):
    """One page of the win-back list; ``next_cursor`` is null on the last."""

    contacts: list[WinbackContact]
    next_cursor: str | None


class ErasureOut(BaseModel):
    """What an erasure did."""

    erased_departures: int = Field(description="Departures erased now (0: none).")


class Period(BaseModel):
    """The days counted, inclusive, UTC."""

    from_: date = Field(alias="from")
    to: date


class InsightsFilters(BaseModel):
    """The filters applied (null: not set)."""

    segment: str | None
    plan: str | None
    csm: str | None
    currency: str | None


class FunnelOut(BaseModel):
    """How far the departures got, and the median time to answer."""

    departed: int
    invited: int
    opened: int
    answered: int
    consented: int
    median_answer_seconds: float | None


class Money(BaseModel):
    """An amount in minor units of one currency."""

    currency: str
    cents: int


class SegmentRow(BaseModel):
    """The departures of one segment."""

    segment: str | None
    departures: int
    lost_mrr: list[Money]
    top_reason: str | None


class PlanRow(BaseModel):
    """The departures of one plan."""

    plan: str | None
    departures: int
    lost_mrr: list[Money]
    top_reason: str | None


class InsightsOut(BaseModel):
    """Every insights panel; amounts per currency, never summed across."""

    period: Period
    filters: InsightsFilters
    recurring: list[insights.Recurring]
    reasons: list[insights.ReasonRow]
    over_time: list[insights.MonthRow]
    funnel: FunnelOut
    said_vs_found: list[insights.SaidFound]
    root_causes: list[insights.RootCauseRow]
    fixes: list[insights.FixEffect]
    open_actions: list[insights.TeamActions]
    by_segment: list[SegmentRow]
    by_plan: list[PlanRow]
    said_vs_found_differs_share: float | None


class StripeReceived(BaseModel):
    """A Stripe event taken in (or seen before: the intake is idempotent)."""

    received: Literal[True]
    outcome: Literal["handled", "duplicate", "postponed"] = Field(
        description="handled, duplicate (seen before) or postponed (Stripe's API "
        "did not answer: the worker tries again later)."
    )

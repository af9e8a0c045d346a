"""How the API shows a customer's answers and consent: one description each,
used to write the JSON and to publish its schema (``/api/v1/openapi.json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ConsentOut(BaseModel):
    """Where the win-back consent stands, as of its latest event."""

    state: Literal["granted", "withdrawn", "none"]
    #: None when the customer never chose (state ``none``).
    since: datetime | None


class AnswersOut(BaseModel):
    """What the customer answered in the survey (their own words included)."""

    reason: str = Field(description="The main reason: a survey reason code.")
    reason_other: str | None = Field(description="Their words for 'something else'.")
    factors: list[str] = Field(description="Other reason codes that played a part.")
    details: str | None
    destination: str | None = Field(
        description="competitor, in_house, none or unknown (null: not answered)."
    )
    destination_name: str | None
    follow_up_reason: str | None = Field(
        description="The reason whose follow-up question was answered."
    )
    follow_up_answer: str | None
    answered_at: datetime = Field(description="When the first answer was given.")
    updated_at: datetime = Field(description="When the answers last changed.")


class ListedResponse(AnswersOut):
    """One answered survey with its departure's account facts and consent."""

    departure_id: str = Field(description="The departure's public id.")
    external_id: str
    company: str | None
    contact_name: str | None
    contact_email: str | None = Field(description="Null: no one to ask.")
    plan: str | None
    mrr_cents: int = Field(description="Monthly revenue lost, in minor units.")
    currency: str = Field(description="ISO 4217 code of mrr_cents.")
    segment: str | None
    cancelled_at: datetime
    source: str = Field(description="How the departure came in: api, csv, ...")
    consent: ConsentOut


class ResponsePage(BaseModel):
    """One page of answered surveys; ``next_cursor`` is null on the last."""

    responses: list[ListedResponse]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )

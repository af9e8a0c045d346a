"""The one description of a departure's input, shared by the API and CSV import."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any

from babel.numbers import list_currencies
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

from survey.i18n import normalize_locale

#: The fields a departure accepts, in the order of the CSV header.
FIELDS = (
    "external_id",
    "company",
    "contact_name",
    "contact_email",
    "plan",
    "mrr_cents",
    "currency",
    "segment",
    "cancelled_at",
    "locale",
    "csm_email",
    "billing_reason",
)

#: What the service notes about a departure it records, beside its fields.
RECORDED = ("source", "created_at", "invited_at", "first_opened_at")

_MAX_MRR_CENTS = 10**13  # a hundred billion a month: anything above is a typo


@cache
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def normalize_email(value: str) -> str:
    """Return a syntactically valid address, normalized; raise ValueError if not.

    In lower case, local part included: one person is one address however it
    was typed (departures, staff logins, erasure all match on it).
    """
    try:
        # allow_smtputf8=False: every mail server on the way can carry it.
        result = validate_email(
            value.strip(), check_deliverability=False, allow_smtputf8=False
        )
    except EmailNotValidError as exc:
        raise ValueError(f"Not a valid email address: {exc}") from None
    return (result.ascii_email or result.normalized).lower()


#: The dates a cancellation can plausibly have (and every database can store).
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def parse_timestamp(value: Any) -> datetime | None:
    """Read an ISO 8601 time (UTC when it has no zone); raise ValueError."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):  # built in Python (demo data, tests)
        parsed = value
    elif not isinstance(value, str):
        raise ValueError(
            "Must be an ISO 8601 date and time, e.g. 2026-11-23T10:00:00Z."
        )
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                "Not an ISO 8601 date and time, e.g. 2026-11-23T10:00:00Z."
            ) from None
    # A time without a zone is taken as UTC, the zone billing systems export in.
    try:
        parsed = (
            parsed.replace(tzinfo=UTC)
            if parsed.tzinfo is None
            else parsed.astimezone(UTC)
        )
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        parsed = datetime.min.replace(tzinfo=UTC)
    if not _EARLIEST <= parsed <= _LATEST:
        raise ValueError(f"Must be between {_EARLIEST.year} and {_LATEST.year - 1}.")
    return parsed


def _timestamp(value: Any) -> datetime | None:
    return parse_timestamp(value.strip()) if isinstance(value, str) else value


#: A query parameter: an ISO 8601 date or time, UTC without a zone.
Timestamp = Annotated[
    datetime | None,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {"type": "string", "examples": ["2026-11-01", "2026-11-01T09:00:00Z"]}
    ),
]


#: Control characters no text may hold; tab and line breaks are allowed.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Text200 = Annotated[str | None, Field(default=None, max_length=200)]
Text80 = Annotated[str | None, Field(default=None, max_length=80)]


class DepartureFacts(BaseModel):
    """A departure as a billing system describes it, with or without a contact
    (Stripe may know no address: the departure is kept, with no one to ask)."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")

    external_id: str = Field(min_length=1, max_length=200)
    company: Text200
    contact_name: Text200
    contact_email: str | None = Field(default=None, max_length=320)
    plan: Text80
    mrr_cents: int | None = Field(default=0, ge=0, le=_MAX_MRR_CENTS)
    currency: str | None = "USD"
    segment: Text80
    cancelled_at: Annotated[
        datetime | None,
        # The schema published for it (the validator reads more than it shows).
        PlainValidator(parse_timestamp, json_schema_input_type=datetime | None),
    ] = None
    locale: str | None = Field(default=None, max_length=35)
    csm_email: str | None = Field(default=None, max_length=320)
    billing_reason: str | None = Field(default=None, max_length=2000)

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        # PostgreSQL refuses text with NUL; the others only garble pages and files.
        if isinstance(value, str) and _CONTROL_CHARACTERS.search(value):
            raise ValueError("Must not contain control characters (such as NUL).")
        return value

    @field_validator("contact_email", "csm_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return normalize_email(value) if value else None

    @field_validator("mrr_cents")
    @classmethod
    def _mrr_cents(cls, value: int | None) -> int:
        return value or 0

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str:
        code = (value or "USD").upper()
        if code not in _currencies():
            raise ValueError(
                f"Unknown currency {value!r}: use an ISO 4217 code like USD."
            )
        return code

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if not value:
            return None
        locale = normalize_locale(value)
        if locale is None:
            raise ValueError(f"Unknown locale {value!r}: use a code like en or fr-CA.")
        return locale


class DepartureIn(DepartureFacts):
    """A departure as the API or a CSV file gives it: always with a contact."""

    contact_email: str = Field(max_length=320)

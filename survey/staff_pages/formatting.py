"""Template helpers of the staff pages: money, how long ago, the vocabulary."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency
from flask import Flask

from survey import clock
from survey.money import major_units
from survey.outbox import ERASED_DOMAIN
from survey.vocabulary import (
    CONSENT_CHANNEL_LABELS,
    CONSENT_STATES,
    DESTINATIONS,
    REVIEW_STATUSES,
    ROLE_LABELS,
    ROOT_CAUSES,
    SOURCE_LABELS,
    TEAMS,
    WINBACK_RECOMMENDATIONS,
    YES_PARTLY_NO,
)
from survey.wording import service as wordings


def money(minor_units: int | None, currency: str = "USD") -> str:
    """Format minor units as money: 129900 EUR is €1,299.00, 5000 JPY is ¥5,000."""
    if minor_units is None:
        return ""
    return format_currency(major_units(minor_units, currency), currency, locale="en_US")


def age(moment: datetime | None) -> str:
    """Return how long ago ``moment`` was, briefly: 3 d, 5 h, 12 min."""
    if moment is None:
        return ""
    return duration(clock.now() - moment)


def duration(span: timedelta | None) -> str:
    """Return a length of time briefly: 3 d, 5 h, 12 min (whole units, down;
    a no-break space keeps the unit with its number)."""
    if span is None:
        return ""
    seconds = max(0, int(span.total_seconds()))
    if seconds >= 86_400:
        return f"{seconds // 86_400}\u00a0d"
    if seconds >= 3_600:
        return f"{seconds // 3_600}\u00a0h"
    return f"{seconds // 60}\u00a0min"


def contact(address: str | None) -> str:
    """A contact's address as staff read it: an erased person's stand-in
    address (``erased-…@erased.invalid``) reads "erased person"."""
    if address and address.endswith(ERASED_DOMAIN):
        return "erased person"
    return address or ""


def language(code: str | None) -> str:
    """A language code as staff read it (English): ``de`` is "German",
    ``fr_CA`` "French (Canada)"; a code Babel does not know stays as it is."""
    if not code:
        return ""
    try:
        name = Locale.parse(code.replace("-", "_")).get_display_name("en")
    except (ValueError, UnknownLocaleError):
        return code
    return name or code


def role(code: str) -> str:
    """A staff role as staff read it, without what it may do: "CSM"."""
    return ROLE_LABELS.get(code, code).split(" (")[0]


@dataclass(frozen=True)
class Problem:
    """One thing a form refused: the element to go to, and what to do."""

    target: str
    label: str
    message: str


def form_problems(form: Any) -> list[Problem]:
    """Return every error of a WTForms form, in field order, each with the id
    of the element it concerns: rows of a list count from 1 ("Action 2: …"),
    and a group of choices is reached through its first choice."""
    problems: list[Problem] = []

    def walk(fields: Any, prefix: str) -> None:
        for field in fields:
            if field.type == "FieldList":
                for number, entry in enumerate(field.entries, start=1):
                    walk(entry.form, f"{prefix}{field.label.text} {number}: ")
                continue
            if field.type == "FormField":
                walk(field.form, prefix)
                continue
            if field.type in HIDDEN:
                continue  # nothing to go to (a CSRF token is checked earlier)
            messages = field.errors if isinstance(field.errors, list) else []
            target = field.id
            if field.type in GROUPS_OF_CHOICES and field.choices:
                target = f"{field.id}-{next(iter(field.iter_choices()))[0]}"
            label = f"{prefix}{field.label.text}"
            problems.extend(Problem(target, label, message) for message in messages)

    walk(form, "")
    return problems


def field_problems(
    problems: Mapping[str, list[str]], labels: Mapping[str, str]
) -> list[Problem]:
    """Return the problems of a hand-written form (field name -> messages),
    each leading to the element of that name; one without a field of its own
    (a damaged page link) leads to its message."""
    return [
        Problem(name, labels[name], message)
        if name in labels
        else Problem(f"{name}-errors", "This page", message)
        for name, messages in problems.items()
        for message in messages
    ]


#: Fields with no element a person can go to.
HIDDEN = frozenset({"HiddenField", "CSRFTokenField"})

#: Fields drawn as one input per choice, whose ids are ``<field>-<value>``.
GROUPS_OF_CHOICES = frozenset({"RadioField", "SelectMultipleField"})


class KnownReasons(Mapping[str, str]):
    """Every reason there is, the team's own too, as staff read them
    (English): read when a template first looks, so a page that never does
    (an error page while the database is away) never asks the database."""

    def __getitem__(self, code: str) -> str:
        return wordings.known_reasons()[code]

    def __iter__(self) -> Iterator[str]:
        return iter(wordings.known_reasons())

    def __len__(self) -> int:
        return len(wordings.known_reasons())


def init_app(app: Flask) -> None:
    """Register the template helpers of the staff pages."""
    app.jinja_env.filters["money"] = money
    app.jinja_env.filters["age"] = age
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.filters["contact"] = contact
    app.jinja_env.filters["language"] = language
    app.jinja_env.filters["role"] = role
    app.jinja_env.globals["REASONS"] = KnownReasons()
    app.jinja_env.globals["form_problems"] = form_problems
    app.jinja_env.globals["field_problems"] = field_problems
    app.jinja_env.globals.update(
        REVIEW_STATUSES=REVIEW_STATUSES,
        ROLE_LABELS=ROLE_LABELS,
        SOURCE_LABELS=SOURCE_LABELS,
        CONSENT_STATES=CONSENT_STATES,
        CONSENT_CHANNEL_LABELS=CONSENT_CHANNEL_LABELS,
        ROOT_CAUSES=ROOT_CAUSES,
        TEAMS=TEAMS,
        DESTINATIONS=DESTINATIONS,
        YES_PARTLY_NO=YES_PARTLY_NO,
        WINBACK_RECOMMENDATIONS=WINBACK_RECOMMENDATIONS,
    )

"""Absolute links to the public pages, as put in emails and API answers."""

from __future__ import annotations

from typing import Any

from flask import current_app

from survey import tokens


def external_url(endpoint: str, **values: Any) -> str:
    """Return ``SURVEY_BASE_URL`` followed by the path of ``endpoint``.

    Works outside a request (worker, command line), unlike ``url_for``.
    """
    adapter = current_app.url_map.bind("localhost")
    path = adapter.build(endpoint, values)
    return str(current_app.config["BASE_URL"]).rstrip("/") + path


def survey_url(public_id: str, **query: str) -> str:
    """Return a departure's signed survey link."""
    token = tokens.make_token(tokens.SURVEY, public_id)
    return external_url("public.survey", token=token, **query)


def withdraw_url(public_id: str) -> str:
    """Return a departure's signed "don't contact me" link."""
    token = tokens.make_token(tokens.WITHDRAW_CONSENT, public_id)
    return external_url("public.withdraw", token=token)


def withdraw_url_prefix() -> str:
    """Return what comes before the token in a "don't contact me" link: the
    win-back list joins it to each contact's stored token in the database."""
    placeholder = "-"
    return external_url("public.withdraw", token=placeholder).removesuffix(placeholder)

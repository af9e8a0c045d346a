"""The JSON API under /api/v1: token auth with scopes, JSON errors everywhere."""

from __future__ import annotations

from flask import Blueprint
from flask import Response as HttpResponse

from survey.errors import is_api_request

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.after_app_request
def _not_stored(response: HttpResponse) -> HttpResponse:
    # Every API answer, errors and unknown paths under /api too: they carry
    # customers' data, or say whether a token works.
    if is_api_request():
        response.headers["Cache-Control"] = "no-store"
    return response


from survey.api import (  # noqa: E402, F401  (routes)
    contacts,
    departures,
    insights,
    openapi,
    responses,
    stripe,
    winback,
)

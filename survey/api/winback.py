"""GET /api/v1/winback/contacts (JSON pages) and /contacts.csv (the whole list)."""

from __future__ import annotations

from flask import Response, g, request
from werkzeug.wrappers import Response as WerkzeugResponse

from survey.api import bp
from survey.api.auth import require_scope
from survey.api.paging import ExportPageQuery, page_from_args
from survey.winback import service as winback


@bp.get("/winback/contacts")
@require_scope("winback:read")
def winback_contacts() -> WerkzeugResponse:
    """One page of consenting contacts; ``next_cursor`` is null on the last."""
    wanted = winback.filter_from_args(request.args)
    paging = page_from_args(ExportPageQuery)
    return winback.json_download(
        wanted, paging.cursor, paging.limit, token_name=g.api_token.name
    )


@bp.get("/winback/contacts.csv")
@require_scope("winback:read")
def winback_contacts_csv() -> Response:
    """The whole list as CSV, streamed."""
    wanted = winback.filter_from_args(request.args)
    return winback.csv_download(wanted, actor_id=None, token_name=g.api_token.name)

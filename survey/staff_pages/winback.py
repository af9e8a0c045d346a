"""The win-back list in the staff UI (roles marketing and admin), with CSV."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask import Response as HttpResponse
from flask_login import current_user

from survey import db
from survey.errors import InvalidInput
from survey.staff import access
from survey.staff_pages.staff import private_pages
from survey.winback import service as winback

bp = Blueprint("winback", __name__, url_prefix="/winback")
private_pages(bp)

PAGE_SIZE = 100


@bp.get("", endpoint="contacts")
@access.requires(access.WINBACK)
def contacts() -> tuple[str, int]:
    """One page of consenting contacts, the filters, and the CSV link."""
    problems: dict[str, list[str]] = {}
    try:
        wanted = winback.filter_from_args(request.args)
    except InvalidInput as invalid:
        wanted, problems = winback.WinbackFilter(), invalid.fields
    session = db.session()
    cursor = request.args.get("cursor") if not problems else None
    try:
        page = winback.page(session, wanted, cursor, PAGE_SIZE)
    except InvalidInput as invalid:
        problems |= invalid.fields
        page = winback.page(session, wanted, None, PAGE_SIZE)
    winback.audit_export(
        session,
        actor_id=current_user.id,
        token_name=None,
        wanted=wanted,
        rows=len(page.contacts),
        finished=True,
        format="page",
    )
    query = {k: v for k, v in request.args.items() if k != "cursor" and v}
    return (
        render_template(
            "winback/contacts.html",
            page=page,
            args=request.args,
            query=query,
            problems=problems,
        ),
        422 if problems else 200,
    )


@bp.get("/contacts.csv", endpoint="csv")
@access.requires(access.WINBACK)
def contacts_csv() -> HttpResponse:
    """The whole filtered list as a CSV download (streamed, audited), with
    labels and amounts for the people who open it in a spreadsheet."""
    wanted = winback.filter_from_args(request.args)
    return winback.csv_download(
        wanted, actor_id=current_user.id, token_name=None, people=True
    )

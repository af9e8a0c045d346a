"""The win-back list in the staff UI (roles marketing and admin), with CSV."""

from __future__ import annotations

from collections.abc import Mapping

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
    return _page(request.args)


def _page(args: Mapping[str, str]) -> tuple[str, int]:
    """Draw the list with the filters of ``args`` that are valid, and say
    why the others were dropped (then with 422)."""
    wanted, query, problems = _valid_filters(args)
    session = db.session()
    cursor = args.get("cursor") if not problems else None
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
    return (
        render_template(
            "winback/contacts.html",
            page=page,
            args=args,
            query=query,
            problems=problems,
        ),
        422 if problems else 200,
    )


def _valid_filters(
    args: Mapping[str, str],
) -> tuple[winback.WinbackFilter, dict[str, str], dict[str, list[str]]]:
    """Read the filters keeping the valid ones, as the queue does: a refused
    one is dropped (and explained), the rest still apply. Return them, the
    query string that gives them (for the CSV and page links), and the
    problems per field."""
    query = {k: v for k, v in args.items() if k != "cursor" and v}
    problems: dict[str, list[str]] = {}
    while True:
        try:
            return winback.filter_from_args(query), query, problems
        except InvalidInput as invalid:
            problems |= invalid.fields
            kept = {k: v for k, v in query.items() if k not in invalid.fields}
            if kept == query:  # a problem no one parameter holds: drop them all
                return winback.WinbackFilter(), {}, problems
            query = kept


@bp.get("/contacts.csv", endpoint="csv")
@access.requires(access.WINBACK)
def contacts_csv() -> HttpResponse | tuple[str, int]:
    """The whole filtered list as a CSV download (streamed, audited), with
    labels and amounts for the people who open it in a spreadsheet. Filters
    that do not hold (a link typed by hand) get the list's page instead,
    saying which and why, as the page itself does."""
    try:
        wanted = winback.filter_from_args(request.args)
    except InvalidInput:
        return _page({k: v for k, v in request.args.items() if k != "cursor"})
    return winback.csv_download(
        wanted, actor_id=current_user.id, token_name=None, people=True
    )

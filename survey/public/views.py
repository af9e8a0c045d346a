"""The survey pages a departing customer sees, reached only through signed links."""

from __future__ import annotations

import functools
import logging
from typing import Any

from flask import (
    Blueprint,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import (
    Response as HttpResponse,
)
from markupsafe import Markup
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import db, tokens
from survey.consent import (
    WORDING_VERSION,
    consent_wording,
    current_consent,
    record_consent,
    withdrawal_wording,
)
from survey.departures.models import Departure
from survey.public import service
from survey.public.forms import DetailsForm, PublicForm, ReasonForm
from survey.vocabulary import DESTINATIONS, FOLLOW_UPS, REASONS

log = logging.getLogger(__name__)

bp = Blueprint("public", __name__)


@bp.after_request
def _private_page(response: HttpResponse) -> HttpResponse:
    # The URL is the credential: keep it out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.errorhandler(tokens.TokenInvalid)
def _invalid_link(_error: tokens.TokenInvalid) -> tuple[str, int]:
    return render_template("public/link_invalid.html"), 404


@bp.errorhandler(service.LinkGone)
def _erased(_error: service.LinkGone) -> tuple[str, int]:
    return render_template("public/link_gone.html"), 410


@bp.errorhandler(tokens.TokenExpired)
def _expired_link(_error: tokens.TokenExpired) -> tuple[str, int]:
    return render_template("public/link_expired.html", form=PublicForm()), 410


def _load(token: str, purpose: str = tokens.SURVEY) -> Departure:
    departure = service.departure_from_token(db.session(), purpose, token)
    g.locale = departure.locale
    return departure


def _render(template: str, departure: Departure, **context: Any) -> str:
    return render_template(
        template,
        departure=departure,
        reasons=REASONS,
        destinations=DESTINATIONS,
        **context,
    )


@functools.lru_cache(maxsize=512)
def _reason_choices(locale: str | None, selected: str | None) -> Markup:
    """Render the ten answers of page 1 once per language and selection.

    They make up most of the busiest page, and they change only with a deploy.
    """
    # Jinja's own output, already escaped by its autoescaping.
    return Markup(  # noqa: S704
        render_template(
            "public/_reason_choices.html",
            reasons=[(code, str(label)) for code, label in REASONS.items()],
            selected=selected,
        )
    )


@bp.route("/s/<token>", methods=["GET", "POST"])
def survey(token: str) -> str | WerkzeugResponse:
    """Page 1: the one question. A GET records only the first-opened time.

    The busiest page: it reads everything it shows in one query and builds no
    ORM objects (see ``service.survey_state``).
    """
    public_id = tokens.load_token(tokens.SURVEY, token)
    if request.method == "POST":
        form = ReasonForm()
        valid = form.validate_on_submit()  # before touching the database: a
        # POST's transaction holds SQLite's write lock, so keep it short
    session = db.session()
    state = service.survey_state(session, public_id)
    g.locale = state.locale
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        if valid:
            if form.is_bot():
                log.info("honeypot filled on %s; answer dropped", state.public_id)
                return redirect(url_for(".thanks", token=token), 303)
            service.submit_reason(
                session, state.departure_id, form.reason.data, form.reason_other.data
            )
            session.commit()
            return redirect(url_for(".details", token=token), 303)
        selected, other, errors = form.reason.data, form.reason_other.data, form.errors
    else:
        if state.first_opened_at is None:
            session.commit()  # end the read; stamp in a short writing transaction
            db.begin_write(session)
            service.mark_opened(session, state.departure_id)
            session.commit()
        preselect = request.args.get("reason")
        selected = preselect if preselect in REASONS else state.reason
        other = state.reason_other
    return render_template(
        "public/reason.html",
        state=state,
        reason_choices=_reason_choices(
            state.locale, selected if selected in REASONS else None
        ),
        reason_other=other or "",
        errors=errors,
        token=token,
    )


@bp.route("/s/<token>/more", methods=["GET", "POST"])
def details(token: str) -> str | WerkzeugResponse:
    """Page 2: optional follow-ups and the win-back consent."""
    session = db.session()
    departure = _load(token)
    response = service.find_response(session, departure)
    if response is None:
        return redirect(url_for(".survey", token=token), 303)
    consent = current_consent(session, departure.id)
    form = DetailsForm(
        obj=response,
        # An answer to the follow-up of an earlier main reason is not shown
        # under this reason's question.
        follow_up=response.follow_up_answer
        if response.follow_up_reason == response.reason
        else None,
        winback_consent=consent.granted,
    )
    wording = consent_wording()
    if form.validate_on_submit():
        if form.is_bot():
            return redirect(url_for(".thanks", token=token), 303)
        service.submit_details(
            session,
            departure,
            response,
            form.answers(),
            winback_consent=form.winback_consent.data,
            consent_wording=wording,
        )
        session.commit()
        return redirect(url_for(".thanks", token=token), 303)
    return _render(
        "public/details.html",
        departure,
        form=form,
        response=response,
        follow_up_question=FOLLOW_UPS.get(response.reason),
        consent_wording=wording,
        consent_version=WORDING_VERSION,
        token=token,
    )


@bp.route("/s/<token>/thanks")
def thanks(token: str) -> str:
    """Thank the customer and show what we kept, with a way to change it."""
    session = db.session()
    departure = _load(token)
    return _render(
        "public/thanks.html",
        departure,
        response=service.find_response(session, departure),
        consent=current_consent(session, departure.id),
        token=token,
    )


def _public_id_of_any_link(token: str) -> str | None:
    """Return whose link ``token`` is, expired or not (survey or withdrawal)."""
    for purpose in (tokens.SURVEY, tokens.WITHDRAW_CONSENT):
        try:
            return tokens.load_token(purpose, token)
        except tokens.TokenExpired as expired:
            return expired.public_id
        except tokens.TokenInvalid:
            continue
    return None


@bp.route("/s/<token>/renew", methods=["POST"])
def renew(token: str) -> str:
    """Send a fresh link for an expired one; the answer never tells what happened."""
    form = PublicForm()
    if form.validate_on_submit() and not form.is_bot():
        public_id = _public_id_of_any_link(token)
        if public_id is not None:
            session = db.session()
            service.request_fresh_link(session, public_id)
            session.commit()
    return render_template("public/link_renewed.html")


@bp.route("/w/<token>", methods=["GET", "POST"])
def withdraw(token: str) -> str:
    """Withdraw win-back consent: GET asks for confirmation, POST records it."""
    session = db.session()
    departure = _load(token, tokens.WITHDRAW_CONSENT)
    form = PublicForm()
    wording = withdrawal_wording()
    done = False
    if form.validate_on_submit() and not form.is_bot():
        record_consent(
            session,
            departure,
            granted=False,
            channel="withdrawal_link",
            wording=wording,
        )
        session.commit()
        done = True
    return _render(
        "public/withdraw.html",
        departure,
        form=form,
        wording=wording,
        done=done,
        consent=current_consent(session, departure.id),
    )

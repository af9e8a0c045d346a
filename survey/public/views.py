"""The survey pages a departing customer sees, reached only through signed links."""

from __future__ import annotations

import functools
import logging
import secrets
from datetime import date
from typing import Any

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import (
    Response as HttpResponse,
)
from flask.blueprints import BlueprintSetupState
from markupsafe import escape
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import db, i18n, tokens
from survey.answers import service as answers
from survey.branding import service as branding
from survey.consent import current_consent, record_consent, withdrawal_wording
from survey.departures.models import Departure
from survey.departures.service import Erased, Reactivated, find_by_public_id
from survey.public import service
from survey.public.forms import DetailsForm, PublicForm, ReasonForm
from survey.vocabulary import DESTINATIONS
from survey.wording import service as wordings
from survey.wording.service import Wording

log = logging.getLogger(__name__)

bp = Blueprint("public", __name__)


@bp.after_request
def _private_page(response: HttpResponse) -> HttpResponse:
    # The URL is the credential: keep it out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _asked(name: str) -> str | None:
    """Return the value of ``name`` in the query, if the address has one.

    Most survey addresses have no query: Werkzeug would parse the empty one
    and raise and catch a KeyError for each name asked (3.5 % of a survey
    GET, interleaved A/B in process, 2026-12-04).
    """
    return request.args.get(name) if request.query_string else None


@bp.before_request
def _language_chosen_on_the_page() -> None:
    """A language chosen with the page's switch (``?lang=``) is spoken; the
    page's links and forms keep it (the customer's pages set no cookie)."""
    if (chosen := _asked("lang")) in i18n.shipped_languages():
        g.chosen_locale = chosen


@bp.url_value_preprocessor
def _reader_known_by_the_address(_endpoint: str | None, _values: Any) -> None:
    """An error page drawn before the view has read the departure (a refused
    form token, a body too large, a failure) asks for its language then
    (``errors``); pages that draw none read nothing more. Left before any
    ``before_request`` guard can refuse the request."""
    g.find_locale = _departures_locale


#: The first part of each of our addresses that goes on with a link's token.
_LINK_AREAS = frozenset({"s", "w"})


@bp.app_url_value_preprocessor
def _reader_of_an_address_no_page_takes(endpoint: str | None, _values: Any) -> None:
    """An address under a link that none of our pages takes (a GET on
    ``/renew``, a link's tail cut short) is refused before this blueprint's
    own hooks: its error page (405, 404) still speaks the language of the
    customer the link names."""
    if endpoint is not None or request.routing_exception is None:
        return
    parts = request.path.split("/", 3)  # "", area, token, the rest
    if len(parts) > 2 and parts[1] in _LINK_AREAS and parts[2]:
        g.find_locale = functools.partial(_link_locale, parts[2])


def _departures_locale() -> str:
    """Return the locale to speak to the customer in whose link the address
    holds (expired or not), read now, in a read of its own; the browser's if
    none."""
    return _link_locale((request.view_args or {}).get("token"))


def _link_locale(token: str | None) -> str:
    """Return the locale of the customer ``token`` is the link of (expired or
    not), or the browser's."""
    public_id = _public_id_of_any_link(token) if token else None
    locale = None
    if public_id is not None:
        with db.reading_session() as reader:
            departure = find_by_public_id(reader, public_id)
            locale = departure.locale if departure else None
    return i18n.customer_locale(locale)


@bp.url_defaults
def _keep_the_chosen_language(_endpoint: str, values: dict[str, Any]) -> None:
    if "lang" not in values and (chosen := g.get("chosen_locale")):
        values["lang"] = chosen


@bp.context_processor
def _languages() -> dict[str, Any]:
    return {"languages": i18n.language_names()}


@bp.errorhandler(tokens.TokenInvalid)
def _invalid_link(_error: tokens.TokenInvalid) -> tuple[str, int]:
    g.locale = i18n.customer_locale(None)  # no departure: the browser's language
    return render_template("public/link_invalid.html"), 404


@bp.errorhandler(Erased)
def _erased(_error: Erased) -> tuple[str, int]:
    g.locale = g.get("locale") or _departures_locale()  # their language is kept
    return render_template("public/link_gone.html"), 410


@bp.errorhandler(Reactivated)
def _stayed(error: Reactivated) -> str:
    g.locale = i18n.customer_locale(error.locale)
    return render_template("public/stayed.html")


@bp.errorhandler(tokens.TokenExpired)
def _expired_link(error: tokens.TokenExpired) -> tuple[str, int]:
    departure = find_by_public_id(db.session(), error.public_id)
    if departure is not None and departure.erased_at is not None:
        return _erased(Erased())  # no address left to send a link to
    g.locale = i18n.customer_locale(departure.locale if departure else None)
    form = PublicForm.for_link(error.public_id)
    return render_template("public/link_expired.html", form=form), 410


def _load(
    token: str, purpose: str = tokens.SURVEY, *, writing: bool = False
) -> Departure:
    departure = service.departure_from_token(
        db.session(), purpose, token, writing=writing
    )
    g.locale = i18n.customer_locale(departure.locale)
    return departure


def _render(
    template: str, departure: Departure, wording: Wording, **context: Any
) -> str:
    return render_template(
        template,
        departure=departure,
        wording=wording,
        destinations=DESTINATIONS,
        **context,
    )


#: Where each app keeps its rendered page 1s (see ``_shared_page_one``).
_PAGE_ONE = "survey.public.page_one"


@bp.record_once
def _keep_page_one(state: BlueprintSetupState) -> None:
    state.app.extensions[_PAGE_ONE] = functools.lru_cache(maxsize=1024)(
        _shared_page_one
    )


#: Stand-ins for a link's own values in a page rendered once for many links.
_LINK_SLOT = f"link{secrets.token_hex(8)}"
_FORM_SLOT = f"form{secrets.token_hex(8)}"


def _render_page_one(locale: str | None, wording: Wording, **context: Any) -> str:
    """Render page 1, or the confirmation of a reason chosen in the email."""
    with i18n.force_locale(locale):
        return render_template(
            "public/confirm.html" if context.get("chosen") else "public/reason.html",
            wording=wording,
            reasons=wording.reasons(),
            **context,
        )


def _shared_page_one(
    locale: str | None,
    wording: Wording,
    brand_revision: str,
    picked: str | None,
    selected: str | None,
    answered_on: date | None,
    consent_state: str | None,
    chosen: str | None = None,
) -> str:
    """Render page 1 for a language and answers, with slots for the link.

    Everyone opening the survey in one language sees the same page but for
    their link and its form token; rendering it anew each time made survey
    GETs 45 % slower (``make bench``, 2026-12-03), so each app keeps these
    (``_PAGE_ONE``). Pages showing what a customer wrote are never kept: no
    one's words stay in memory.

    ``picked`` is the language picked with the page's switch (``?lang=``),
    which the page's form and links keep (``_keep_the_chosen_language``
    reads it from ``g.chosen_locale`` as the page is drawn): a French page
    drawn for a French customer has none, so it is kept apart from the
    one drawn for a customer who picked French.
    """
    return _render_page_one(
        locale,
        wording,
        selected=selected,
        answered_on=answered_on,
        consent_state=consent_state,
        chosen=chosen,
        reason_other="",
        errors={},
        token=_LINK_SLOT,
        form_token=_FORM_SLOT,
    )


def _page_one(
    token: str,
    public_id: str,
    state: service.SurveyState,
    selected: str | None,
    reason_other: str | None,
    errors: dict[str, list[str]],
    chosen: str | None = None,
) -> str:
    """Return page 1 for this link (or, with ``chosen``, the confirmation of a
    reason chosen in the email): the app's shared page, with the link's values
    in its slots, unless it shows errors or the customer's own words.
    """
    wording = wordings.current()
    answers = {
        "selected": selected if wording.knows(selected) else None,
        "answered_on": state.answered_at.date() if state.answered_at else None,
        "consent_state": state.consent_state,
        "chosen": chosen,
    }
    form_token = tokens.form_token(public_id)
    if errors or reason_other:  # a refusal, or the customer's own words
        return _render_page_one(
            i18n.customer_locale(state.locale),
            wording,
            **answers,
            reason_other=reason_other or "",
            errors=errors,
            token=token,
            form_token=form_token,
        )
    # Kept per wording version and brand (a change shows on the next page),
    # and per language picked on the page (its links keep it).
    shared: str = current_app.extensions[_PAGE_ONE](
        i18n.customer_locale(state.locale),
        wording,
        branding.current().revision,
        g.get("chosen_locale"),
        **answers,
    )
    # load_token accepted the token, so it is URL-safe base64; escaped anyway.
    return shared.replace(_LINK_SLOT, str(escape(token))).replace(
        _FORM_SLOT, form_token
    )


@bp.route("/s/<token>", methods=["GET", "POST"])
def survey(token: str) -> str | WerkzeugResponse:
    """Page 1: the one question. A GET records only the first-opened time;
    with ``?reason=`` (a reason link in the email) it asks to confirm it.

    The busiest page: one query (``service.survey_state``), no ORM objects,
    and a page rendered once for many links (``_shared_page_one``). A POST
    opens no request session: its one write is ``answers.record_reason``.
    """
    public_id = tokens.load_token(tokens.SURVEY, token)
    if request.method == "GET":
        state = service.survey_state(db.engine(), public_id)
        if not state.opened:
            departure_id = state.departure_id
            db.write_together(
                lambda connection: service.mark_opened(connection, departure_id)
            )
        # A reason clicked in the email is only proposed: mail scanners
        # follow links, so the customer's POST from the page records it.
        chosen = _asked("reason")
        if chosen in wordings.current().shown:
            return _page_one(token, public_id, state, state.reason, None, {}, chosen)
        return _page_one(token, public_id, state, state.reason, state.reason_other, {})

    form = ReasonForm.for_link(public_id).offering(wordings.current())
    if not form.validate_on_submit():
        state = service.survey_state(db.engine(), public_id)
        return _page_one(
            token,
            public_id,
            state,
            form.reason.data,
            form.reason_other.data,
            form.errors,
        )
    if form.is_bot():
        log.info("honeypot filled on %s; answer dropped", public_id)
        return redirect(url_for(".thanks", token=token), 303)
    reason, other = form.reason.data, form.reason_other.data
    # The email reason's confirmation sends no words (confirm.html): those
    # saved stay. Page 1 always sends its field: cleared there, they go.
    keep = request.form.get("own_words") == "kept" and not form.reason_other.raw_data
    version = wordings.current().version
    # The page's language, but for the departure's (read with the answer).
    chosen, browser = g.get("chosen_locale"), i18n.customer_locale(None)
    # Committed when write_together returns (on SQLite perhaps in one
    # transaction with other threads' answers: see survey.db.fastpath).
    # An erased departure gets nothing written; the next page says so.
    db.write_together(
        lambda connection: answers.record_reason(
            connection,
            public_id,
            reason,
            other,
            version,
            keep_own_words=keep,
            chosen_locale=chosen,
            browser_locale=browser,
        )
    )
    return redirect(url_for(".details", token=token), 303)


@bp.route("/s/<token>/more", methods=["GET", "POST"])
def details(token: str) -> str | WerkzeugResponse:
    """Page 2: optional follow-ups and the win-back consent."""
    session = db.session()
    # A POST locks the departure first: the answers are read, and saved, as an
    # erasure or another tab left them (see for_writing).
    departure = _load(token, writing=request.method == "POST")
    response = answers.find_response(session, departure)
    if response is None:
        return redirect(url_for(".survey", token=token), 303)
    consent = current_consent(session, departure.id)
    wording = wordings.current()
    form = DetailsForm.for_link(
        departure.public_id,
        obj=response,
        # An answer to the follow-up of an earlier main reason is not shown
        # under this reason's question.
        follow_up=response.follow_up_answer
        if response.follow_up_reason == response.reason
        else None,
        winback_consent=consent.granted,
        consent_shown="y" if consent.granted else "",
        follow_up_for=answers.follow_up_reason(response.reason, wording) or "",
    ).offering(wording, leaving_out=response.reason)
    if form.validate_on_submit():
        if form.is_bot():
            return redirect(url_for(".thanks", token=token), 303)
        answers.submit_details(
            session,
            departure,
            response,
            form.answers(),
            follow_up_for=form.follow_up_for.data,
            winback_consent=form.consent_choice(),
            wording=wording,
            locale=i18n.customer_locale(departure.locale),
        )
        session.commit()
        return redirect(url_for(".thanks", token=token), 303)
    return _render(
        "public/details.html",
        departure,
        wording,
        form=form,
        response=response,
        follow_up_question=wording.follow_up(form.follow_up_for.data or None),
        token=token,
    )


@bp.route("/s/<token>/thanks")
def thanks(token: str) -> str:
    """Thank the customer and show what we kept, with a way to change it."""
    session = db.session()
    departure = _load(token)
    response = answers.find_response(session, departure)
    return _render(
        "public/thanks.html",
        departure,
        # What they answered, in the words they answered it in.
        wordings.version(session, response.survey_version_id if response else None),
        response=response,
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
    public_id = _public_id_of_any_link(token)
    if public_id is None:  # a made-up link: nothing to do, and no telling
        g.locale = i18n.customer_locale(None)
        return render_template("public/link_renewed.html")
    session = db.session()
    departure = find_by_public_id(session, public_id)
    # In the language the expired link's page spoke.
    g.locale = i18n.customer_locale(departure.locale if departure else None)
    form = PublicForm.for_link(public_id)
    if form.validate_on_submit() and not form.is_bot():
        service.request_fresh_link(session, public_id)
        session.commit()
    return render_template("public/link_renewed.html")


@bp.route("/w/<token>", methods=["GET", "POST"])
def withdraw(token: str) -> str:
    """Withdraw win-back consent: GET asks for confirmation, POST records it.

    A mail program's one-click unsubscribe (RFC 8058: ``List-Unsubscribe=
    One-Click``, from the email's header) needs no form token: it comes from
    no page of ours, and the signed link is the credential either way.
    """
    session = db.session()
    departure = _load(token, tokens.WITHDRAW_CONSENT)
    form = PublicForm.for_link(departure.public_id)
    withdrawal = withdrawal_wording()
    done = False
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    if one_click or (form.validate_on_submit() and not form.is_bot()):
        record_consent(
            session,
            departure,
            granted=False,
            channel="withdrawal_link",
            wording=withdrawal,
        )
        session.commit()
        done = True
    return _render(
        "public/withdraw.html",
        departure,
        wordings.current(),
        form=form,
        withdrawal=withdrawal,
        done=done,
        consent=current_consent(session, departure.id),
    )

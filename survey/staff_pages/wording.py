"""Admins change the survey's wording: the reasons, and the texts of each
language, previewed as the customer will see them; each save is a version."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import audit, db, i18n, outbox
from survey.branding import service as branding
from survey.departures.service import question_context, survey_email_context
from survey.errors import InvalidInput
from survey.public.forms import DetailsForm
from survey.security import CONTENT_SECURITY_POLICY
from survey.staff import access
from survey.staff.models import StaffUser
from survey.staff_pages import formatting
from survey.staff_pages.staff import private_pages
from survey.staff_pages.wording_forms import ReasonsForm, texts_form
from survey.vocabulary import DESTINATIONS, FOLLOW_UP_TEXTS, REASONS
from survey.wording import service as wordings
from survey.wording.models import SurveyVersion
from survey.wording.service import MAX_CUSTOM_REASONS, SavedMeanwhile, Wording

bp = Blueprint("wording_admin", __name__, url_prefix="/admin/survey")
private_pages(bp)


@bp.context_processor
def _tabs() -> dict[str, Any]:
    return {"survey_languages": i18n.language_names()}


def _newest() -> Wording:
    """The newest version, read now (not the few seconds old one)."""
    wordings.forget(current_app)
    return wordings.current()


def _save(
    session: Session, definition: dict[str, Any], based_on: int, summary: str
) -> None:
    """Save a version and say so, or that someone saved one meanwhile."""
    try:
        saved = wordings.save_version(
            session,
            definition,
            based_on=based_on,
            summary=summary,
            actor_id=current_user.id,
        )
        if saved is not None:
            audit.record(
                session,
                "survey.version_saved",
                actor_id=current_user.id,
                version=saved.id,
                summary=summary,
            )
        session.commit()
    except IntegrityError:  # the unique based_on: a save at the same moment
        session.rollback()
    except SavedMeanwhile:
        pass
    else:
        wordings.forget(current_app)
        flash(
            f"Saved as version {saved.id}: customers see it from now on."
            if saved
            else "Nothing changed.",
            "success",
        )
        return
    flash(
        "Someone saved a new version of the survey while you were editing; "
        "here it is now. Make your change again.",
        "error",
    )


def _refused(form: Any, invalid: InvalidInput) -> None:
    """Show what the service refused above the form."""
    form.form_errors = [
        message for messages in invalid.fields.values() for message in messages
    ] or [str(invalid)]


def _preview_or_save(
    session: Session,
    form: Any,
    definition: dict[str, Any],
    language: str,
    summary: str,
) -> dict[str, Any] | None:
    """Return the preview the form asked for in ``language``, or save the
    definition as a version and return None (the page then reloads)."""
    try:
        if request.form.get("action") == "preview":
            wording = Wording(-1, wordings.check_definition(definition))
            return _preview(wording, language)
        _save(session, definition, _based_on(form), summary)
    except InvalidInput as invalid:
        _refused(form, invalid)
        return {}  # the page again, with what was refused
    return None


def _based_on(form: Any) -> int:
    try:
        return int(form.based_on.data or 0)
    except ValueError:
        return -1  # not a version: refused as saved meanwhile


#: The link a preview's page and email stand in with.
PREVIEW_LINK = "your-personal-link"


@contextmanager
def _drawn_in(language: str) -> Iterator[None]:
    """Draw a customer's page in ``language`` (its text and its ``lang``
    attribute) inside this staff request."""
    outer = g.get("locale")
    g.locale = language
    try:
        with i18n.force_locale(language):
            yield
    finally:
        g.locale = outer


def _page_one(wording: Wording, language: str) -> str:
    """The customer's page 1 (its own template) as a customer reading
    ``language`` would see it under ``wording``: no answers, a stand-in
    link, no form token (nothing is meant to be sent from it)."""
    with _drawn_in(language):
        return render_template(
            "public/reason.html",
            wording=wording,
            reasons=wording.reasons(),
            errors={},
            token=PREVIEW_LINK,
            form_token="",
        )


def _page_two(wording: Wording, language: str) -> tuple[str | None, str]:
    """The customer's page 2 (its own template) as a customer reading
    ``language`` would see it under ``wording`` after choosing the first
    shown reason that has a follow-up question (else the first shown one):
    that reason, and the page, with a stand-in link and nothing filled in."""
    with_question = [c for c in wording.shown if wording.follow_up(c, language)]
    reason = next(iter(with_question or wording.shown), None)
    with _drawn_in(language):
        form = DetailsForm.for_link(
            PREVIEW_LINK, formdata=None, follow_up_for=reason or ""
        ).offering(wording, leaving_out=reason or "")
        return reason, render_template(
            "public/details.html",
            wording=wording,
            destinations=DESTINATIONS,
            form=form,
            follow_up_question=wording.follow_up(reason, language),
            token=PREVIEW_LINK,
        )


def _preview(wording: Wording, language: str) -> dict[str, Any]:
    """The survey's two pages and the invitation, as a customer reading
    ``language`` would see them under ``wording``."""
    base = str(current_app.config["BASE_URL"]).rstrip("/")
    survey_url = f"{base}/s/{PREVIEW_LINK}"
    subject, text, html = outbox.render_email(
        "invitation",
        language,
        departure=SimpleNamespace(contact_name="Alex"),
        **survey_email_context(
            branding.current(), survey_url, f"{base}/w/{PREVIEW_LINK}"
        ),
        **question_context(survey_url, wording),
    )
    page_two_reason, page_two_html = _page_two(wording, language)
    return {
        "language": language,
        "wording": wording,
        "page_html": _page_one(wording, language),
        "page_two_reason": page_two_reason,
        "page_two_html": page_two_html,
        "email_subject": subject,
        "email_text": text,
        "email_html": html,
    }


#: A preview's page lets the email draw its style attributes (mail programs
#: read no stylesheets, so emails carry them inline); nothing else inline.
_PREVIEW_POLICY = f"{CONTENT_SECURITY_POLICY}; style-src-attr 'unsafe-inline'"


def _page(
    template: str, preview: dict[str, Any] | None, **context: Any
) -> WerkzeugResponse:
    """Render a wording page, with the preview the form asked for, if any."""
    response = make_response(render_template(template, preview=preview, **context))
    if preview:
        response.headers["Content-Security-Policy"] = _PREVIEW_POLICY
    return response


# --- the reasons --------------------------------------------------------------


def _reason_rows(wording: Wording) -> list[dict[str, Any]]:
    """The form's rows: shown reasons in order, then the hidden ones, then
    room for new reasons of the team's own."""
    hidden = [code for code in [*REASONS, *wording.custom] if code not in wording.shown]
    rows = []
    for position, code in enumerate([*wording.shown, *hidden], start=1):
        custom = wording.custom.get(code)
        rows.append(
            {
                "code": code,
                "shown": code in wording.shown,
                "position": position if code in wording.shown else None,
                "label": wording.override("en", f"label.{code}") if custom else "",
                "root_cause": (custom or {}).get("root_cause") or "",
            }
        )
    rows += [{"code": ""}] * (MAX_CUSTOM_REASONS - len(wording.custom))
    return rows


def _reasons_definition(
    wording: Wording, form: ReasonsForm
) -> tuple[dict[str, Any], list[str]]:
    """Read the rows into a definition; return it and what it changes."""
    placed: list[tuple[int, bool, int, str]] = []
    custom: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    for index, row in enumerate(form.rows.entries):
        fields = row.form
        code = (fields.code.data or fields.new_code.data or "").strip()
        if not code or (code not in REASONS and fields.remove.data):
            continue
        if not fields.code.data and (code in REASONS or code in wording.custom):
            raise InvalidInput(
                f"“{code}” is a built-in reason's code already."
                if code in REASONS
                else f"“{code}” is one of your reasons already.",
                {},
            )
        if code not in REASONS:
            custom[code] = {"root_cause": fields.root_cause.data or None}
            labels[code] = (fields.label.data or "").strip()
        if fields.shown.data or not fields.code.data:  # a new reason is shown
            position = fields.position.data or 99
            # On a tie, the reason moved there goes first.
            moved = (
                code not in wording.shown or wording.shown.index(code) + 1 != position
            )
            placed.append((position, not moved, index, code))
    shown = [code for *_order, code in sorted(placed)]
    changes = []
    if shown != wording.shown:
        changes.append("reasons shown or their order")
    if custom.keys() != wording.custom.keys():
        changes.append("reasons of our own")
    return wordings.with_reasons(wording, shown, custom, labels), changes


@bp.route("/reasons", methods=["GET", "POST"])
@access.requires(access.ADMINISTER)
def reasons() -> str | WerkzeugResponse:
    """Which reasons the survey offers, in what order; the team's own."""
    session = db.session()
    wording = _newest()
    form = ReasonsForm(
        data={"based_on": wording.version, "rows": _reason_rows(wording)}
    )
    preview: dict[str, Any] | None = None
    if form.validate_on_submit():
        try:
            definition, changes = _reasons_definition(wording, form)
        except InvalidInput as invalid:
            _refused(form, invalid)
        else:
            summary = "Changed the " + " and ".join(changes or ["reasons"])
            preview = _preview_or_save(session, form, definition, "en", summary)
            if preview is None:
                return redirect(url_for(".reasons"), 303)
    return _page(
        "wording/reasons.html",
        preview,
        form=form,
        wording=wording,
        built_in_codes=REASONS,
    )


# --- the texts of a language ------------------------------------------------


def _text_keys(wording: Wording) -> list[tuple[str, str]]:
    """The keys a language's page edits, with their labels (a reason by its
    label in the staff's language, not its code)."""
    keys = [("question", "The question")]
    codes = [*wording.shown, *[c for c in wording.custom if c not in wording.shown]]
    for code in codes:
        keys.append((f"label.{code}", f"Answer “{wording.staff_label(code)}”"))
    for code in codes:
        if code in FOLLOW_UP_TEXTS or code in wording.custom:
            keys.append(
                (
                    f"follow_up.{code}",
                    f"Follow-up question after “{wording.staff_label(code)}”",
                )
            )
    keys.append(("consent", "The win-back consent sentence"))
    return keys


def _built_in_text(key: str, language: str) -> str:
    """What the customer reads when the team writes nothing for ``key``."""
    name, _, code = key.partition(".")
    base = wordings.built_in()
    if name == "question":
        return base.question(language)
    if name == "consent":
        return base.consent(language)
    if name == "label" and code in REASONS:
        return base.label(code, language)
    if name == "follow_up" and code in FOLLOW_UP_TEXTS:
        return base.follow_up(code, language) or ""
    return ""


@bp.route("/wording/<language>", methods=["GET", "POST"])
@access.requires(access.ADMINISTER)
def texts(language: str) -> str | WerkzeugResponse:
    """The survey's texts in one language; blank: the built-in text."""
    if language not in i18n.shipped_languages():
        abort(404)
    session = db.session()
    wording = _newest()
    keys = _text_keys(wording)
    form = texts_form(
        keys,
        based_on=wording.version,
        **{
            f"text_{index}": wording.override(language, key) or ""
            for index, (key, _label) in enumerate(keys)
        },
    )
    preview: dict[str, Any] | None = None
    if form.validate_on_submit():
        entered = {
            key: form[f"text_{index}"].data or ""
            for index, (key, _label) in enumerate(keys)
        }
        try:
            definition = wordings.with_texts(wording, language, entered)
        except InvalidInput as invalid:
            _refused(form, invalid)
        else:
            summary = f"Changed the texts in {formatting.language(language)}"
            preview = _preview_or_save(session, form, definition, language, summary)
            if preview is None:
                return redirect(url_for(".texts", language=language), 303)
    return _page(
        "wording/texts.html",
        preview,
        form=form,
        rows=[
            (form[f"text_{index}"], _built_in_text(key, language))
            for index, (key, _label) in enumerate(keys)
        ],
        language=language,
        wording=wording,
    )


@bp.get("/versions")
@access.requires(access.ADMINISTER)
def versions() -> str:
    """Every saved version of the survey, newest first, and who saved it."""
    rows = db.session().execute(
        select(SurveyVersion, StaffUser.name)
        .outerjoin(StaffUser, StaffUser.id == SurveyVersion.created_by_id)
        .order_by(SurveyVersion.id.desc())
    )
    return render_template(
        "wording/versions.html",
        versions=[
            (version, author, _readable(version.summary))
            for version, author in rows.all()
        ],
    )


#: A summary saved before versions named the language ("... in de").
_LANGUAGE_CODE_SUMMARY = re.compile(
    r"^(Changed the texts in )([a-z]{2,3}(?:_[A-Z]{2})?)$"
)


def _readable(summary: str) -> str:
    """A version's summary as people read it: a language by its name."""
    old = _LANGUAGE_CODE_SUMMARY.match(summary)
    return old.group(1) + formatting.language(old.group(2)) if old else summary

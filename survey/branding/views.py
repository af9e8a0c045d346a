"""The brand's pages: an admin sets it; the logo and colour are served."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask import Response as HttpResponse
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import audit, db, i18n
from survey.branding import service
from survey.branding.forms import BrandForm
from survey.branding.logos import MAX_UPLOAD_BYTES, LogoRefused, checked_logo
from survey.errors import InvalidInput, NotFound
from survey.staff import access
from survey.staff.views import private_pages

#: The logo and colour, for every page of ours (the customer's above all).
assets = Blueprint("brand", __name__, url_prefix="/brand")

admin = Blueprint("survey_admin", __name__, url_prefix="/admin/survey")
private_pages(admin)

#: Served files change name when they change, so browsers keep them.
_FOREVER = "public, max-age=31536000, immutable"


@assets.app_context_processor
def _brand() -> dict[str, Any]:
    return {"brand": service.current()}


@assets.get("/<file>")
def logo(file: str) -> HttpResponse:
    """The logo, under a name that changes with it."""
    brand = service.current()
    if brand.logo is None or file != brand.logo_file:
        service.forget(current_app)  # perhaps just changed by another worker
        brand = service.current()
        if brand.logo is None or file != brand.logo_file:
            raise NotFound("No such logo.")
    response = HttpResponse(brand.logo.data, mimetype=brand.logo.content_type)
    response.headers["Cache-Control"] = _FOREVER
    # Opened on its own, an SVG is a document: it may draw, never run.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    return response


@assets.get("/accent-<string(length=6):colour>.css")
def accent(colour: str) -> HttpResponse:
    """The stylesheet giving the pages an accent colour."""
    try:
        stylesheet = service.accent_stylesheet(f"#{int(colour, 16):06x}")
    except ValueError:
        raise NotFound("No such colour.") from None
    response = HttpResponse(stylesheet, mimetype="text/css")
    response.headers["Cache-Control"] = _FOREVER
    return response


@admin.route("", methods=["GET", "POST"])
@access.requires(access.ADMINISTER)
def brand() -> str | WerkzeugResponse:
    """Show the brand and change it."""
    current = service.current()
    form = BrandForm(
        data={name: getattr(current, name) for name in service.TEXT_FIELDS}
    )
    if form.validate_on_submit():
        session = db.session()
        try:
            logo = None
            if upload := form.logo.data:
                logo = checked_logo(upload.stream.read(MAX_UPLOAD_BYTES + 1))
            changed = service.save_brand(
                session,
                {name: form[name].data for name in service.TEXT_FIELDS},
                logo=logo,
                remove_logo=form.remove_logo.data,
                actor_id=current_user.id,
            )
        except LogoRefused as refused:
            form.logo.errors = [str(refused)]
        except InvalidInput as invalid:
            for name, messages in invalid.fields.items():
                form[name].errors = list(messages)
        else:
            if changed:
                audit.record(
                    session, "brand.changed", actor_id=current_user.id, fields=changed
                )
            session.commit()
            service.forget(current_app)
            flash(
                "Saved: customers see it from now on."
                if changed
                else "Nothing changed.",
                "success",
            )
            return redirect(url_for(".brand"), 303)
    return render_template(
        "branding/brand.html",
        form=form,
        current=current,
        survey_languages=i18n.language_names(),
    )

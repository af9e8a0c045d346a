"""The brand's page: an admin sets who is asking (name, colours, logo)."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import audit, db, i18n
from survey.branding import service
from survey.branding.logos import MAX_UPLOAD_BYTES, LogoRefused, checked_logo
from survey.errors import InvalidInput
from survey.staff import access
from survey.staff_pages.branding_forms import BrandForm
from survey.staff_pages.staff import private_pages

admin = Blueprint("survey_admin", __name__, url_prefix="/admin/survey")
private_pages(admin)


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

"""Admins manage staff users: add (password shown once), role, deactivate."""

from __future__ import annotations

import re
from collections.abc import Iterator

from flask import (
    Blueprint,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask import Response as HttpResponse
from flask_login import current_user
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import audit, clock, db
from survey import contacts as contacts_service
from survey.departures.service import departures_of
from survey.errors import InvalidInput
from survey.staff import access, passwords, service
from survey.staff.models import ADMIN
from survey.staff_pages.staff import private_pages
from survey.staff_pages.staff_forms import ContactForm, NewUserForm, UserActionForm
from survey.vocabulary import ROLE_LABELS

bp = Blueprint("admin", __name__, url_prefix="/admin")
private_pages(bp)


@bp.route("/users", methods=["GET", "POST"])
@access.requires(access.ADMINISTER)
def users() -> str | WerkzeugResponse:
    """List staff users and add one."""
    db_session = db.session()
    form = NewUserForm()
    new_password = None
    if form.validate_on_submit():
        password = passwords.generate_password()
        try:
            user = service.create_user(
                db_session,
                email=form.email.data,
                name=form.name.data,
                role=form.role.data,
                password=password,
                actor_id=current_user.id,
            )
        except InvalidInput as invalid:
            for name, messages in invalid.fields.items():
                getattr(form, name).errors = list(messages)
        else:
            db_session.commit()
            new_password = (user.email, password)
            form = NewUserForm(formdata=None)
    return _users_page(db_session, form=form, new_password=new_password)


def _users_page(
    db_session: Session,
    *,
    form: NewUserForm | None = None,
    new_password: tuple[str, str] | None = None,
) -> str:
    return render_template(
        "staff/users.html",
        users=service.list_users(db_session),
        form=form or NewUserForm(formdata=None),
        action_form=UserActionForm(),
        new_password=new_password,
    )


@bp.post("/users/<int(max=2147483647):user_id>")
@access.requires(access.ADMINISTER)
def change_user(user_id: int) -> str | WerkzeugResponse:
    """Deactivate, activate, or change the role of a user."""
    form = UserActionForm()
    db_session = db.session()
    user = service.get_user(db_session, user_id)
    if not form.validate_on_submit():
        flash("That did not work; please try again.", "error")
        return redirect(url_for(".users"))
    action = form.action.data
    if action == "reset":
        password = service.reset_password(db_session, user, actor_id=current_user.id)
        db_session.commit()
        # Shown on this page only, never in a redirect or the session cookie.
        return _users_page(db_session, new_password=(user.email, password))
    gives_up_admin = user.id == current_user.id and (
        action == "deactivate" or (action == "role" and form.role.data != ADMIN)
    )
    if (
        gives_up_admin
        and form.confirmed.data != "yes"
        and not service.is_last_admin(db_session, user)  # refused below anyway
    ):
        # Asked first: the next page would be the one they can no longer open.
        return render_template("staff/confirm_own_access.html", form=form, user=user)
    try:
        if action == "deactivate":
            service.set_active(db_session, user, False, actor_id=current_user.id)
            message = f"{user.name} is deactivated and signed out everywhere."
        elif action == "activate":
            service.set_active(db_session, user, True, actor_id=current_user.id)
            message = f"{user.name} is active again."
        elif action == "role":
            service.set_role(db_session, user, form.role.data, actor_id=current_user.id)
            message = f"{user.name} is now {ROLE_LABELS[user.role]}."
        else:
            flash("Unknown action.", "error")
            return redirect(url_for(".users"))
    except service.LastAdmin as refused:
        flash(refused.message, "error")
        return redirect(url_for(".users"))
    db_session.commit()
    flash(message, "info")
    if gives_up_admin:
        return redirect(url_for("staff.login"))  # where their role now lands
    return redirect(url_for(".users"))


@bp.route("/contacts", methods=["GET", "POST"])
@access.requires(access.ADMINISTER)
def contacts() -> str | WerkzeugResponse:
    """Export or erase a person's data (GDPR articles 15 and 17)."""
    form = ContactForm()
    if not form.validate_on_submit():
        return render_template("staff/contacts.html", form=form)
    try:
        address = contacts_service.valid_address(form.email.data)
    except InvalidInput as invalid:
        form.email.errors = invalid.fields["email"]
        return render_template("staff/contacts.html", form=form)
    db_session = db.session()
    if request.form.get("action") == "export":
        if not contacts_service.holds_anything(db_session, address):
            flash(f"Nothing held about {address}: there is nothing to export.", "info")
            return render_template("staff/contacts.html", form=form)
        audit.record(
            db_session,
            "contact.exported",
            actor_id=current_user.id,
            email_hash=contacts_service.email_hash(address),
        )
        db_session.commit()
        # Named after whose data it is and when, so downloads stay apart.
        person = re.sub(r"[^A-Za-z0-9@._-]+", "_", address)
        name = f"personal-data-{person}-{clock.now():%Y-%m-%d}.json"
        return HttpResponse(
            stream_with_context(_personal_data(address)),
            mimetype="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )
    held = len(departures_of(db_session, address))
    if request.form.get("action") != "erase" or form.shown.data != str(held):
        # First what this address holds, then the typed confirmation: an
        # erasure never goes ahead on a count the admin has not seen.
        if request.form.get("action") == "erase" and form.shown.data:
            form.confirm.errors = ["What this address holds has changed: look again."]
        return _erasure_preview(form, address, held)
    if (form.confirm.data or "").strip().lower() != address:
        form.confirm.errors = ["Type the same address again to erase."]
        return _erasure_preview(form, address, held)
    done = contacts_service.erase_person(
        db_session, address, actor_id=current_user.id, via="admin"
    )
    db_session.commit()
    done.remove_files()
    flash(
        f"Erased {done.departures} departure(s) of that person."
        if done.departures
        else "Nobody with that address: nothing erased.",
        "info",
    )
    return redirect(url_for(".contacts"))


def _erasure_preview(form: ContactForm, address: str, held: int) -> str:
    """The erasure's second step: what it removes, and the typed confirmation."""
    form.shown.data = str(held)
    return render_template("staff/contacts.html", form=form, address=address, held=held)


def _personal_data(address: str) -> Iterator[str]:
    """Yield the export from a session of its own, closed when the download
    ends or is abandoned: a streamed answer outlives the request's session."""
    reader = db.new_session()
    try:
        yield from contacts_service.export_json(reader, address)
    finally:
        reader.close()

"""Signing in and out, and one's own account."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask import Response as HttpResponse
from flask_login import LoginManager, current_user, login_user, logout_user
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import db, metrics
from survey.errors import InvalidInput
from survey.staff import access, service
from survey.staff.models import StaffUser
from survey.staff_pages.staff_forms import DigestForm, LoginForm, PasswordForm

log = logging.getLogger(__name__)

bp = Blueprint("staff", __name__)

login_manager = LoginManager()
login_manager.login_view = "staff.login"
login_manager.login_message = "Please sign in to see this page."
login_manager.login_message_category = "info"


def _load_user(token: str) -> StaffUser | None:
    return service.user_for_session(db.session(), token)


login_manager.user_loader(_load_user)


def private_pages(blueprint: Blueprint) -> None:
    """Keep a staff blueprint's pages out of caches and Referer headers."""

    @blueprint.after_request
    def _private(response: HttpResponse) -> HttpResponse:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "same-origin"
        return response


private_pages(bp)


def safe_next(target: str | None) -> str | None:
    """Return ``target`` if it is a path on this site, else None.

    Refuses absolute and scheme-relative URLs (``//evil.example``), backslash
    tricks browsers read as slashes (``/\\evil.example``) and control characters.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if any(char in target for char in "\\\r\n\t") or not target.isprintable():
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | WerkzeugResponse:
    """Sign in with email and password."""
    form = LoginForm()
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(
                safe_next(request.args.get("next")) or access.home_for(current_user)
            )
        form.next.data = safe_next(request.args.get("next")) or ""
    error = None
    if form.validate_on_submit():
        ip = request.remote_addr or "unknown"
        writer = db.session()
        try:
            attempt = service.begin_attempt(writer, form.email.data, ip)
            writer.commit()  # counted; the slow check below holds no lock
            ok, new_hash = service.verify_attempt(attempt, form.password.data)
            db.begin_write(writer)
            user = service.finish_attempt(writer, attempt, ok, new_hash)
        except service.LoginRefused as refused:
            writer.commit()
            metrics.SIGN_IN_FAILURES.inc()
            error = refused.message
        else:
            if current_user.is_authenticated and current_user.session_token:
                service.end_session(writer, current_user.session_token)
            service.start_session(writer, user)
            writer.commit()
            # A new session: nothing from before signing in carries over.
            session.clear()
            login_user(user)
            log.info("staff user %s signed in", user.id)
            return redirect(safe_next(form.next.data) or access.home_for(user))
    return render_template("staff/login.html", form=form, error=error)


@bp.post("/logout")
def logout() -> WerkzeugResponse:
    """Sign out: the login session ends on the server, not just in the browser."""
    if current_user.is_authenticated and current_user.session_token:
        db_session = db.session()
        service.end_session(db_session, current_user.session_token)
        db_session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for(".login"))


@bp.route("/account", methods=["GET", "POST"])
@access.requires(access.ACCOUNT)
def account() -> str | WerkzeugResponse:
    """One's own account: name, role, password."""
    form = PasswordForm()
    if form.validate_on_submit():
        db_session = db.session()
        user = service.get_user(db_session, current_user.id)
        try:
            service.change_password(
                db_session, user, form.current_password.data, form.new_password.data
            )
        except InvalidInput as invalid:
            for name, messages in invalid.fields.items():
                getattr(form, name).errors = list(messages)
        else:
            # Every session ended with the old password; this one goes on.
            service.start_session(db_session, user)
            db_session.commit()
            session.clear()
            login_user(user)
            flash("Your password is changed; other sessions are signed out.", "info")
            return redirect(url_for(".account"))
    return render_template(
        "staff/account.html",
        form=form,
        digest_form=DigestForm(weekly_digest=current_user.weekly_digest),
    )


@bp.post("/account/digest")
@access.requires(access.INSIGHTS)
def account_digest() -> WerkzeugResponse:
    """Ask for the weekly digest, or stop it (for those who see insights)."""
    form = DigestForm()
    if not form.validate_on_submit():
        abort(400)
    db_session = db.session()
    wanted = bool(form.weekly_digest.data)
    service.set_weekly_digest(
        db_session, service.get_user(db_session, current_user.id), wanted
    )
    db_session.commit()
    flash(
        "You will get the weekly digest on Monday mornings."
        if wanted
        else "You will no longer get the weekly digest.",
        "info",
    )
    return redirect(url_for(".account"))


def init_app(app: Flask) -> None:
    """Set up Flask-Login and the templates' access helper."""
    # The proxy as a global, not Flask-Login's context processor, which would
    # look the staff session up for every page rendered, the customer's too.
    login_manager.init_app(app, add_context_processor=False)
    app.jinja_env.globals["current_user"] = current_user
    app.jinja_env.globals["can"] = access.can
    app.jinja_env.globals["perm"] = access
    app.jinja_env.globals["has_endpoint"] = lambda name: name in app.view_functions

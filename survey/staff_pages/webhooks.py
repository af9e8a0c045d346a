"""Admins manage outgoing webhooks: endpoints (secret shown once), deliveries."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import audit, db, webhooks
from survey.errors import InvalidInput, NotFound
from survey.staff import access
from survey.staff_pages.staff import private_pages
from survey.staff_pages.staff_forms import WebhookForm

bp = Blueprint("webhooks_admin", __name__, url_prefix="/admin/webhooks")
private_pages(bp)

#: Deliveries shown on the page, newest first.
LOG_SIZE = 50


@bp.route("", methods=["GET", "POST"])
@access.requires(access.ADMINISTER)
def endpoints() -> str:
    """List endpoints and their latest deliveries; add an endpoint."""
    session = db.session()
    form = WebhookForm()
    new_secret = None
    if form.validate_on_submit():
        try:
            endpoint = webhooks.add_endpoint(
                session,
                form.url.data,
                form.events.data,
                slack=form.slack.data,
                include_personal=form.include_personal.data,
            )
        except InvalidInput as invalid:
            for name, messages in invalid.fields.items():
                getattr(form, name).errors = list(messages)
        else:
            audit.record(
                session,
                "webhook.added",
                actor_id=current_user.id,
                endpoint_id=endpoint.id,
                events=endpoint.event_list,
            )
            session.commit()
            new_secret = (endpoint.url, endpoint.secret)
            form = WebhookForm(formdata=None)
    return render_template(
        "staff/webhooks.html",
        endpoints=webhooks.endpoints(session),
        deliveries=webhooks.deliveries(session, limit=LOG_SIZE),
        erased=webhooks.erased,
        form=form,
        new_secret=new_secret,
    )


@bp.post("/<int(max=2147483647):endpoint_id>/remove")
@access.requires(access.ADMINISTER)
def remove(endpoint_id: int) -> WerkzeugResponse:
    """Remove an endpoint and its deliveries."""
    session = db.session()
    if not webhooks.remove_endpoint(session, endpoint_id):
        raise NotFound("No such endpoint.")
    audit.record(
        session, "webhook.removed", actor_id=current_user.id, endpoint_id=endpoint_id
    )
    session.commit()
    flash("Endpoint removed, with its deliveries.", "success")
    return redirect(url_for(".endpoints"), 303)


@bp.post("/deliveries/<int(max=2147483647):message_id>/again")
@access.requires(access.ADMINISTER)
def send_again(message_id: int) -> WerkzeugResponse:
    """Queue a delivery once more."""
    session = db.session()
    if not webhooks.send_again(session, message_id):
        raise NotFound("No such delivery.")
    session.commit()
    flash("Queued again: the worker sends it within a few seconds.", "success")
    return redirect(url_for(".endpoints"), 303)

"""POST /api/v1/webhooks/stripe: Stripe's events, signed with the endpoint's secret."""

from __future__ import annotations

from flask import current_app, jsonify, request
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import db, stripe_intake
from survey.api import bp
from survey.api.schemas import StripeReceived
from survey.errors import SurveyError


class StripeNotConfigured(SurveyError):
    """No signing secret is set: no event can be trusted."""

    status = 503
    code = "stripe_not_configured"


@bp.post("/webhooks/stripe")
def stripe_webhook() -> WerkzeugResponse:
    """Take in one Stripe event: 400 and nothing kept unless Stripe signed it
    in the last five minutes; 200 once kept (a repeat changes nothing)."""
    if not current_app.config["STRIPE_WEBHOOK_SECRET"]:
        raise StripeNotConfigured("SURVEY_STRIPE_WEBHOOK_SECRET is not set.")
    event = stripe_intake.verify(
        request.get_data(cache=False), request.headers.get("Stripe-Signature")
    )
    # The request's session, so that what reads beside it (the survey's
    # wording) shares its connection; take_in begins its transactions.
    outcome = stripe_intake.take_in(db.session(begin=False), event)
    return jsonify(StripeReceived(received=True, outcome=outcome).model_dump())

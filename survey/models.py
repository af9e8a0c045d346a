"""Every model, imported in one place so the metadata (and Alembic) sees them all."""

from survey.answers.models import Response
from survey.api.auth import ApiToken
from survey.audit import AuditEvent
from survey.branding.models import Brand
from survey.consent import ConsentEvent
from survey.db import Base
from survey.departures.models import Departure
from survey.departures.tallies import DepartureTally, ReasonTally
from survey.insights.digest import DigestWeek
from survey.outbox import OutboxMessage
from survey.review.models import ActionItem, Note, Postmortem, RootCause
from survey.review_items import ReviewItem
from survey.staff.models import LoginFailure, StaffSession, StaffUser
from survey.stripe_intake import StripeEvent
from survey.webhooks import WebhookEndpoint
from survey.wording.models import SurveyVersion

__all__ = [
    "ActionItem",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Brand",
    "ConsentEvent",
    "Departure",
    "DepartureTally",
    "DigestWeek",
    "LoginFailure",
    "Note",
    "OutboxMessage",
    "Postmortem",
    "ReasonTally",
    "Response",
    "ReviewItem",
    "RootCause",
    "StaffSession",
    "StaffUser",
    "StripeEvent",
    "SurveyVersion",
    "WebhookEndpoint",
]

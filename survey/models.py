"""Every model, imported in one place so the metadata (and Alembic) sees them all."""

from survey.api.auth import ApiToken
from survey.consent import ConsentEvent
from survey.db import Base
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from survey.public.models import Response

__all__ = ["ApiToken", "Base", "ConsentEvent", "Departure", "OutboxMessage", "Response"]

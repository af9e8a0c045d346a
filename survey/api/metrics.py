"""GET /metrics: the Prometheus text format, for an operator's scraper.

Not public: open to the addresses of ``SURVEY_METRICS_ALLOW``, or to a token
with the ``metrics:read`` scope. Besides the counters of ``survey.metrics``
(summed over gunicorn's workers in multiprocess mode), each scrape reads the
outbox's depth, its oldest waiting message and the review queue by status
from the database.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

from flask import Blueprint, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from survey import clock, db
from survey.api.auth import authenticate
from survey.errors import SurveyError
from survey.outbox import FAILED, PENDING, OutboxMessage
from survey.review_items import ReviewItem

bp = Blueprint("metrics", __name__)

SCOPE = "metrics:read"


class DatabaseGauges(Collector):
    """What the database says at scrape time: the outbox's waiting and
    failed messages by kind, how long the oldest has waited, and the review
    queue by status."""

    def collect(self) -> Iterator[Metric]:
        outbox = GaugeMetricFamily(
            "survey_outbox_messages",
            "Outbox messages waiting or given up on, by kind and status.",
            labels=["kind", "status"],
        )
        oldest = GaugeMetricFamily(
            "survey_outbox_oldest_pending_seconds",
            "How long the oldest waiting outbox message has waited (0: none).",
        )
        review = GaugeMetricFamily(
            "survey_review_items", "Review queue items, by status.", labels=["status"]
        )
        with db.new_session() as session:
            waiting = session.execute(
                select(OutboxMessage.kind, OutboxMessage.status, func.count())
                .where(OutboxMessage.status.in_((PENDING, FAILED)))
                .group_by(OutboxMessage.kind, OutboxMessage.status)
            )
            for kind, status, count in waiting:
                outbox.add_metric([kind, status], count)
            first = session.scalar(
                select(func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.status == PENDING
                )
            )
            oldest.add_metric(
                [], max(0.0, (clock.now() - first).total_seconds()) if first else 0.0
            )
            items = session.execute(
                select(ReviewItem.status, func.count()).group_by(ReviewItem.status)
            )
            for status, count in items:
                review.add_metric([status], count)
        yield from (outbox, oldest, review)


class ThisProcess(Collector):
    """The counters of this process (when not in multiprocess mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _allowed_address() -> bool:
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5
    return any(address in network for network in current_app.config["METRICS_ALLOW"])


def _refused(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


@bp.get("/metrics")
def scrape() -> Response:
    """The metrics, to an allowed address or a ``metrics:read`` token."""
    if not _allowed_address():
        try:
            token = authenticate()
        except SurveyError as refused:
            return _refused(refused.status, refused.message)
        if SCOPE not in token.scopes:
            return _refused(403, f"This token lacks the scope {SCOPE}.")
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(ThisProcess())
    registry.register(DatabaseGauges())
    response = Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response

"""What an operator can watch: counters and timings in the Prometheus text
format (read at /metrics, see ``survey.api.metrics``).

Under gunicorn, with ``PROMETHEUS_MULTIPROC_DIR`` set, every worker process
(and an outbox worker on the same machine) writes its own file there and
/metrics adds them up (prometheus-client's multiprocess mode). Labels name a
route by its rule (``/s/<token>``), never by its path, and never an address.
"""

from __future__ import annotations

import time

from flask import Flask, g, request
from prometheus_client import Counter, Histogram
from werkzeug.wrappers import Response

REQUESTS = Counter(
    "survey_http_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "survey_http_request_duration_seconds",
    "Time to answer a request, by route and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTBOX_ATTEMPTS = Counter(
    "survey_outbox_attempts",
    "Delivery attempts of the outbox worker, by kind of message and outcome "
    "(sent, retried, failed).",
    ["kind", "outcome"],
)
SIGN_IN_FAILURES = Counter(
    "survey_sign_in_failures", "Staff sign-ins refused (wrong password, locked)."
)

#: The route of a request no rule matched (a 404), as one label value.
NO_ROUTE = "(no route)"
#: Methods kept as labels; anything else is counted as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask) -> None:
    """Count and time every request by its route."""

    @app.before_request
    def start_the_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_it(response: Response) -> Response:
        started = g.get("metrics_started")
        route = request.url_rule.rule if request.url_rule is not None else NO_ROUTE
        method = request.method if request.method in METHODS else "OTHER"
        REQUESTS.labels(route, method, str(response.status_code)).inc()
        if started is not None:
            LATENCY.labels(route, method).observe(time.perf_counter() - started)
        return response

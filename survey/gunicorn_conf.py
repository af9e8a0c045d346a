"""gunicorn's settings for production: ``gunicorn -c python:survey.gunicorn_conf``.

Flags on the command line (``--bind``, ``--workers``...) and
``GUNICORN_CMD_ARGS`` override any of them. gunicorn is meant to sit behind
a proxy that buffers request bodies and times out slow clients (see the
README): a gthread worker's thread waits for as long as a client takes to
send its body.
"""

import os
import sys
from typing import Any

from gunicorn.glogging import Logger

from survey import logs

wsgi_app = "survey:create_app()"
bind = ["127.0.0.1:8000"]
worker_class = "gthread"
workers = 2
threads = 8
#: Each worker listens on a socket of its own (Linux only; see the README).
reuse_port = sys.platform == "linux"

# What gunicorn itself reads before the app sees a request: the request line
# and headers (bodies are held to their limits by survey.security).
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
#: A worker silent for this long is restarted; a stop waits this long.
timeout = 30
graceful_timeout = 30
#: How long an idle keep-alive connection (from the proxy) stays open.
keepalive = 5


def child_exit(server: Any, worker: Any) -> None:
    """A worker that stops leaves its counters to /metrics, not its gauges
    (prometheus-client's multiprocess mode, with PROMETHEUS_MULTIPROC_DIR)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class JsonLines(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's own lines (a worker booting, timing out...) as JSON objects,
    one a line, like the app's. Its access log stays off, as by default:
    request lines would carry survey links."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.json_formatter())


if os.environ.get("SURVEY_LOG_FORMAT") == "json":
    logger_class = JsonLines

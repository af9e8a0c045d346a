"""The baseline for bench_survey.py: Flask with one route and nothing else.

Served by gunicorn with the same settings as the survey app, it measures what
the server, Flask and wrk cost on this machine, so the survey's numbers can be
read as ratios instead of absolute figures that depend on the hardware.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    """Answer ``ok``: no database, no templates, no session."""
    return "ok"

"""The JSON API under /api/v1: token auth with scopes, JSON errors everywhere."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from survey.api import contacts, departures, winback  # noqa: E402, F401  (routes)

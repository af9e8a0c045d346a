"""What a load balancer asks: GET /healthz (cheap: the database answers)
and GET /readyz (also: its schema is at the newest migration)."""

from __future__ import annotations

import logging
from functools import cache

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from survey import db
from survey.resources import resource_dir

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Answer whether the service can reach its database."""
    try:
        db.session().execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("health check: database unreachable")
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok"), 200


@cache
def migration_heads() -> frozenset[str]:
    """The newest migrations this code ships (read once per process)."""
    return frozenset(ScriptDirectory(str(resource_dir("migrations"))).get_heads())


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Answer whether the service is ready for traffic: its database answers
    and its schema is at the newest migration this code knows."""
    try:
        connection = db.session().connection()
        current = frozenset(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError:
        log.exception("readiness check: database unreachable")
        return jsonify(status="error", database="unreachable", migrations=None), 503
    if current != migration_heads():
        log.warning(
            "readiness check: schema at %s, code expects %s",
            ", ".join(sorted(current)) or "nothing",
            ", ".join(sorted(migration_heads())),
        )
        return jsonify(status="error", database="ok", migrations="behind"), 503
    return jsonify(status="ok", database="ok", migrations="at head"), 200

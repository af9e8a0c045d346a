"""DELETE /api/v1/contacts/<email>: erase a person's data (scope contacts:erase)."""

from __future__ import annotations

from flask import g, jsonify
from werkzeug.wrappers import Response as WerkzeugResponse

from survey import contacts, db
from survey.api import bp
from survey.api.auth import require_scope


@bp.delete("/contacts/<path:email>")
@require_scope("contacts:erase")
def erase_contact(email: str) -> WerkzeugResponse:
    """Erase everything personal about the person at ``email``.

    Idempotent: erasing someone unknown, or erased already, erases nothing.
    Anything but an address is a 422.
    """
    session = db.session()
    done = contacts.erase_person(
        session, email, actor_id=None, via=f"api:{g.api_token.name}"
    )
    session.commit()
    done.remove_files()
    return jsonify(erased_departures=done.departures)

"""Small helpers that arrange data through the app's own functions."""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from survey import db, links
from survey.api.auth import create_token
from survey.branding import service as branding
from survey.departures.models import Departure
from survey.departures.schemas import DepartureIn
from survey.departures.service import record_departure
from survey.models import Base
from survey.staff.models import StaffUser

_numbers = itertools.count(1)


def make_departure(app: Flask, **fields: Any) -> Departure:
    """Record a departure (and its invitation) as the API would."""
    number = next(_numbers)
    data = {
        "external_id": f"sub_{number:05d}",
        "company": f"Company {number}",
        "contact_name": f"Contact {number}",
        "contact_email": f"contact{number}@example.com",
        "plan": "growth",
        "mrr_cents": 19_900,
        "segment": "smb",
    }
    data.update(fields)
    with app.app_context(), db.write_session() as session:
        departure, _ = record_departure(session, DepartureIn(**data), source="api")
        session.commit()
        return departure


def set_brand(app: Flask, **fields: Any) -> None:
    """Set the brand as the admin page would (text fields; ``logo=`` a Logo)."""
    logo = fields.pop("logo", None)
    with app.app_context(), db.write_session() as session:
        branding.save_brand(session, fields, logo=logo)
        session.commit()
    branding.forget(app)


def make_token(app: Flask, *scopes: str) -> str:
    """Create an API token with ``scopes`` and return its secret."""
    with app.app_context(), db.write_session() as session:
        _, secret = create_token(session, "test", list(scopes))
        session.commit()
    return secret


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def path_of(url: str) -> str:
    """Return the path and query of an absolute URL, for the test client."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def survey_path(app: Flask, departure: Departure) -> str:
    with app.test_request_context():
        return path_of(links.survey_url(departure.public_id))


def withdraw_path(app: Flask, departure: Departure) -> str:
    with app.test_request_context():
        return path_of(links.withdraw_url(departure.public_id))


def csrf_token(html: str) -> str:
    match = re.search(r"<input[^>]*name=\"csrf_token\"[^>]*value=\"([^\"]+)\"", html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def hidden_fields(html: str) -> dict[str, str]:
    """Return the hidden inputs of a page (the CSRF token among them)."""
    fields = {}
    for tag in re.findall(r"<input[^>]*type=\"hidden\"[^>]*>", html):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[name.group(1)] = value.group(1) if value else ""
    return fields


def submit(
    client: FlaskClient, page: str, data: dict[str, Any], action: str | None = None
) -> Any:
    """Open ``page`` like a browser, then post ``data`` with its hidden fields."""
    html = client.get(page).get_data(as_text=True)
    assert csrf_token(html)
    return client.post(action or page, data={**hidden_fields(html), **data})


PASSWORD = "correct horse battery staple"

#: A customer's own words, each given through the survey pages by a test that
#: checks it was stored: no log line of the whole run may hold one (see
#: ``every_log_line_of_the_run``).
OWN_WORDS = "Your CEO was rude"
DETAILS = "Support took a week"
FOLLOW_UP = "SAML single sign-on"
CUSTOMER_WORDS = (OWN_WORDS, DETAILS, FOLLOW_UP)


def make_user(
    app: Flask, role: str = "csm", email: str | None = None, **fields: Any
) -> StaffUser:
    """Create a staff user whose password is ``PASSWORD``."""
    from survey.staff import service

    number = next(_numbers)
    with app.app_context(), db.write_session() as session:
        user = service.create_user(
            session,
            email=email or f"{role}{number}@staff.example",
            name=fields.pop("name", f"{role.title()} {number}"),
            role=role,
            password=fields.pop("password", PASSWORD),
        )
        for name, value in fields.items():
            setattr(user, name, value)
        session.commit()
        return user


def login(
    client: FlaskClient, email: str, password: str = PASSWORD, **extra: str
) -> Any:
    """Sign in through the login form, like a browser."""
    return submit(client, "/login", {"email": email, "password": password, **extra})


def make_consenting(app: Flask, reason: str = "switched", **fields: Any) -> Departure:
    """Record a departure whose contact answered and said yes to being won back."""
    from survey.answers.service import record_reason
    from survey.consent import consent_wording, record_consent

    departure = make_departure(app, **fields)
    with app.app_context(), db.write_session() as session:
        departure = session.merge(departure)
        record_reason(session.connection(), departure.public_id, reason, None)
        record_consent(
            session,
            departure,
            granted=True,
            channel="survey",
            wording=consent_wording(),
        )
        session.commit()
        return departure


def everything_as_text(session) -> str:
    """Every row of every table, as text: a crude but independent full scan."""
    session.rollback()
    dump = []
    for table in Base.metadata.sorted_tables:
        for row in session.execute(select(table)).all():
            dump.append(repr(tuple(row)))
    return "\n".join(dump).lower()

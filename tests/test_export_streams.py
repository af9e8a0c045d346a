"""The big exports read PostgreSQL through a server-side cursor.

A million consenting contacts must leave the server's memory flat: the rows
come a batch at a time from a named (server-side) cursor, not all at once
into the client. SQLite's cursor steps through its rows anyway, so this is
PostgreSQL's alone. Seen on the cursor each statement runs on, through
SQLAlchemy's own event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import event

from survey import db
from tests.factories import (
    auth,
    hidden_fields,
    login,
    make_consenting,
    make_token,
    make_user,
)

pytestmark = pytest.mark.usefixtures("postgres_only")

EMAIL = "pat@streams.example"


@pytest.fixture
def postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server-side cursors: its cursor steps anyway")


@pytest.fixture
def cursors(app: Flask) -> Iterator[list[tuple[str, bool]]]:
    """Each statement the app runs, and whether on a server-side cursor."""
    seen: list[tuple[str, bool]] = []

    def note(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        seen.append((statement, isinstance(cursor, psycopg.ServerCursor)))

    with app.app_context():
        engine = db.engine()
    event.listen(engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine, "before_cursor_execute", note)


def _streamed(seen: list[tuple[str, bool]], table: str) -> list[str]:
    return [s for s, server_side in seen if server_side and f"FROM {table}" in s]


def test_the_win_back_csv_for_programs_streams_from_a_server_side_cursor(app, cursors):
    for number in range(3):
        make_consenting(app, contact_email=f"c{number}@streams.example")
    reader = auth(make_token(app, "winback:read"))
    cursors.clear()
    response = app.test_client().get("/api/v1/winback/contacts.csv", headers=reader)
    assert response.status_code == 200
    assert response.get_data(as_text=True).count("@streams.example") == 3
    assert _streamed(cursors, "departures"), cursors


def test_the_win_back_csv_for_people_streams_from_a_server_side_cursor(app, cursors):
    for number in range(3):
        make_consenting(app, contact_email=f"c{number}@streams.example")
    staff = app.test_client()
    login(staff, make_user(app, "marketing").email)
    cursors.clear()
    response = staff.get("/winback/contacts.csv")
    assert response.status_code == 200
    assert response.get_data(as_text=True).count("@streams.example") == 3
    assert _streamed(cursors, "departures"), cursors


def test_the_personal_export_streams_from_a_server_side_cursor(app, cursors):
    make_consenting(app, contact_email=EMAIL, external_id="p1")
    make_consenting(app, contact_email=EMAIL, external_id="p2")
    admin = app.test_client()
    login(admin, make_user(app, "admin").email)
    page = admin.get("/admin/contacts")
    assert page.status_code == 200
    cursors.clear()
    download = admin.post(
        "/admin/contacts",
        data=hidden_fields(page.get_data(as_text=True))
        | {"email": EMAIL, "action": "export"},
    )
    assert download.status_code == 200
    assert download.get_data(as_text=True).count('"external_id": "p') == 2
    assert _streamed(cursors, "departures"), cursors

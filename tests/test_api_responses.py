"""GET /api/v1/responses: answers with their account facts, in keyset pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from survey import db
from tests.factories import (
    DETAILS,
    OWN_WORDS,
    auth,
    make_departure,
    make_token,
    submit,
    survey_path,
)

URL = "/api/v1/responses"


@pytest.fixture
def reader(app: Flask) -> dict[str, str]:
    return auth(make_token(app, "responses:read"))


def answer(app: Flask, client: Any, reason: str = "switched", **fields: Any) -> str:
    """Record a departure and answer page 1 through the survey; return its path."""
    departure = make_departure(app, **fields)
    page = survey_path(app, departure)
    assert submit(client, page, {"reason": reason}).status_code == 303
    return page


def listed(client: Any, headers: dict[str, str], **query: Any) -> Any:
    response = client.get(URL, query_string=query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def all_pages(client: Any, headers: dict[str, str], **query: Any) -> list[Any]:
    """Follow ``next_cursor`` to the end; return every row."""
    rows, cursor = [], None
    for _ in range(100):
        page = listed(
            client, headers, **query, **({"cursor": cursor} if cursor else {})
        )
        rows += page["responses"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("the pages never end")


def test_an_answer_comes_with_its_account_facts_and_consent(app, client, reader, clock):
    departure = make_departure(
        app,
        external_id="sub_42",
        company="Acme Inc.",
        contact_name="Ada Lovelace",
        contact_email="ada@acme.example",
        plan="growth",
        mrr_cents=29_900,
        currency="EUR",
        segment="mid-market",
        cancelled_at="2026-11-20T10:00:00Z",
    )
    page = survey_path(app, departure)
    answered = clock.current
    submit(client, page, {"reason": "other", "reason_other": OWN_WORDS})
    clock.advance(minutes=5)
    submit(
        client,
        page + "/more",
        {
            "factors": ["too_expensive"],
            "details": DETAILS,
            "destination": "competitor",
            "destination_name": "Globex",
            "winback_consent": "y",
        },
    )

    body = listed(client, reader)
    assert body["next_cursor"] is None
    [row] = body["responses"]
    iso = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731
    assert row == {
        "departure_id": departure.public_id,
        "external_id": "sub_42",
        "company": "Acme Inc.",
        "contact_name": "Ada Lovelace",
        "contact_email": "ada@acme.example",
        "plan": "growth",
        "mrr_cents": 29_900,
        "currency": "EUR",
        "segment": "mid-market",
        "cancelled_at": "2026-11-20T10:00:00Z",
        "source": "api",
        "reason": "other",
        "reason_other": OWN_WORDS,
        "factors": ["too_expensive"],
        "details": DETAILS,
        "destination": "competitor",
        "destination_name": "Globex",
        "follow_up_reason": None,
        "follow_up_answer": None,
        "answered_at": iso(answered),
        "updated_at": iso(clock.current),
        "consent": {"state": "granted", "since": iso(clock.current)},
    }
    # The link lets whoever holds it answer as the customer: never listed.
    token = page.rsplit("/", 1)[-1]
    assert token not in client.get(URL, headers=reader).get_data(as_text=True)


def test_it_agrees_with_the_departure_read_by_its_id(app, client, reader):
    page = answer(app, client)
    submit(client, page + "/more", {"details": "Too dear", "winback_consent": "y"})
    submit(client, page + "/more", {"details": "Too dear"})  # withdrawn
    [row] = listed(client, reader)["responses"]
    one = client.get(f"/api/v1/departures/{row['departure_id']}", headers=reader)
    departure = one.get_json()
    assert row["consent"] == departure["consent"]
    assert row["consent"]["state"] == "withdrawn"
    for name, value in departure["response"].items():
        assert row[name] == value, name
    for name in ("external_id", "company", "contact_email", "mrr_cents", "source"):
        assert row[name] == departure[name], name


def test_unanswered_departures_are_not_listed_and_no_consent_is_none(
    app, client, reader
):
    make_departure(app)
    answer(app, client, reason="too_expensive")
    [row] = listed(client, reader)["responses"]
    assert row["reason"] == "too_expensive"
    assert row["consent"] == {"state": "none", "since": None}


def test_pages_follow_the_cursor_to_the_end_without_repeats(app, client, reader):
    for _ in range(5):
        answer(app, client)
    first = listed(client, reader, limit=2)
    assert len(first["responses"]) == 2
    assert first["next_cursor"]
    rows = all_pages(client, reader, limit=2)
    ids = [row["departure_id"] for row in rows]
    assert len(ids) == len(set(ids)) == 5
    # Exactly a page's worth left: the last full page says there is no more.
    assert listed(client, reader, limit=5)["next_cursor"] is None


def test_since_keeps_answers_changed_at_or_after_it(app, client, reader, clock):
    early = answer(app, client, company="Early")
    clock.advance(days=2)
    boundary = clock.current
    answer(app, client, company="Late")
    clock.advance(days=2)

    def companies(since: str) -> list[str]:
        return [r["company"] for r in all_pages(client, reader, since=since)]

    assert companies(boundary.isoformat()) == ["Late"]
    assert companies(boundary.strftime("%Y-%m-%dT%H:%M:%S")) == ["Late"]  # UTC
    assert companies((boundary - timedelta(days=1)).date().isoformat()) == ["Late"]
    assert companies((boundary + timedelta(seconds=1)).isoformat()) == []
    # A changed answer counts as new: it is listed again, in its old place.
    submit(client, early, {"reason": "too_expensive"})
    assert companies((boundary + timedelta(days=1)).isoformat()) == ["Early"]
    assert companies("") == ["Early", "Late"]


def test_erased_people_are_not_listed(app, client, reader):
    answer(app, client, contact_email="gone@example.com", company="Gone Inc.")
    answer(app, client, company="Kept Inc.")
    eraser = auth(make_token(app, "contacts:erase"))
    erased = client.delete("/api/v1/contacts/gone@example.com", headers=eraser)
    assert erased.get_json() == {"erased_departures": 1}
    body = client.get(URL, headers=reader).get_data(as_text=True)
    assert "Kept Inc." in body
    assert "Gone Inc." not in body and "gone@example.com" not in body


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "-1"}, "cursor"),
        # Past an INTEGER: PostgreSQL would fail comparing it (a 500).
        ({"cursor": "2147483648"}, "cursor"),
        ({"cursor": "9" * 400}, "cursor"),
        ({"cursor": "\uff11"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01"}, "since"),
        ({"since": "1066-10-14"}, "since"),
        ({"since": "9999-12-31T23:59:59-12:00"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_bad_input_is_a_json_422(client, reader, query, field):
    response = client.get(URL, query_string=query, headers=reader)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid"
    assert list(body["fields"]) == [field]


def test_the_largest_cursor_is_the_end_of_the_list(app, client, reader):
    answer(app, client)
    body = listed(client, reader, cursor="2147483647")
    assert body == {"responses": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("scopes", "status"), [((), 401), (("departures:write", "winback:read"), 403)]
)
def test_reading_answers_needs_the_responses_scope(app, client, scopes, status):
    answer(app, client)
    headers = auth(make_token(app, *scopes)) if scopes else {}
    response = client.get(URL, headers=headers)
    assert response.status_code == status
    assert "switched" not in response.get_data(as_text=True)


def test_a_page_costs_the_same_statements_however_many_rows(app, client, reader):
    def statements(rows: int) -> int:
        for _ in range(rows):
            answer(app, client)
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(args[2])

        with app.app_context():
            engine = db.engine()
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert len(listed(client, reader, limit=1000)["responses"]) >= rows
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    assert statements(1) == statements(12)

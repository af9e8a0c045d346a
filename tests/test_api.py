"""POST/GET /api/v1/departures: auth, idempotency, validation, JSON errors."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from tests.factories import auth, make_token, path_of, submit

VALID = {
    "external_id": "sub_123",
    "company": "Acme Inc.",
    "contact_name": "Ada Lovelace",
    "contact_email": "ada@acme.example",
    "plan": "growth",
    "mrr_cents": 29900,
    "currency": "eur",
    "segment": "mid-market",
    "cancelled_at": "2026-11-20T10:00:00Z",
    "locale": "fr-CA",
    "csm_email": "csm@us.example",
    "billing_reason": "downgrade",
}


@pytest.fixture
def writer(app: Any) -> dict[str, str]:
    return auth(make_token(app, "departures:write"))


def count(session: Any, model: Any) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_create_returns_201_then_200_with_the_same_departure(client, writer, session):
    first = client.post("/api/v1/departures", json=VALID, headers=writer)
    assert first.status_code == 201
    body = first.get_json()
    assert body["external_id"] == "sub_123"
    assert body["currency"] == "EUR"
    assert body["locale"] == "fr_CA"
    assert body["cancelled_at"] == "2026-11-20T10:00:00Z"
    assert body["survey_url"].startswith("http://survey.test/s/")
    assert "response" not in body and "consent" not in body  # no responses:read
    assert first.headers["Location"] == f"/api/v1/departures/{body['id']}"

    again = client.post("/api/v1/departures", json=VALID, headers=writer)
    assert again.status_code == 200
    assert again.get_json()["id"] == body["id"]
    assert count(session, Departure) == 1
    assert count(session, OutboxMessage) == 1


def test_a_known_external_id_shows_answers_only_to_a_token_that_may_read_them(
    app, client, writer
):
    created = client.post("/api/v1/departures", json=VALID, headers=writer)
    survey = path_of(created.get_json()["survey_url"])
    submit(client, survey, {"reason": "other", "reason_other": "Your CEO was rude"})
    submit(client, survey + "/more", {"details": "private", "winback_consent": "y"})

    again = client.post("/api/v1/departures", json=VALID, headers=writer)
    assert again.status_code == 200
    assert "response" not in again.get_json()
    assert "consent" not in again.get_json()
    assert "survey_url" not in again.get_json()  # it would show them, editable
    assert "Your CEO" not in again.get_data(as_text=True)

    reader = auth(make_token(app, "departures:write", "responses:read"))
    body = client.post("/api/v1/departures", json=VALID, headers=reader).get_json()
    assert body["response"]["reason_other"] == "Your CEO was rude"
    assert body["consent"]["state"] == "granted"


def test_the_public_id_is_random_not_the_integer_key(client, writer, session):
    body = client.post("/api/v1/departures", json=VALID, headers=writer).get_json()
    departure = session.scalar(select(Departure))
    assert body["id"] == departure.public_id
    assert body["id"] != str(departure.id)
    assert len(body["id"]) >= 16


def test_concurrent_identical_requests_record_one_departure_and_one_email(
    app, writer, session
):
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(
            client.post("/api/v1/departures", json=VALID, headers=writer).status_code
        )

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 9 + [201]
    assert count(session, Departure) == 1
    assert count(session, OutboxMessage) == 1


def test_a_repeat_with_other_facts_keeps_the_first_and_says_which_differ(
    client, writer, caplog
):
    first = client.post("/api/v1/departures", json=VALID, headers=writer).get_json()
    changed = VALID | {"company": "Acme Renamed", "mrr_cents": 1}
    with caplog.at_level(logging.WARNING, logger="survey.departures.service"):
        again = client.post("/api/v1/departures", json=changed, headers=writer)
    assert again.status_code == 200
    assert again.get_json()["company"] == first["company"]
    assert "different company, mrr_cents" in caplog.text
    assert "Acme Renamed" not in caplog.text  # names only, no customer data
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="survey.departures.service"):
        client.post("/api/v1/departures", json=VALID, headers=writer)
    assert "different" not in caplog.text


def test_get_shows_the_departure(client, app, writer):
    created = client.post("/api/v1/departures", json=VALID, headers=writer).get_json()
    reader = auth(make_token(app, "responses:read"))
    got = client.get(f"/api/v1/departures/{created['id']}", headers=reader)
    assert got.status_code == 200
    assert got.get_json()["company"] == "Acme Inc."
    # The link answers as the customer: only the POST that recorded it gets it.
    assert "survey_url" not in got.get_json()
    assert got.get_json()["review_status"] is None  # not answered: not queued yet
    submit(client, path_of(created["survey_url"]), {"reason": "switched"})
    shown = client.get(f"/api/v1/departures/{created['id']}", headers=reader)
    assert shown.get_json()["review_status"] == "new"


def test_reading_answers_needs_the_responses_scope(client, writer):
    created = client.post("/api/v1/departures", json=VALID, headers=writer).get_json()
    response = client.get(f"/api/v1/departures/{created['id']}", headers=writer)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_unknown_departure_is_a_json_404(client, app):
    reader = auth(make_token(app, "responses:read"))
    response = client.get("/api/v1/departures/nope", headers=reader)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer es_not-a-real-token"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ],
)
def test_missing_or_unknown_token_is_401(client, headers, status):
    response = client.post("/api/v1/departures", json=VALID, headers=headers)
    assert response.status_code == status
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_wrong_scope_is_403_and_records_nothing(client, app, session):
    reader = auth(make_token(app, "winback:read"))
    response = client.post("/api/v1/departures", json=VALID, headers=reader)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert count(session, Departure) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contact_email": "not-an-email"}, "contact_email"),
        ({"contact_email": None}, "contact_email"),
        ({"mrr_cents": -1}, "mrr_cents"),
        ({"mrr_cents": "100"}, "mrr_cents"),
        ({"mrr_cents": 10.5}, "mrr_cents"),
        ({"mrr_cents": True}, "mrr_cents"),
        ({"currency": "XYZ"}, "currency"),
        ({"cancelled_at": "last tuesday"}, "cancelled_at"),
        ({"cancelled_at": 1700000000}, "cancelled_at"),
        ({"cancelled_at": "0001-01-01T00:00:00+05:00"}, "cancelled_at"),
        ({"cancelled_at": "9999-12-31T23:59:59-12:00"}, "cancelled_at"),
        ({"cancelled_at": "1066-10-14T09:00:00Z"}, "cancelled_at"),
        ({"external_id": 42}, "external_id"),
        ({"external_id": ""}, "external_id"),
        ({"company": "x" * 201}, "company"),
        ({"locale": "not a locale"}, "locale"),
        ({"csm_email": "csm@"}, "csm_email"),
        # PostgreSQL cannot store a NUL: it must be refused, not a 500.
        ({"company": "Acme\x00 Inc."}, "company"),
        ({"external_id": "sub\x00123"}, "external_id"),
        ({"billing_reason": "too\x00expensive"}, "billing_reason"),
        ({"segment": "smb\x1b[31m"}, "segment"),
    ],
)
def test_bad_input_is_422_with_field_messages(client, writer, session, change, field):
    response = client.post("/api/v1/departures", json=VALID | change, headers=writer)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid"
    assert list(body["fields"]) == [field]
    assert all(isinstance(m, str) and m for m in body["fields"][field])
    assert count(session, Departure) == 0


def test_a_nul_in_the_address_is_refused_as_json(client, app):
    reader = auth(make_token(app, "responses:read", "winback:read"))
    for path in (
        "/api/v1/departures/abc%00def",
        "/api/v1/winback/contacts?segment=a%00b",
        "/api/v1/winback/contacts.csv?plan=%00",
    ):
        response = client.get(path, headers=reader)
        assert response.status_code == 422, path
        assert response.get_json()["error"] == "invalid"


def test_a_form_body_is_not_read_before_the_token_is_checked(client):
    response = client.post("/api/v1/departures", data={"company": "a\x00b"})
    assert response.status_code == 401


def test_missing_fields_are_each_reported(client, writer):
    response = client.post("/api/v1/departures", json={"company": "x"}, headers=writer)
    assert response.status_code == 422
    fields = response.get_json()["fields"]
    assert fields["external_id"] == ["This field is required."]
    assert fields["contact_email"] == ["This field is required."]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"a string"', b""],
    ids=["broken", "array", "string", "empty"],
)
def test_a_body_that_is_not_a_json_object_is_422(client, writer, body):
    response = client.post(
        "/api/v1/departures", data=body, headers=writer, content_type="application/json"
    )
    assert response.status_code == 422
    assert response.get_json()["fields"]


def test_an_oversized_body_is_refused_with_json(client, writer, session):
    huge = json.dumps(VALID | {"billing_reason": "x" * 100_000})
    response = client.post(
        "/api/v1/departures", data=huge, headers=writer, content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
    assert "body" in response.get_json()["fields"]
    assert count(session, Departure) == 0


def test_errors_under_api_are_json_never_html(client, writer):
    not_found = client.get("/api/v1/nothing-here", headers=writer)
    assert not_found.status_code == 404
    assert not_found.is_json
    wrong_method = client.delete("/api/v1/departures", headers=writer)
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"] == "method_not_allowed"
    assert set(wrong_method.headers["Allow"].split(", ")) >= {"POST"}


def test_an_unexpected_failure_under_api_is_a_json_500(make_app, writer):
    app = make_app()

    @app.get("/api/v1/boom")
    def boom() -> str:
        raise RuntimeError("kaboom")

    response = app.test_client().get("/api/v1/boom")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_error",
        "message": "Something went wrong on our side.",
        "fields": {},
    }

"""Signed links: tampering, purpose, expiry, key rotation, length."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from itsdangerous import Signer, URLSafeTimedSerializer
from sqlalchemy import select

from survey import links, tokens
from survey.answers.models import Response
from survey.consent import ConsentEvent
from survey.db import new_public_id
from survey.departures.models import Departure
from tests.factories import (
    hidden_fields,
    make_departure,
    path_of,
    survey_path,
    withdraw_path,
)

ALPHABET = string.ascii_letters + string.digits + "-_"


def test_a_genuine_link_opens_the_survey(app, client):
    departure = make_departure(app)
    assert client.get(survey_path(app, departure)).status_code == 200


def test_changing_any_character_of_the_token_gives_a_friendly_404(app, client):
    departure = make_departure(app)
    path = survey_path(app, departure)
    prefix, token = path.rsplit("/", 1)
    for position, char in enumerate(token):
        # Every character, replaced by each of two others (a dot moved too).
        for replacement in {
            ALPHABET[(ALPHABET.find(char) + 1) % 64],
            "A" if char != "A" else "B",
        }:
            tampered = token[:position] + replacement + token[position + 1 :]
            response = client.get(f"{prefix}/{tampered}")
            assert response.status_code == 404, (position, char, replacement)
            assert "This link does not work" in response.get_data(as_text=True)
    for broken in (token[:-1], token + "A", token.replace(".", "", 1), "", "x.y.z"):
        assert client.get(f"{prefix}/{broken}").status_code == 404


def test_tampered_posts_are_refused_too(app, client, session):
    # Forged links that still name the departure, posted with the genuine
    # page's form (its form token is right): only the link check refuses them.
    departure = make_departure(app)
    path = survey_path(app, departure)
    prefix, token = path.rsplit("/", 1)
    form = hidden_fields(client.get(path).get_data(as_text=True))
    payload, stamp, signature = token.split(".")
    other = ALPHABET[(ALPHABET.find(signature[0]) + 1) % 64]
    withdraw_token = withdraw_path(app, departure).rsplit("/", 1)[1]
    with app.app_context():  # a genuine link, but for another purpose
        named = tokens.load_token(tokens.WITHDRAW_CONSENT, withdraw_token)
    assert named == departure.public_id
    for forged in (f"{payload}.{stamp}.{other}{signature[1:]}", withdraw_token):
        response = client.post(
            f"{prefix}/{forged}", data={**form, "reason": "too_expensive"}
        )
        assert response.status_code == 404, forged
        assert "This link does not work" in response.get_data(as_text=True)
    assert session.scalar(select(Response)) is None
    # The same form through the genuine link is taken: it was the link refused.
    response = client.post(path, data={**form, "reason": "too_expensive"})
    assert response.status_code == 303
    session.rollback()  # end the snapshot read above
    assert session.scalar(select(Response.reason)) == "too_expensive"


def test_a_withdrawal_token_is_not_a_survey_token_and_back(app, client):
    departure = make_departure(app)
    survey_token = survey_path(app, departure).rsplit("/", 1)[1]
    withdraw_token = withdraw_path(app, departure).rsplit("/", 1)[1]
    assert client.get(f"/s/{withdraw_token}").status_code == 404
    assert client.get(f"/w/{survey_token}").status_code == 404
    assert client.get(f"/w/{withdraw_token}").status_code == 200


def test_an_unknown_departure_in_a_genuine_signature_is_404(app, client):
    with app.test_request_context():
        path = path_of(links.survey_url("no-such-departure"))
    assert client.get(path).status_code == 404


def test_a_link_expires_after_the_configured_days(make_app, clock):
    app = make_app(LINK_MAX_AGE_DAYS=30)
    client = app.test_client()
    departure = make_departure(app)
    path = survey_path(app, departure)
    clock.advance(days=30, seconds=-1)
    assert client.get(path).status_code == 200
    clock.advance(seconds=2)
    response = client.get(path)
    assert response.status_code == 410
    page = response.get_data(as_text=True)
    assert "This link has expired" in page
    assert "Send me a new link" in page


def test_expired_post_records_nothing(app, client, clock, session):
    departure = make_departure(app)
    path = survey_path(app, departure)
    page = client.get(path).get_data(as_text=True)
    clock.advance(days=31)
    from tests.factories import csrf_token

    response = client.post(
        path, data={"csrf_token": csrf_token(page), "reason": "other"}
    )
    assert response.status_code == 410
    assert session.scalar(select(Response)) is None


def test_withdrawal_links_outlive_survey_links(app, client, clock):
    departure = make_departure(app)
    path = withdraw_path(app, departure)
    clock.advance(days=365)
    assert client.get(path).status_code == 200


def test_rotation_keeps_old_links_working_while_the_key_is_a_fallback(make_app):
    old = make_app(SECRET_KEY="old-key")
    departure = make_departure(old)
    path = survey_path(old, departure)

    rotated = make_app(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    assert rotated.test_client().get(path).status_code == 200
    # New links are signed with the new key...
    new_path = survey_path(rotated, departure)
    assert new_path != path
    assert make_app(SECRET_KEY="new-key").test_client().get(new_path).status_code == 200
    # ...and once the old key is dropped, its links stop working.
    dropped = make_app(SECRET_KEY="new-key")
    assert dropped.test_client().get(path).status_code == 404


def test_a_page_drawn_before_a_key_rotation_can_still_be_answered(make_app):
    old = make_app(SECRET_KEY="old-key")
    departure = make_departure(old)
    with old.test_request_context():
        drawn = tokens.form_token(departure.public_id)  # on the page, in the form
    answer = {"csrf_token": drawn, "reason": "too_expensive"}
    rotated = make_app(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    with rotated.test_request_context():
        assert tokens.form_token(departure.public_id) != drawn  # signed anew
    posted = rotated.test_client().post(survey_path(rotated, departure), data=answer)
    assert posted.status_code == 303
    # Once the old key is dropped, a form it signed is refused.
    dropped = make_app(SECRET_KEY="new-key")
    refused = dropped.test_client().post(survey_path(dropped, departure), data=answer)
    assert refused.status_code == 400


def test_a_link_read_before_is_judged_again_each_time(make_app, clock):
    # Genuine tokens are remembered once checked (tokens.VERIFIED_LINKS):
    # their age and their key must still count on every read.
    old = make_app(SECRET_KEY="old-key")
    departure = make_departure(old)
    path = survey_path(old, departure)
    rotated = make_app(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    client = rotated.test_client()
    for _ in range(3):
        assert client.get(path).status_code == 200
    clock.advance(days=rotated.config["LINK_MAX_AGE_DAYS"], seconds=1)
    assert client.get(path).status_code == 410
    clock.advance(days=-1)
    assert client.get(path).status_code == 200
    clock.advance(days=-rotated.config["LINK_MAX_AGE_DAYS"])  # signed "tomorrow"
    assert client.get(path).status_code == 410
    clock.advance(days=1)
    assert make_app(SECRET_KEY="new-key").test_client().get(path).status_code == 404
    assert client.get(path).status_code == 200


def test_the_whole_survey_url_fits_in_100_characters(make_app):
    base = "https://survey.example-co.com/"
    assert len(base) == 30
    app = make_app(BASE_URL=base)
    departure = make_departure(app)
    with app.test_request_context():
        url = links.survey_url(departure.public_id)
    assert url.startswith("https://survey.example-co.com/s/")
    assert len(url) <= 100, url


@pytest.mark.parametrize("purpose_path", [survey_path, withdraw_path])
def test_opening_a_link_records_no_answer_or_consent(
    app, client, session, purpose_path
):
    departure = make_departure(app)
    client.get(purpose_path(app, departure))
    assert session.scalar(select(Response)) is None
    assert session.scalar(select(ConsentEvent)) is None
    assert session.get(Departure, departure.id) is not None


@pytest.mark.parametrize("purpose", [tokens.SURVEY, tokens.WITHDRAW_CONSENT])
def test_links_are_what_stock_itsdangerous_signs_and_reads(app, clock, purpose):
    # Links already sent must keep working whatever we do to sign faster.
    salt = tokens._SALTS[purpose]
    stock = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=salt)
    public_id = new_public_id()
    with app.test_request_context():
        ours = tokens.make_token(purpose, public_id)
        assert stock.loads(ours) == public_id
        theirs = stock.dumps(public_id)  # stamped with the real time, not ours
        clock.current = datetime.now(UTC) + timedelta(seconds=1)
        assert tokens.load_token(purpose, theirs) == public_id
        assert tokens.is_form_token(public_id, tokens.form_token(public_id))
        form_stock = Signer(app.config["SECRET_KEY"], salt=tokens._FORM_SALT)
        assert form_stock.get_signature(public_id).decode() == tokens.form_token(
            public_id
        )

"""The customer's survey: page 1, page 2, consent, editing, withdrawal, renewal."""

from __future__ import annotations

import logging
import re
import threading
from html import unescape

import pytest
from sqlalchemy import func, select

from survey.answers.models import Response
from survey.consent import WORDING_VERSION, ConsentEvent
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from survey.wording.service import BUILT_IN_CONSENT
from tests.factories import (
    FOLLOW_UP,
    auth,
    csrf_token,
    hidden_fields,
    make_departure,
    make_token,
    path_of,
    submit,
    survey_path,
    withdraw_path,
)


def responses(session) -> list[Response]:
    session.rollback()  # end the read snapshot (SQLite WAL keeps it)
    return list(session.scalars(select(Response)))


def consent_events(session) -> list[ConsentEvent]:
    session.rollback()  # end the read snapshot (SQLite WAL keeps it)
    return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


@pytest.fixture
def departure(app):
    return make_departure(app, contact_name="Ada", company="Acme")


@pytest.fixture
def page1(app, departure) -> str:
    return survey_path(app, departure)


def test_page_1_asks_only_the_one_question(client, page1):
    page = client.get(page1).get_data(as_text=True)
    assert "What is the main reason you are leaving?" in page
    assert (
        '<legend class="question"><h1>What is the main reason you are leaving?</h1>'
        in page
    )
    assert page.count('type="radio" ') == 10
    assert 'name="reason_other"' in page
    assert "winback_consent" not in page
    assert "factors" not in page


def test_page_1_is_in_the_customers_language_also_with_their_own_words(app, client):
    departure = make_departure(app, locale="fr")
    page1 = survey_path(app, departure)
    lang = '<html lang="fr">'
    assert lang in client.get(page1).get_data(as_text=True)  # the shared page
    submit(client, page1, {"reason": "other", "reason_other": "Trop cher"})
    assert lang in client.get(page1).get_data(as_text=True)  # their words shown
    refused = submit(client, page1, {"reason": "bogus"}).get_data(as_text=True)
    assert lang in refused


def test_get_records_only_the_first_opened_time(
    client, page1, session, departure, clock
):
    client.get(page1)
    opened = session.get(Departure, departure.id).first_opened_at
    assert opened == clock()
    clock.advance(hours=1)
    client.get(page1)
    session.rollback()  # end the read snapshot (SQLite WAL keeps it)
    assert session.get(Departure, departure.id).first_opened_at == opened
    assert responses(session) == []
    assert consent_events(session) == []


def test_a_reason_clicked_in_the_email_is_confirmed_before_it_counts(
    client, page1, session
):
    """A GET records nothing (mail scanners follow links); the POST does."""
    page = client.get(page1 + "?reason=switched").get_data(as_text=True)
    assert "You chose:" in page
    assert '<p class="chosen">We found a better alternative</p>' in page
    assert '<input type="hidden" name="reason" value="switched">' in page
    assert ">Send this answer</button>" in page
    assert f'<a href="{page1}">Choose another answer</a>' in page
    assert responses(session) == []

    sent = submit(client, page1 + "?reason=switched", {}, action=page1)
    assert sent.status_code == 303
    assert sent.headers["Location"].endswith(page1 + "/more")
    [saved] = responses(session)
    assert saved.reason == "switched"


def test_an_unknown_reason_in_the_link_shows_the_question(client, page1, session):
    page = client.get(page1 + "?reason=evil").get_data(as_text=True)
    assert "What is the main reason you are leaving?" in page
    assert "You chose:" not in page
    assert " checked" not in page
    assert responses(session) == []


def test_a_reason_link_never_replaces_a_saved_answer_silently(
    client, page1, session, clock
):
    submit(client, page1, {"reason": "too_expensive"})
    page = client.get(page1 + "?reason=switched").get_data(as_text=True)
    assert "Change your answer?" in page
    answered = f"{clock():%B} {clock().day}, {clock().year}"  # as English writes it
    assert f"On {answered} you answered: <strong>It costs more than" in page
    assert '<p class="chosen">We found a better alternative</p>' in page
    assert ">Change my answer</button>" in page
    assert f'<a href="{page1}/more">Keep my earlier answer</a>' in page
    assert f'<a href="{page1}">Choose another answer</a>' in page
    [saved] = responses(session)
    assert saved.reason == "too_expensive"

    submit(client, page1 + "?reason=switched", {}, action=page1)
    [saved] = responses(session)
    assert saved.reason == "switched"


def test_a_reason_link_to_the_answer_already_given_says_so(client, page1, session):
    submit(client, page1, {"reason": "too_expensive"})
    page = client.get(page1 + "?reason=too_expensive").get_data(as_text=True)
    assert "You have already given this answer" in page
    assert "<form" not in page.split("<main", 1)[1]
    assert f'<a class="button" href="{page1}/more">' in page


def test_something_else_clicked_in_the_email_asks_for_the_words(client, page1, session):
    page = client.get(page1 + "?reason=other").get_data(as_text=True)
    assert 'name="reason_other"' in page
    refused = submit(client, page1 + "?reason=other", {}, action=page1)
    assert refused.status_code == 200
    assert "Please tell us the reason" in refused.get_data(as_text=True)
    assert responses(session) == []
    submit(client, page1 + "?reason=other", {"reason_other": "Moving to paper"}, page1)
    [saved] = responses(session)
    assert (saved.reason, saved.reason_other) == ("other", "Moving to paper")


def test_changing_the_answer_from_a_reason_link_keeps_the_customers_own_words(
    client, page1, session
):
    words = "We pay 3x what Globex charges"
    submit(client, page1, {"reason": "too_expensive", "reason_other": words})
    page = client.get(page1 + "?reason=switched").get_data(as_text=True)
    assert ">Change my answer</button>" in page
    assert 'name="reason_other"' not in page  # the confirmation asks for no words
    assert (
        submit(client, page1 + "?reason=switched", {}, action=page1).status_code == 303
    )
    [saved] = responses(session)
    assert (saved.reason, saved.reason_other) == ("switched", words)
    # "Something else" asks for words: those given there are the answer's now.
    submit(client, page1 + "?reason=other", {"reason_other": "Moving to paper"}, page1)
    [saved] = responses(session)
    assert (saved.reason, saved.reason_other) == ("other", "Moving to paper")


def test_own_words_cleared_on_page_1_are_gone_whatever_else_is_posted(
    client, page1, session
):
    submit(client, page1, {"reason": "too_expensive", "reason_other": "Too dear"})
    submit(client, page1, {"reason": "switched", "reason_other": ""})
    [saved] = responses(session)
    assert (saved.reason, saved.reason_other) == ("switched", None)
    # The confirmation's marker added to page 1's post keeps nothing cleared.
    submit(client, page1, {"reason": "switched", "reason_other": "Too dear"})
    submit(
        client, page1, {"reason": "switched", "reason_other": "", "own_words": "kept"}
    )
    [saved] = responses(session)
    assert (saved.reason, saved.reason_other) == ("switched", None)


def test_page_2_does_not_ask_again_about_the_main_reason(client, page1, session):
    more = submit(client, page1, {"reason": "missing_features"}).headers["Location"]
    page = client.get(more).get_data(as_text=True)
    assert 'id="factors-too_expensive"' in page
    assert 'id="factors-missing_features"' not in page
    # Posted anyway (a tab left open on another main reason): dropped.
    submit(client, more, {"factors": ["missing_features", "too_expensive"]})
    [saved] = responses(session)
    assert saved.factors == ["too_expensive"]


def test_page_2_asks_about_the_alternative_once(app, client, page1, departure):
    """After "We found a better alternative", which one is asked where the
    API keeps it (destination, destination_name); the follow-up asks why."""
    more = submit(client, page1, {"reason": "switched"}).headers["Location"]
    page = unescape(client.get(more).get_data(as_text=True))
    assert re.findall(r"\bwhich (?:one|alternative)\b", page, re.I) == ["which one"]
    assert page.count('name="destination_name"') == 1
    assert "What made the alternative better for you?" in page
    sent = submit(
        client,
        more,
        {
            "destination": "competitor",
            "destination_name": "Globex",
            "follow_up": "Cheaper",
        },
    )
    assert sent.status_code == 303
    api = client.get(
        f"/api/v1/departures/{departure.public_id}",
        headers=auth(make_token(app, "responses:read")),
    )
    assert api.status_code == 200
    expected = {
        "reason": "switched",
        "destination": "competitor",
        "destination_name": "Globex",
        "follow_up_reason": "switched",
        "follow_up_answer": "Cheaper",
    }
    answers = api.get_json()["response"]
    assert {name: answers[name] for name in expected} == expected


def test_without_scripts_which_one_is_labelled_optional_for_that_choice(client, page1):
    more = submit(client, page1, {"reason": "switched"}).headers["Location"]
    page = client.get(more).get_data(as_text=True)
    # Served shown, with its condition in its label (survey.js hides it
    # until "Another product" is chosen).
    assert re.search(
        r'<div data-shown-for="destination=competitor">\s*<div class="field">\s*'
        r'<label for="destination_name">If another product, which one\? '
        r"\(optional\)</label>",
        page,
    )
    assert '<label for="destination-competitor">Another product</label>' in page


def test_words_given_with_any_reason_are_kept(client, page1, session):
    submit(
        client,
        page1,
        {"reason": "too_expensive", "reason_other": "We pay 3x what Globex charges"},
    )
    [saved] = responses(session)
    assert (saved.reason, saved.reason_other) == (
        "too_expensive",
        "We pay 3x what Globex charges",
    )
    thanks = client.get(page1 + "/thanks").get_data(as_text=True)
    assert "We pay 3x what Globex charges" in thanks


def test_posting_page_1_saves_the_answer_at_once(client, page1, session):
    response = submit(client, page1, {"reason": "too_expensive"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/more")
    [saved] = responses(session)
    assert saved.reason == "too_expensive"
    assert saved.reason_other is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Please choose one answer."),
        ({"reason": "bogus"}, "Not a valid choice"),
        ({"reason": "other", "reason_other": "  "}, "Please tell us the reason"),
        ({"reason": "other", "reason_other": "x" * 1001}, "1000"),
    ],
)
def test_page_1_explains_what_is_wrong_and_saves_nothing(
    client, page1, session, data, message
):
    response = submit(client, page1, data)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert responses(session) == []


def test_a_missing_answer_gets_one_message_not_two(client, page1):
    html = submit(client, page1, {}).get_data(as_text=True)
    assert "Please choose one answer." in html
    assert "Not a valid choice" not in html


def test_other_keeps_its_text(client, page1, session):
    submit(client, page1, {"reason": "other", "reason_other": "We were acquired"})
    assert responses(session)[0].reason_other == "We were acquired"


def test_page_2_saves_follow_ups_and_consent_with_its_wording(client, page1, session):
    submit(client, page1, {"reason": "missing_features"})
    page2 = page1 + "/more"
    html = client.get(page2).get_data(as_text=True)
    assert "Which feature were you missing most?" in html
    assert 'name="winback_consent" value="y">' in html  # unchecked by default
    assert BUILT_IN_CONSENT in html
    response = submit(
        client,
        page2,
        {
            "factors": ["too_expensive", "product_issues"],
            "details": "Needed SSO",
            "destination": "competitor",
            "destination_name": "Globex",
            "follow_up": FOLLOW_UP,
            "winback_consent": "y",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/thanks")
    [saved] = responses(session)
    assert saved.factors == ["too_expensive", "product_issues"]
    assert (saved.destination, saved.destination_name) == ("competitor", "Globex")
    assert saved.follow_up_reason == "missing_features"
    assert saved.follow_up_answer == FOLLOW_UP
    [granted] = consent_events(session)
    assert granted.action == "granted"
    assert granted.channel == "survey"
    assert granted.wording == BUILT_IN_CONSENT
    assert granted.wording_version == WORDING_VERSION


def test_a_yes_to_an_older_consent_wording_is_asked_again(client, page1, session):
    submit(client, page1, {"reason": "switched"})
    page2 = page1 + "/more"
    html = client.get(page2).get_data(as_text=True)
    old_page = hidden_fields(html) | {"consent_version": "2020-01-v0"}
    answer = client.post(
        page2, data=old_page | {"winback_consent": "y", "details": "Kept"}
    )
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "wording of this question has changed" in page
    assert f'name="consent_version" value="{WORDING_VERSION}"' in page
    assert 'name="winback_consent" value="y">' in page  # unticked, to decide again
    assert "Kept" in page  # the other answers wait on the page
    assert consent_events(session) == []


def test_a_follow_up_answer_is_not_shown_under_another_reason_question(
    client, page1, session
):
    submit(client, page1, {"reason": "too_expensive"})
    submit(client, page1 + "/more", {"follow_up": "Half the price"})
    assert "Half the price" in client.get(page1 + "/more").get_data(as_text=True)
    submit(client, page1, {"reason": "missing_features"})
    page = client.get(page1 + "/more").get_data(as_text=True)
    assert "Which feature were you missing most?" in page
    assert "Half the price" not in page
    [saved] = responses(session)  # kept, with the question it answered
    assert (saved.follow_up_reason, saved.follow_up_answer) == (
        "too_expensive",
        "Half the price",
    )


def test_page_2_without_consent_records_no_consent_event(client, page1, session):
    submit(client, page1, {"reason": "switched"})
    submit(client, page1 + "/more", {"destination": "none"})
    assert consent_events(session) == []
    assert responses(session)[0].destination == "none"


def test_page_2_rejects_unknown_codes(client, page1, session):
    submit(client, page1, {"reason": "switched"})
    response = submit(
        client, page1 + "/more", {"factors": ["hacked"], "destination": "mars"}
    )
    assert response.status_code == 200
    assert responses(session)[0].factors == []


def test_page_2_before_page_1_goes_back_to_page_1(client, page1):
    response = client.get(page1 + "/more")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(page1.rsplit("/", 1)[1])


def test_reopening_shows_the_answers_and_lets_them_change(client, page1, session):
    submit(client, page1, {"reason": "too_expensive"})
    submit(client, page1 + "/more", {"winback_consent": "y", "details": "Too dear"})

    again = client.get(page1).get_data(as_text=True)
    assert 'value="too_expensive" checked' in again
    assert "You said we may contact you" in again
    page2 = client.get(page1 + "/more").get_data(as_text=True)
    assert 'name="winback_consent" value="y" checked' in page2
    assert "Too dear" in page2

    submit(client, page1, {"reason": "poor_service"})
    submit(client, page1 + "/more", {"details": "Too dear"})  # consent unticked
    [saved] = responses(session)
    assert saved.reason == "poor_service"
    assert [e.action for e in consent_events(session)] == ["granted", "withdrawn"]
    assert "No" in client.get(page1 + "/thanks").get_data(as_text=True)

    submit(client, page1 + "/more", {"winback_consent": "y"})
    assert [e.action for e in consent_events(session)] == [
        "granted",
        "withdrawn",
        "granted",
    ]


def test_a_page_2_left_open_does_not_undo_a_withdrawal_made_since(
    app, client, departure, page1, session
):
    submit(client, page1, {"reason": "too_expensive"})
    submit(client, page1 + "/more", {"winback_consent": "y"})
    page2 = client.get(page1 + "/more").get_data(as_text=True)  # a tab left open
    withdrawal = withdraw_path(app, departure)
    submit(client, withdrawal, {})  # "don't contact me", from the email

    saved = client.post(
        page1 + "/more",
        data=hidden_fields(page2) | {"winback_consent": "y", "details": "Later note"},
    )
    assert saved.status_code == 303
    assert [e.action for e in consent_events(session)] == ["granted", "withdrawn"]
    assert responses(session)[0].details == "Later note"


def test_a_page_2_left_open_does_not_undo_a_grant_made_since(client, page1, session):
    submit(client, page1, {"reason": "too_expensive"})
    page2 = client.get(page1 + "/more").get_data(as_text=True)  # box unticked
    submit(client, page1 + "/more", {"winback_consent": "y"})  # in another tab

    client.post(page1 + "/more", data=hidden_fields(page2) | {"details": "Note"})
    assert [e.action for e in consent_events(session)] == ["granted"]


def test_a_follow_up_answer_stays_with_the_question_it_answers(client, page1, session):
    submit(client, page1, {"reason": "missing_features"})
    page2 = client.get(page1 + "/more").get_data(as_text=True)  # a tab left open
    assert "Which feature were you missing most?" in page2
    submit(client, page1, {"reason": "switched"})  # changed in another tab

    client.post(
        page1 + "/more", data=hidden_fields(page2) | {"follow_up": "SAML sign-on"}
    )
    [saved] = responses(session)
    assert saved.reason == "switched"
    assert (saved.follow_up_reason, saved.follow_up_answer) == (
        "missing_features",
        "SAML sign-on",
    )
    now = client.get(page1 + "/more").get_data(as_text=True)
    assert "What made the alternative better for you?" in now
    assert "SAML sign-on" not in now  # not offered as the answer to another question


def test_a_stale_page_2_without_a_follow_up_keeps_the_stored_one(
    client, page1, session
):
    submit(client, page1, {"reason": "missing_features"})
    page2 = client.get(page1 + "/more").get_data(as_text=True)  # a tab left open
    submit(client, page1, {"reason": "switched"})  # in another tab...
    submit(client, page1 + "/more", {"follow_up": "Globex, cheaper"})  # ...answered

    # As a browser sends it: the follow-up box, left empty.
    client.post(
        page1 + "/more",
        data=hidden_fields(page2) | {"details": "Later", "follow_up": ""},
    )
    [saved] = responses(session)
    assert (saved.follow_up_reason, saved.follow_up_answer) == (
        "switched",
        "Globex, cheaper",
    )
    assert saved.details == "Later"


def test_a_stale_page_2_does_not_replace_an_answer_to_the_new_question(
    client, page1, session
):
    submit(client, page1, {"reason": "missing_features"})
    submit(client, page1 + "/more", {"follow_up": "SAML"})
    page2 = client.get(page1 + "/more").get_data(as_text=True)  # "SAML" shown
    submit(client, page1, {"reason": "switched"})  # in another tab...
    submit(client, page1 + "/more", {"follow_up": "Globex"})  # ...answered

    client.post(page1 + "/more", data=hidden_fields(page2) | {"follow_up": "SAML"})
    [saved] = responses(session)
    assert (saved.follow_up_reason, saved.follow_up_answer) == ("switched", "Globex")


def test_thanks_page_shows_what_was_kept(client, page1):
    submit(client, page1, {"reason": "other", "reason_other": "Moved to paper"})
    page = client.get(page1 + "/thanks").get_data(as_text=True)
    assert "Thank you" in page
    assert "Moved to paper" in page
    assert "Change my answers" in page


def test_twenty_simultaneous_first_answers_make_one_response(app, page1, session):
    client = app.test_client()
    token = csrf_token(client.get(page1).get_data(as_text=True))
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def post(reason: str) -> None:
        own = app.test_client()  # no cookie: the form token is the link's
        barrier.wait()
        statuses.append(
            own.post(page1, data={"csrf_token": token, "reason": reason}).status_code
        )

    reasons = ["too_expensive", "switched"] * 10
    threads = [threading.Thread(target=post, args=(r,)) for r in reasons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [303] * 20
    assert session.scalar(select(func.count()).select_from(Response)) == 1


def test_a_post_without_the_csrf_token_is_refused(client, page1, session):
    client.get(page1)
    response = client.post(page1, data={"reason": "too_expensive"})
    assert response.status_code == 400
    assert "expired" in response.get_data(as_text=True).lower()
    assert responses(session) == []


def test_a_nul_in_an_answer_is_refused_with_a_page(client, page1, session):
    refused = submit(client, page1, {"reason": "other", "reason_other": "a\x00b"})
    assert refused.status_code == 422
    assert "We could not use what you sent" in refused.get_data(as_text=True)
    assert responses(session) == []


def test_survey_pages_set_no_cookie(app, client, page1, departure):
    assert "Set-Cookie" not in client.get(page1).headers
    answered = submit(client, page1, {"reason": "too_expensive"})
    assert answered.status_code == 303
    assert "Set-Cookie" not in answered.headers
    for path in (page1 + "/more", page1 + "/thanks", withdraw_path(app, departure)):
        assert "Set-Cookie" not in client.get(path).headers, path


def test_a_form_token_works_only_for_its_own_link(app, page1, session):
    other = survey_path(app, make_departure(app))
    fresh = app.test_client()  # no cookie, as from an email client
    token = csrf_token(fresh.get(other).get_data(as_text=True))
    refused = fresh.post(page1, data={"csrf_token": token, "reason": "switched"})
    assert refused.status_code == 400
    assert responses(session) == []
    own = csrf_token(fresh.get(page1).get_data(as_text=True))
    saved = fresh.post(page1, data={"csrf_token": own, "reason": "switched"})
    assert saved.status_code == 303
    assert [r.reason for r in responses(session)] == ["switched"]


def test_each_link_gets_its_own_page_though_pages_are_rendered_once(app, client):
    first, second = (make_departure(app) for _ in range(2))
    pages = {}
    for departure in (first, second, first):
        path = survey_path(app, departure)
        submit(client, path, {"reason": "switched"})
        pages[path] = client.get(path).get_data(as_text=True)
    first_page, second_page = pages.values()
    first_path, second_path = pages
    assert csrf_token(first_page) != csrf_token(second_page)
    assert f'href="{first_path}/more"' in first_page
    assert f'href="{second_path}/more"' in second_page
    assert second_path not in first_page and first_path not in second_page
    # Each page's form token is its own link's: posting it works.
    answer = {"csrf_token": csrf_token(second_page), "reason": "switched"}
    assert client.post(second_path, data=answer).status_code == 303


def test_an_answer_to_an_erased_departure_keeps_nothing(
    app, client, departure, page1, session
):
    from survey.review_items import ReviewItem

    token = csrf_token(client.get(page1).get_data(as_text=True))
    with app.app_context():
        from survey import db
        from survey.contacts import erase_person

        with db.write_session() as writer:
            erase_person(writer, departure.contact_email, actor_id=None, via="cli")
            writer.commit()
    answered = client.post(page1, data={"csrf_token": token, "reason": "switched"})
    assert client.get(answered.headers["Location"]).status_code == 410
    assert responses(session) == []
    assert session.scalar(select(func.count()).select_from(ReviewItem)) == 0


def test_a_filled_honeypot_saves_nothing(client, page1, session):
    response = submit(
        client, page1, {"reason": "too_expensive", "website": "http://spam"}
    )
    assert response.status_code == 303
    assert responses(session) == []


def test_customer_text_is_escaped(client, page1):
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    submit(client, page1, {"reason": "other", "reason_other": evil})
    for page in (page1, page1 + "/thanks"):
        html = client.get(page).get_data(as_text=True)
        assert "<script>alert(1)" not in html
        assert 'onerror="alert' not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_survey_pages_carry_the_security_headers(client, page1):
    headers = client.get(page1).headers
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


def test_withdrawal_asks_first_then_records(app, client, departure, session):
    path = withdraw_path(app, departure)
    page = client.get(path).get_data(as_text=True)
    assert "Confirm" in page
    assert consent_events(session) == []
    response = client.post(path, data={"csrf_token": csrf_token(page)})
    assert response.status_code == 200
    assert "We will not contact you" in response.get_data(as_text=True)
    [withdrawn] = consent_events(session)
    assert (withdrawn.action, withdrawn.channel) == ("withdrawn", "withdrawal_link")
    assert withdrawn.wording == "Please do not contact me about coming back."


def test_no_link_in_the_email_records_anything_when_opened(
    app, client, departure, session
):
    body = session.scalar(select(OutboxMessage.body_text))
    urls = re.findall(r"https?://\S+", body)
    assert len(urls) == 12  # ten reasons, the survey, the withdrawal link
    for url in urls:
        assert client.get(path_of(url)).status_code == 200
    assert responses(session) == []
    assert consent_events(session) == []


def test_an_expired_link_of_an_erased_person_offers_no_fresh_link(
    app, client, departure, page1, clock
):
    runner = app.test_cli_runner()
    erased = runner.invoke(args=["contacts", "erase", departure.contact_email])
    assert erased.exit_code == 0
    clock.advance(days=31)
    page = client.get(page1)
    assert page.status_code == 410
    assert "/renew" not in page.get_data(as_text=True)
    assert "no longer works" in page.get_data(as_text=True)


def test_an_expired_link_can_send_a_fresh_one_once_an_hour(
    app, client, departure, page1, clock, session
):
    clock.advance(days=31)
    page = client.get(page1)
    assert page.status_code == 410
    token = csrf_token(page.get_data(as_text=True))

    def renew(path: str = page1):
        return client.post(path + "/renew", data={"csrf_token": token})

    def fresh_links() -> int:
        session.rollback()
        return session.scalar(
            select(func.count()).where(OutboxMessage.kind == "fresh_link")
        )

    first = renew()
    assert first.status_code == 200
    assert fresh_links() == 1
    second = renew()
    assert second.get_data() == first.get_data()
    assert fresh_links() == 1
    clock.advance(minutes=61)
    renew()
    assert fresh_links() == 2
    # A tampered link gets the very same answer and sends nothing.
    tampered = renew(page1[:-3] + "abc")
    assert tampered.status_code == 200
    assert tampered.get_data() == first.get_data()
    assert fresh_links() == 2

    session.rollback()  # end the read snapshot (SQLite WAL keeps it)
    message = session.scalar(
        select(OutboxMessage).where(OutboxMessage.kind == "fresh_link")
    )
    new_link = path_of(re.search(r"https?://\S+/s/\S+", message.body_text).group(0))
    assert client.get(new_link).status_code == 200


def fresh_link_count(session) -> int:
    session.rollback()
    return session.scalar(
        select(func.count()).where(OutboxMessage.kind == "fresh_link")
    )


def test_twenty_simultaneous_requests_for_a_fresh_link_send_one(
    app, departure, page1, clock, session
):
    clock.advance(days=31)
    client = app.test_client()
    token = csrf_token(client.get(page1).get_data(as_text=True))
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def renew() -> None:
        own = app.test_client()
        barrier.wait()
        statuses.append(
            own.post(page1 + "/renew", data={"csrf_token": token}).status_code
        )

    threads = [threading.Thread(target=renew) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 20
    assert fresh_link_count(session) == 1


def test_an_expired_withdrawal_link_can_send_a_fresh_link_too(
    app, client, departure, clock, session
):
    path = withdraw_path(app, departure)
    clock.advance(days=3651)
    page = client.get(path)
    assert page.status_code == 410
    html = page.get_data(as_text=True)
    action = re.search(r'<form[^>]*action="([^"]+)"', html).group(1)
    assert client.post(action, data={"csrf_token": csrf_token(html)}).status_code == 200
    assert fresh_link_count(session) == 1


def test_a_failure_on_a_survey_page_is_logged_without_the_token(make_app, caplog):
    app = make_app()

    @app.get("/s/<token>/boom")
    def boom(token: str) -> str:
        raise RuntimeError("kaboom")

    token = "QWxpY2UncyBzZWNyZXQgdG9rZW4.aBcDeF.signature"
    with caplog.at_level(logging.ERROR, logger="survey.errors"):
        response = app.test_client().get(f"/s/{token}/boom")
    assert response.status_code == 500
    assert "kaboom" in caplog.text  # the traceback is there to debug with
    assert "/s/<token>/boom" in caplog.text
    assert token not in caplog.text


def test_which_product_is_not_kept_when_another_destination_is_chosen(
    client, page1, session
):
    """The "Which one?" box hides when the customer moves off "Another product" (or
    stays, without scripts): what they typed there first is not saved."""
    more = submit(client, page1, {"reason": "switched"}).headers["Location"]
    chosen = {"destination": "in_house", "destination_name": "Globex"}
    assert submit(client, more, chosen).status_code == 303
    [saved] = responses(session)
    assert (saved.destination, saved.destination_name) == ("in_house", None)
    # With "Another product" it is kept.
    submit(client, more, {"destination": "competitor", "destination_name": "Globex"})
    [saved] = responses(session)
    assert (saved.destination, saved.destination_name) == ("competitor", "Globex")
    # Changing it later to another destination clears the name kept before.
    submit(client, more, {"destination": "none", "destination_name": "Globex"})
    [saved] = responses(session)
    assert (saved.destination, saved.destination_name) == ("none", None)

"""The team's own wording, in versions: reasons, texts per language, consent."""

from __future__ import annotations

import html as html_module
import re

import pytest
from sqlalchemy import select

from survey.answers.models import Response
from survey.branding.logos import checked_logo
from survey.consent import WORDING_VERSION, ConsentEvent
from survey.wording.models import SurveyVersion
from tests.factories import (
    auth,
    hidden_fields,
    login,
    make_departure,
    make_token,
    make_user,
    path_of,
    set_brand,
    submit,
    survey_path,
)
from tests.test_branding import png
from tests.test_outbox import deliver, text_part

REASONS_PAGE = "/admin/survey/reasons"


def texts_page(language: str) -> str:
    return f"/admin/survey/wording/{language}"


@pytest.fixture
def admin(app):
    client = app.test_client()
    user = make_user(app, role="admin")
    assert login(client, user.email).status_code == 302
    return client


def page(client, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, (path, answer.status_code)
    return html_module.unescape(answer.get_data(as_text=True))


def versions(session) -> list[SurveyVersion]:
    session.rollback()
    return list(session.scalars(select(SurveyVersion).order_by(SurveyVersion.id)))


def text_fields(html: str) -> dict[str, str]:
    """The texts page's fields: their label -> field name."""
    return dict(
        (label, name)
        for name, label in re.findall(
            r'<label for="(text_\d+)">([^<]+)</label>', html_module.unescape(html)
        )
    )


def set_texts(client, language: str, texts: dict[str, str], action="save"):
    """Fill the language's page like an admin: ``texts`` by field label."""
    html = client.get(texts_page(language)).get_data(as_text=True)
    names = text_fields(html)
    data = {names[label]: value for label, value in texts.items()}
    return client.post(
        texts_page(language), data={**hidden_fields(html), **data, "action": action}
    )


def reason_rows(html: str) -> dict[str, str]:
    """The reasons page's rows: reason code -> row prefix (rows-3)."""
    rows = dict(
        (code, prefix)
        for prefix, code in re.findall(
            r'name="(rows-\d+)-code" type="hidden" value="(\w*)"', html
        )
    )
    return rows


def set_reasons(client, changes: dict[str, str], action="save"):
    """Post the reasons page as shown, with ``changes`` (field -> value;
    a value of None unticks a box)."""
    html = client.get(REASONS_PAGE).get_data(as_text=True)
    data = hidden_fields(html)
    for name, value in re.findall(
        r'<input type="checkbox" id="[^"]+" name="([^"]+)" value="(y)" checked', html
    ):
        data[name] = value
    for name, value in re.findall(
        r'<input type="number"[^>]* name="([^"]+)" value="(\d*)"', html
    ):
        data[name] = value
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return client.post(REASONS_PAGE, data={**data, "action": action})


def add_reason(client, code: str, label: str, root_cause: str = "", **extra):
    html = client.get(REASONS_PAGE).get_data(as_text=True)
    new = reason_rows(html)[""]  # the first empty row
    return set_reasons(
        client,
        {
            f"{new}-new_code": code,
            f"{new}-label": label,
            f"{new}-root_cause": root_cause,
            **extra,
        },
    )


def answer(app, departure, reason: str, **data):
    customer = app.test_client()
    sent = submit(customer, survey_path(app, departure), {"reason": reason, **data})
    return customer, sent


# --- who may ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [REASONS_PAGE, texts_page("en"), "/admin/survey/versions"]
)
def test_only_admins_change_the_wording(app, path):
    csm = app.test_client()
    login(csm, make_user(app, role="csm").email)
    assert csm.get(path).status_code == 403


def test_an_unknown_language_has_no_page(admin):
    assert admin.get(texts_page("xx")).status_code == 404


# --- texts -------------------------------------------------------------------


def test_the_teams_question_is_asked_on_the_page_and_in_the_email(
    make_app, smtp, session
):
    app = make_app(MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port)
    admin = app.test_client()
    login(admin, make_user(app, role="admin").email)
    saved = set_texts(
        admin,
        "en",
        {
            "The question": "What made you cancel?",
            "Answer “It costs more than it is worth to us”": "The price was too high",
        },
    )
    assert saved.status_code == 303
    [version] = versions(session)
    assert version.based_on == 0
    assert version.summary == "Changed the texts in English"

    departure = make_departure(app)
    html = page(app.test_client(), survey_path(app, departure))
    assert "<h1>What made you cancel?</h1>" in html
    assert "The price was too high" in html
    assert "It costs more than it is worth to us" not in html
    assert deliver(app).sent == 1
    body = text_part(smtp.messages[-1])
    assert "What made you cancel?" in body
    assert "- The price was too high" in body
    # The German survey keeps the built-in German: nothing was written for it.
    german = make_departure(app, locale="de")
    assert "Was ist der Hauptgrund" in page(app.test_client(), survey_path(app, german))


def framed(html: str) -> list[str]:
    """The documents a page draws in frames (``srcdoc``), as HTML."""
    return [
        html_module.unescape(document)
        for document in re.findall(r'<iframe [^>]*srcdoc="([^"]*)"', html)
    ]


def test_a_preview_shows_the_survey_and_the_email_and_saves_nothing(admin, session):
    preview = set_texts(
        admin,
        "fr",
        {"The question": "Pourquoi <vraiment> partez-vous ?"},
        action="preview",
    )
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert "Preview (not saved yet)" in html
    assert "Subject:" in html
    # The real first page and the real email, as the customer gets them, in
    # French; the team's words escaped in each.
    page_one, page_two, email = framed(html)
    for document in (page_one, page_two, email):
        assert document.startswith("<!doctype html>")
        assert '<html lang="fr">' in document
        assert "<vraiment>" not in document
    for document in (page_one, email):
        assert "Pourquoi &lt;vraiment&gt; partez-vous ?" in document
    assert 'type="radio"' in page_one and "/static/style.css" in page_one
    assert "Cela coûte plus que ce que cela vaut pour nous" in page_one
    # Page 2 as after the first reason with a follow-up question: that
    # question, the other reasons as factors, the consent, nothing filled in.
    assert "“Cela coûte plus que ce que cela vaut pour nous”" in html
    assert "Quel prix vous aurait convenu\u00a0?" in page_two  # French spacing
    assert "Pouvons-nous vous contacter plus tard" in page_two
    assert 'id="factors-too_expensive"' not in page_two  # the main reason
    assert 'id="factors-missing_features"' in page_two
    assert "checked" not in page_two and "/static/style.css" in page_two
    assert "/s/your-personal-link?reason=too_expensive" in email
    # The email's style attributes are let through on this page only.
    policy = preview.headers["Content-Security-Policy"]
    assert policy.endswith("; style-src-attr 'unsafe-inline'")
    assert "style-src 'self';" in policy and "script-src 'self';" in policy
    assert (
        "unsafe-inline"
        not in admin.get(texts_page("fr")).headers["Content-Security-Policy"]
    )
    assert versions(session) == []


def test_the_previewed_email_is_the_one_sent_logo_and_links_alike(app, admin):
    """Drawn from the same context as the invitation a departure gets."""
    set_brand(app, company_name="Acme", logo=checked_logo(png()))
    preview = set_texts(admin, "en", {"The question": "Why go?"}, action="preview")
    assert preview.status_code == 200
    _page_one, _page_two, email = framed(preview.get_data(as_text=True))
    [logo] = re.findall(r'<img src="([^"]+)"', email)
    assert re.fullmatch(r"http://[^/]+/brand/logo-[0-9a-f]{16}\.png", logo)
    links = re.findall(r'href="([^"]+\?reason=[a-z_]+)"', email)
    assert len(links) == 10 and all("/s/your-personal-link?" in x for x in links)


def test_an_answer_keeps_the_wording_it_was_given_in(app, admin, session):
    before = make_departure(app, company="Before Inc")
    answer(app, before, "too_expensive")
    assert (
        set_texts(
            admin, "en", {"Answer “It costs more than it is worth to us”": "Priced out"}
        ).status_code
        == 303
    )
    after = make_departure(app, company="After Inc")
    answer(app, after, "too_expensive")
    session.rollback()
    kept = {
        row.departure_id: row.survey_version_id
        for row in session.scalars(select(Response))
    }
    [version] = versions(session)
    assert kept == {before.id: None, after.id: version.id}

    review = page(admin, f"/review/{before.public_id}")
    assert "It costs more than it is worth to us" in review
    assert "built-in wording" in review
    assert "Priced out" not in review
    review = page(admin, f"/review/{after.public_id}")
    assert "Priced out" in review
    assert f"survey version {version.id}" in review
    # The customer's own thanks page too.
    thanks = page(app.test_client(), survey_path(app, before) + "/thanks")
    assert "It costs more than it is worth to us" in thanks


def test_a_german_answer_is_shown_to_staff_in_german_with_the_english(app, admin):
    departure = make_departure(app, locale="de")
    answer(app, departure, "switched")
    review = page(admin, f"/review/{departure.public_id}")
    assert "Wir haben eine bessere Alternative gefunden" in review
    assert "(We found a better alternative)" in review
    # The language named as staff read it, not by its code.
    assert ", in German)" in review
    assert "<dt>Language</dt><dd>German</dd>" in review


def test_an_answer_in_the_browsers_language_is_shown_to_staff_in_it(app, admin):
    departure = make_departure(app)  # no locale of its own
    customer = app.test_client()
    customer.environ_base["HTTP_ACCEPT_LANGUAGE"] = "fr"
    page1 = survey_path(app, departure)
    assert '<html lang="fr">' in customer.get(page1).get_data(as_text=True)
    more = submit(customer, page1, {"reason": "switched"}).headers["Location"]
    review = page(admin, f"/review/{departure.public_id}")
    assert "Nous avons trouvé une meilleure alternative" in review
    assert "(We found a better alternative)" in review
    assert ", in French)" in review
    # Page 2 answered in another language: the answer reads in that one.
    customer.environ_base["HTTP_ACCEPT_LANGUAGE"] = "es"
    assert submit(customer, path_of(more), {"details": "Nada"}).status_code == 303
    review = page(admin, f"/review/{departure.public_id}")
    assert "Encontramos una alternativa mejor" in review
    assert ", in Spanish)" in review


def test_an_answer_in_a_language_switched_to_is_shown_to_staff_in_it(app, admin):
    departure = make_departure(app, locale="fr")
    customer = app.test_client()
    page1 = survey_path(app, departure) + "?lang=de"
    assert '<html lang="de">' in customer.get(page1).get_data(as_text=True)
    submit(customer, page1, {"reason": "switched"})
    review = page(admin, f"/review/{departure.public_id}")
    assert "Wir haben eine bessere Alternative gefunden" in review
    assert ", in German)" in review
    # From the email's reason link, confirmed in the language switched to.
    confirm = survey_path(app, departure) + "?lang=es&reason=too_expensive"
    html = customer.get(confirm).get_data(as_text=True)
    action = html_module.unescape(
        re.search(r'<form method="post" action="([^"]+)"', html)[1]
    )
    assert customer.post(action, data=hidden_fields(html)).status_code == 303
    review = page(admin, f"/review/{departure.public_id}")
    assert ", in Spanish)" in review


def test_consent_in_the_teams_words_stays_in_the_ledger(app, admin, session):
    mine = "Ja, Sie dürfen mich mit einem Angebot kontaktieren."
    assert (
        set_texts(admin, "de", {"The win-back consent sentence": mine}).status_code
        == 303
    )
    departure = make_departure(app, locale="de")
    customer, sent = answer(app, departure, "switched")
    more = path_of(sent.location)
    html = customer.get(more).get_data(as_text=True)
    assert mine in html_module.unescape(html)
    assert submit(customer, more, {"winback_consent": "y"}).status_code == 303
    # Changed again later: the event keeps the words the customer saw.
    set_texts(admin, "de", {"The win-back consent sentence": "Etwas anderes."})
    session.rollback()
    [event] = session.scalars(
        select(ConsentEvent).where(ConsentEvent.departure_id == departure.id)
    )
    assert event.wording == mine
    assert event.wording_version.startswith("custom-")
    assert event.wording_version != WORDING_VERSION


def test_a_yes_to_consent_words_changed_since_the_page_opened_is_asked_again(
    app, admin, session
):
    departure = make_departure(app)
    customer, sent = answer(app, departure, "switched")
    more = path_of(sent.location)
    opened = customer.get(more).get_data(as_text=True)
    set_texts(admin, "en", {"The win-back consent sentence": "New words."})
    posted = customer.post(more, data={**hidden_fields(opened), "winback_consent": "y"})
    assert posted.status_code == 200
    assert "has changed since the page was opened" in posted.get_data(as_text=True)
    session.rollback()
    assert session.scalars(select(ConsentEvent)).all() == []


def test_two_admins_saving_at_once_do_not_overwrite_each_other(app, admin, session):
    other = app.test_client()
    login(other, make_user(app, role="admin").email)
    first = admin.get(texts_page("en")).get_data(as_text=True)
    second = other.get(texts_page("en")).get_data(as_text=True)
    names = text_fields(first)
    assert (
        admin.post(
            texts_page("en"),
            data={**hidden_fields(first), names["The question"]: "One?"},
        ).status_code
        == 303
    )
    late = other.post(
        texts_page("en"),
        data={**hidden_fields(second), names["The question"]: "Two?"},
        follow_redirects=True,
    )
    assert "saved a new version of the survey while you were editing" in (
        html_module.unescape(late.get_data(as_text=True))
    )
    [version] = versions(session)
    assert version.definition["texts"]["en"]["question"] == "One?"


def test_saving_the_same_texts_makes_no_version(admin, session):
    assert set_texts(admin, "en", {}).status_code == 303
    assert versions(session) == []


# --- reasons -------------------------------------------------------------------


def test_a_hidden_reason_is_not_offered_nor_accepted(app, admin, session):
    html = admin.get(REASONS_PAGE).get_data(as_text=True)
    row = reason_rows(html)["no_longer_needed"]
    assert set_reasons(admin, {f"{row}-shown": None}).status_code == 303
    assert versions(session)[0].definition["reasons"][-1] == "other"
    departure = make_departure(app)
    survey = page(app.test_client(), survey_path(app, departure))
    assert 'value="no_longer_needed"' not in survey
    _, refused = answer(app, departure, "no_longer_needed")
    assert refused.status_code == 200
    assert "Not a valid choice" in refused.get_data(as_text=True)


def test_reasons_are_offered_in_the_order_set(app, admin):
    html = admin.get(REASONS_PAGE).get_data(as_text=True)
    rows = reason_rows(html)
    assert set_reasons(admin, {f"{rows['switched']}-position": "1"}).status_code == 303
    survey = page(app.test_client(), survey_path(app, make_departure(app)))
    offered = re.findall(r'name="reason" value="(\w+)"', survey)
    assert offered[:2] == ["switched", "too_expensive"]
    assert offered[-1] == "other"


def test_a_reason_of_the_teams_own_flows_everywhere_codes_go(app, admin, session):
    added = add_reason(
        admin, "data_migration", "Moving our data was too hard", "failed_adoption"
    )
    assert added.status_code == 303
    [version] = versions(session)
    assert version.definition["custom"] == {
        "data_migration": {"root_cause": "failed_adoption"}
    }
    # The customer sees it, in English and (no German text) in English too.
    departure = make_departure(app, company="Custom Co")
    survey = page(app.test_client(), survey_path(app, departure))
    assert "Moving our data was too hard" in survey
    customer, sent = answer(app, departure, "data_migration")
    more = path_of(sent.location)
    assert submit(customer, more, {"winback_consent": "y"}).status_code == 303

    # The review queue: filtered by it, labelled with it.
    queue = page(admin, "/review?reason=data_migration")
    assert "Custom Co" in queue
    assert "Moving our data was too hard" in queue
    assert '<option value="data_migration"' in page(admin, "/review")
    # The win-back list, on the page, in the API and its CSV.
    assert "Custom Co" in page(admin, "/winback?reason=data_migration")
    reader = auth(make_token(app, "winback:read", "responses:read"))
    client = app.test_client()
    listed = client.get(
        "/api/v1/winback/contacts?reason=data_migration", headers=reader
    )
    assert listed.status_code == 200
    [row] = listed.get_json()["contacts"]
    assert row["primary_reason"] == "data_migration"
    csv = client.get(
        "/api/v1/winback/contacts.csv?reason=data_migration", headers=reader
    )
    assert "data_migration" in csv.get_data(as_text=True)
    answers = client.get("/api/v1/responses", headers=reader).get_json()
    assert [r["reason"] for r in answers["responses"]] == ["data_migration"]
    # A code no version knows is still refused.
    unknown = client.get("/api/v1/winback/contacts?reason=made_up", headers=reader)
    assert unknown.status_code == 422


@pytest.mark.parametrize(
    ("code", "label", "message"),
    [
        ("Data Migration", "x", "cannot be a reason code"),
        ("too_expensive", "x", "built-in reason's code already"),
        ("data_migration", "", "needs a label"),
    ],
)
def test_a_bad_reason_of_the_teams_own_is_refused(admin, session, code, label, message):
    refused = add_reason(admin, code, label)
    assert refused.status_code == 200
    assert message in html_module.unescape(refused.get_data(as_text=True))
    assert versions(session) == []


def test_at_most_five_reasons_of_the_teams_own(admin, session):
    for number in range(5):
        assert add_reason(admin, f"mine_{number}", f"Mine {number}").status_code == 303
    html = admin.get(REASONS_PAGE).get_data(as_text=True)
    assert "" not in reason_rows(html)  # no room for a sixth
    assert len(versions(session)) == 5


def test_something_else_always_stays(admin, session):
    html = admin.get(REASONS_PAGE).get_data(as_text=True)
    row = reason_rows(html)["other"]
    response = set_reasons(admin, {f"{row}-shown": None})
    # The page sends it anyway (a disabled box), and the service insists.
    assert response.status_code == 303 or "always" in response.get_data(as_text=True)
    for version in versions(session):
        assert "other" in version.definition["reasons"]


def test_the_versions_page_lists_who_changed_what(admin):
    set_texts(admin, "es", {"The question": "¿Por qué nos deja?"})
    html = page(admin, "/admin/survey/versions")
    assert "Changed the texts in Spanish" in html
    assert "Admin" in html


def test_the_survey_settings_name_reasons_by_their_labels_not_codes(admin, session):
    """People read labels (the team's wording, in English); a code stays
    only as the small print of a reason of the team's own, its identifier."""
    added = add_reason(admin, "data_migration", "Moving our data", "oversold")
    assert added.status_code == 303
    buggy = set_texts(admin, "en", {"Answer “Too many bugs or problems”": "Buggy"})
    assert buggy.status_code == 303
    reasons = page(admin, REASONS_PAGE)
    table = reasons.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    cells = re.findall(r'<td data-label="Reason">(.*?)</td>', table, re.S)
    reading = [" ".join(re.sub(r"<[^>]+>", " ", cell).split()) for cell in cells]
    assert reading[0] == "It costs more than it is worth to us"
    assert "Buggy" in reading  # the team's own English wording
    assert "Moving our data Your reason, code data_migration" in reading
    for code in ("too_expensive", "product_issues", "not_meeting_goals", "other"):
        assert code not in " ".join(reading)
        assert f"Show {code}" not in reasons and f"Order of {code}" not in reasons
    assert 'aria-label="Show “It costs more than it is worth to us”"' in reasons
    # A root cause by its meaning, as the postmortem names it.
    assert '<option value="poor_fit">Customer should not have been sold to<' in reasons
    assert "poor_fit:" not in reasons

    german = page(admin, texts_page("de"))
    labels = re.findall(r'<label for="text_\d+">([^<]+)</label>', german)
    assert "Answer “It costs more than it is worth to us”" in labels
    assert "Answer “Moving our data”" in labels
    assert "Follow-up question after “Buggy”" in labels
    assert not [label for label in labels if re.search(r"“[a-z_]+”", label)]

    # A version saved before summaries named the language still reads well.
    session.execute(
        SurveyVersion.__table__.update().values(summary="Changed the texts in de")
    )
    session.commit()
    assert "Changed the texts in German" in page(admin, "/admin/survey/versions")

"""The customer's language: shipped catalogs, and which one a page speaks."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from email.header import decode_header, make_header
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
from babel.messages.pofile import read_po
from werkzeug.exceptions import default_exceptions

from survey import create_app, db, outbox
from survey.config import ConfigError
from survey.contacts import erase_person
from survey.errors import (
    Forbidden,
    InvalidInput,
    SurveyError,
    TooManyRequests,
)
from survey.i18n import TRANSLATIONS_DIR
from survey.wording import service as wordings
from survey.wording.models import SurveyVersion
from tests.factories import hidden_fields, make_departure, submit, survey_path
from tests.test_app import PRODUCTION
from tests.test_outbox import html_part

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("de", "fr", "es")
QUESTION = "What is the main reason you are leaving?"


def catalog(locale: str):
    with (TRANSLATIONS_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po)


def translated(locale: str, message: str) -> str:
    """The shipped translation of ``message`` (the wiring is tested, not wording)."""
    if locale == "en":
        return message
    found = catalog(locale).get(message)
    assert found is not None and found.string, (locale, message)
    return str(found.string)


@pytest.fixture(scope="module")
def used_messages(tmp_path_factory) -> set[str]:
    """Every customer-facing string the code uses now (babel.cfg's sources)."""
    pot = tmp_path_factory.mktemp("pot") / "messages.pot"
    subprocess.run(
        [
            str(Path(REPO, ".venv", "bin", "pybabel")),
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "-o",
            str(pot),
            ".",
        ],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    with pot.open("rb") as source:
        return {message.id for message in read_po(source) if message.id}


@pytest.mark.parametrize("locale", SHIPPED)
def test_every_customer_facing_string_is_translated(used_messages, locale):
    shipped = {message.id: message for message in catalog(locale) if message.id}
    missing = sorted(used_messages - shipped.keys())
    untranslated = sorted(i for i, m in shipped.items() if not m.string or m.fuzzy)
    assert missing == [], f"{locale}: not in the catalog (make translations)"
    assert untranslated == [], f"{locale}: not translated"


@pytest.mark.parametrize("locale", SHIPPED)
def test_no_catalog_keeps_a_string_the_code_no_longer_uses(used_messages, locale):
    unused = {m.id for m in catalog(locale) if m.id} - used_messages
    assert sorted(unused) == []


def test_the_page_speaks_the_departures_language(app, client):
    page = client.get(survey_path(app, make_departure(app, locale="de")))
    html = page.get_data(as_text=True)
    assert '<html lang="de">' in html
    assert translated("de", QUESTION) in html


def test_without_one_the_browsers_language_is_spoken(app, client):
    link = survey_path(app, make_departure(app, locale=None))
    html = client.get(link, headers={"Accept-Language": "ja, fr;q=0.8, en;q=0.5"})
    assert translated("fr", QUESTION) in html.get_data(as_text=True)
    # A language we do not ship on the departure: the browser's again.
    link = survey_path(app, make_departure(app, locale="ja"))
    html = client.get(link, headers={"Accept-Language": "es"})
    assert translated("es", QUESTION) in html.get_data(as_text=True)


def test_else_the_configured_default_is_spoken(make_app):
    app = make_app(DEFAULT_LOCALE="es")
    link = survey_path(app, make_departure(app, locale=None))
    html = app.test_client().get(link).get_data(as_text=True)
    assert translated("es", QUESTION) in html


def test_an_unknown_page_is_explained_in_the_browsers_language(client):
    page = client.get("/no-such-page", headers={"Accept-Language": "de-DE"})
    assert page.status_code == 404
    assert f"<h1>{translated('de', 'Page not found')}</h1>" in page.get_data(
        as_text=True
    )


@pytest.mark.parametrize("locale", ["de", "fr", "es"])
def test_a_refused_method_a_body_too_large_and_a_database_away_speak_too(
    make_app, tmp_path, locale
):
    """Werkzeug's and our English error words never reach a customer's page."""
    headers = {"Accept-Language": locale}
    app = make_app(PUBLIC_MAX_BODY_BYTES=1024)
    client = app.test_client()
    link = survey_path(app, make_departure(app))
    refused = client.put(link, headers=headers)  # no such method on the page
    too_large = client.post(link, data={"reason_other": "x" * 2000}, headers=headers)
    away = make_app(DATABASE_URL=f"sqlite:///{tmp_path}/missing/db.sqlite3")
    unreachable = away.test_client().get(link, headers=headers)
    for answer, status, title, words in (
        (refused, 405, "This page cannot do that", "Method Not Allowed"),
        (too_large, 413, "Too much to send", "larger than this page accepts ("),
        (unreachable, 503, "Back in a moment", "cannot reach its database"),
    ):
        page = answer.get_data(as_text=True)
        assert answer.status_code == status
        assert f"<h1>{translated(locale, title)}</h1>" in page, status
        assert words not in page, status
    assert refused.headers["Allow"]
    assert int(unreachable.headers["Retry-After"]) > 0


def test_a_refused_form_speaks_the_departures_language_not_the_browsers(app, client):
    """The departure's language comes before the browser's on error pages
    too, also on those drawn before the page has read the departure."""
    link = survey_path(app, make_departure(app, locale="de"))
    english = {"Accept-Language": "en"}
    assert client.get(link, headers=english).status_code == 200
    forged = client.post(
        link, data={"csrf_token": "forged", "reason": "switched"}, headers=english
    )
    assert forged.status_code == 400
    page = forged.get_data(as_text=True)
    assert '<html lang="de">' in page
    assert f"<h1>{translated('de', 'Please try again')}</h1>" in page


def test_a_body_too_large_for_the_survey_is_refused_in_the_departures_language(
    app, client
):
    """Refused by a guard of the whole app, before the survey's own hooks."""
    link = survey_path(app, make_departure(app, locale="de"))
    too_much = "x" * (app.config["PUBLIC_MAX_BODY_BYTES"] + 1)
    refused = client.post(
        link, data={"reason_other": too_much}, headers={"Accept-Language": "en"}
    )
    assert refused.status_code == 413
    page = refused.get_data(as_text=True)
    assert '<html lang="de">' in page
    assert f"<h1>{translated('de', 'Too much to send')}</h1>" in page


def test_a_failure_on_the_survey_speaks_the_departures_language(app, client, clock):
    link = survey_path(app, make_departure(app, locale="de"))
    # A wording version damaged by hand, outside the admin page's checks:
    # page 1 fails on it.
    with app.app_context(), db.write_session() as session:
        session.add(
            SurveyVersion(
                based_on=0,
                definition={"reasons": 5},
                summary="damaged",
                created_at=clock(),
            )
        )
        session.commit()
    wordings.forget(app)
    failed = client.get(link, headers={"Accept-Language": "en"})
    assert failed.status_code == 500
    page = failed.get_data(as_text=True)
    assert '<html lang="de">' in page
    assert f"<h1>{translated('de', 'Something went wrong')}</h1>" in page


#: An error each status may come from on a survey page, in our code's English
#: (for the logs and the API), and the title the customer's page gives it.
SURVEY_ERRORS: dict[int, tuple[Callable[[], Exception], str]] = {
    400: (lambda: SurveyError("The request is not valid."), "Please try again"),
    403: (lambda: Forbidden("This link is not yours."), "You cannot open this page"),
    422: (
        lambda: InvalidInput("The answer is not valid."),
        "We could not use what you sent",
    ),
    429: (
        lambda: TooManyRequests("Too many requests; slow down.", 30),
        "Too many tries",
    ),
    500: (lambda: RuntimeError("kaboom"), "Something went wrong"),
}


def with_a_failing_survey_page(app: flask.Flask) -> None:
    """Give the survey a page, ``/s/<token>/fails/<how>/<status>``, raising
    ``status``'s error of ``SURVEY_ERRORS`` (``how`` = ``ours``) or Werkzeug's
    (``werkzeug``): one of the survey's own pages, with its hooks, for errors
    no page raises today but any may."""

    def fails(token: str, how: str, status: int) -> str:
        if how == "werkzeug":
            flask.abort(status)
        raise SURVEY_ERRORS[status][0]()

    app.add_url_rule("/s/<token>/fails/<how>/<int:status>", "public.fails", fails)


@pytest.mark.parametrize("how", ["ours", "werkzeug"])
@pytest.mark.parametrize("status", sorted(SURVEY_ERRORS))
def test_any_error_on_a_survey_page_speaks_the_departures_language(
    make_app, how, status
):
    """Never the English of our errors' messages or of Werkzeug's."""
    app = make_app()
    with_a_failing_survey_page(app)
    link = survey_path(app, make_departure(app, locale="de"))
    failed = app.test_client().get(
        f"{link}/fails/{how}/{status}", headers={"Accept-Language": "en"}
    )
    assert failed.status_code == status
    page = failed.get_data(as_text=True)
    assert '<html lang="de">' in page
    title = SURVEY_ERRORS[status][1]
    assert f"<h1>{translated('de', title)}</h1>" in page
    english = (
        str(SURVEY_ERRORS[status][0]())
        if how == "ours"
        else default_exceptions[status].description
    )
    assert english not in page
    if status == 429 and how == "ours":
        assert failed.headers["Retry-After"] == "30"


def test_a_nul_character_is_refused_in_the_departures_language(app, client):
    """Refused by a guard of the whole app (422), in the address or a form."""
    link = survey_path(app, make_departure(app, locale="de"))
    english = {"Accept-Language": "en"}
    page_one = client.get(link, headers=english).get_data(as_text=True)
    in_the_address = client.get(link + "?reason=%00", headers=english)
    in_the_form = client.post(
        link,
        data={**hidden_fields(page_one), "reason": "other", "reason_other": "a\x00b"},
        headers=english,
    )
    for refused in (in_the_address, in_the_form):
        assert refused.status_code == 422
        page = refused.get_data(as_text=True)
        assert '<html lang="de">' in page
        title = translated("de", "We could not use what you sent")
        assert f"<h1>{title}</h1>" in page
        assert "(NUL)" not in page


def test_an_answer_too_long_is_refused_in_the_departures_language(app, client):
    """Never WTForms' English ("Field cannot be longer than ...")."""
    link = survey_path(app, make_departure(app, locale="de"))
    too_long = "x" * 1001
    page_one = submit(client, link, {"reason": "other", "reason_other": too_long})
    assert submit(client, link, {"reason": "switched"}).status_code == 303
    page_two = submit(client, link + "/more", {"details": "x" * 5001})
    for refused, limit in ((page_one, 1000), (page_two, 5000)):
        assert refused.status_code == 200
        page = refused.get_data(as_text=True)
        assert '<html lang="de">' in page
        words = translated("de", "Please shorten this answer to %(max)d characters.")
        assert words % {"max": limit} in page
        assert "Field cannot be longer" not in page


def test_page_two_refused_says_so_at_its_top_in_the_departures_language(app, client):
    """On a phone the refused answers lie far below where the page opens."""
    link = survey_path(app, make_departure(app, locale="de"))
    assert submit(client, link, {"reason": "switched"}).status_code == 303
    refused = submit(
        client,
        link + "/more",
        {"details": "x" * 5001, "winback_consent": "y", "consent_version": "old"},
    ).get_data(as_text=True)
    top = refused.split("<form", 1)[0]
    assert 'role="alert"' in top
    assert translated("de", "The answers on this page are not saved yet:") in top
    shorten = translated("de", "Please shorten this answer to %(max)d characters.")
    assert f'<a href="#details">{shorten % {"max": 5000}}</a>' in top
    assert '<a href="#winback_consent">' in top
    saved = "Thank you, your answer is saved. These questions are optional."
    assert translated("de", saved) not in refused


def test_a_wrong_method_or_address_under_a_link_speaks_the_departures_language(
    app, client
):
    """Refused before any of the survey's pages is chosen: the link in the
    address still names whose language to speak."""
    link = survey_path(app, make_departure(app, locale="de"))
    english = {"Accept-Language": "en"}
    for refused, status, title in (
        (client.get(link + "/renew", headers=english), 405, "This page cannot do that"),
        (client.get(link + "/thanx", headers=english), 404, "Page not found"),
    ):
        assert refused.status_code == status
        page = refused.get_data(as_text=True)
        assert '<html lang="de">' in page, status
        assert f"<h1>{translated('de', title)}</h1>" in page, status
    # A link of no one's: the browser's language.
    made_up = client.get("/s/not-a-real-link/renew", headers={"Accept-Language": "fr"})
    assert made_up.status_code == 405
    assert '<html lang="fr">' in made_up.get_data(as_text=True)


def test_an_erased_persons_link_still_speaks_their_language(app, client):
    departure = make_departure(app, locale="de")
    with app.app_context(), db.write_session() as session:
        erase_person(session, departure.contact_email, actor_id=None, via="test")
        session.commit()
    gone = client.get(survey_path(app, departure), headers={"Accept-Language": "en"})
    assert gone.status_code == 410
    assert '<html lang="de">' in gone.get_data(as_text=True)


def test_a_missing_logo_is_explained_in_our_words_in_the_browsers_language(client):
    """A domain error's own message is English for logs and the API."""
    missing = client.get("/brand/no-such-logo.png", headers={"Accept-Language": "fr"})
    assert missing.status_code == 404
    page = missing.get_data(as_text=True)
    assert '<html lang="fr">' in page
    assert f"<h1>{translated('fr', 'Page not found')}</h1>" in page
    assert "No such logo" not in page


#: How each language writes a date, by hand: day, month's name, year.
MONTHS = {
    "de": "Januar Februar März April Mai Juni Juli August September Oktober "
    "November Dezember",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre "
    "novembre décembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre "
    "noviembre diciembre",
}
DATES = {
    "de": "{day}. {month} {year}",
    "fr": "{day} {month} {year}",
    "es": "{day} de {month} de {year}",
}


@pytest.mark.parametrize("locale", ["de", "fr", "es"])
def test_the_answer_date_is_written_as_the_language_writes_it(
    app, client, clock, locale
):
    link = survey_path(app, make_departure(app, locale=locale))
    assert submit(client, link, {"reason": "switched"}).status_code == 303
    page = unescape(client.get(link).get_data(as_text=True))
    today = clock().date()
    month = MONTHS[locale].split()[today.month - 1]
    written = DATES[locale].format(day=today.day, month=month, year=today.year)
    assert written in page


def test_a_default_language_we_do_not_ship_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_DEFAULT_LOCALE", "ja")
    with pytest.raises(ConfigError, match="SURVEY_DEFAULT_LOCALE must be one of"):
        create_app(PRODUCTION | {"INSTANCE_PATH": str(tmp_path)})


def test_the_customer_switches_language_with_a_link_and_keeps_it(app, client):
    link = survey_path(app, make_departure(app, locale="de"))
    page = client.get(link).get_data(as_text=True)
    assert '<span lang="de" aria-current="true">Deutsch</span>' in page
    assert f'<a href="{link}?lang=fr" lang="fr" hreflang="fr">Français</a>' in page
    french = client.get(link + "?lang=fr").get_data(as_text=True)
    assert '<html lang="fr">' in french
    assert translated("fr", QUESTION) in french
    # The answer sent from the French page goes on in French.
    sent = submit(client, link + "?lang=fr", {"reason": "switched"})
    assert sent.headers["Location"].endswith(f"{link}/more?lang=fr")
    more = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert '<html lang="fr">' in more
    # A language we do not ship is ignored.
    assert '<html lang="de">' in client.get(link + "?lang=xx").get_data(as_text=True)


def test_switching_language_on_the_confirmation_keeps_the_reason(app, client):
    link = survey_path(app, make_departure(app, locale="en"))
    page = client.get(link + "?reason=switched").get_data(as_text=True)
    [spanish] = re.findall(r'<a href="([^"]+)" lang="es"', page)
    assert parse_qs(urlsplit(unescape(spanish)).query) == {
        "reason": ["switched"],
        "lang": ["es"],
    }


def test_an_email_to_someone_of_no_known_language_uses_the_default(make_app, smtp):
    app = make_app(MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port, DEFAULT_LOCALE="fr")
    make_departure(app, locale=None, company="Acme")
    make_departure(app, locale="ja", company="Acme")
    with app.app_context():
        assert outbox.deliver_due().sent == 2
    subject = translated("fr", "One question before you go")
    for email in smtp.messages:
        assert str(make_header(decode_header(email["Subject"]))).startswith(subject)
        assert '<html lang="fr">' in html_part(email)


def link_to(page: str, label: str) -> str:
    """The address of the one link on ``page`` labelled ``label``."""
    [href] = re.findall(rf'<a[^>]*href="([^"]+)"[^>]*>{re.escape(label)}</a>', page)
    return unescape(href)


def form_action(page: str) -> str:
    [action] = re.findall(r'<form[^>]*action="([^"]+)"', page)
    return unescape(action)


def speaks_french(page: str) -> bool:
    return '<html lang="fr">' in page


@pytest.mark.parametrize("earlier", [None, "too_expensive"])
def test_a_language_picked_on_a_confirmation_drawn_for_a_native_is_kept(
    app, client, earlier
):
    """Pages drawn once for many links: the French page a native French
    customer filled the cache with has no ``?lang=``; a German customer who
    picked French keeps it through the confirmation's form and links."""
    native = survey_path(app, make_departure(app, locale="fr"))
    picked = survey_path(app, make_departure(app, locale="de"))
    if earlier:
        for link in (native, picked):
            assert submit(client, link, {"reason": earlier}).status_code == 303
    client.get(native + "?reason=switched")  # drawn, and kept, for French
    confirmation = client.get(picked + "?reason=switched&lang=fr").get_data(
        as_text=True
    )
    assert speaks_french(confirmation)
    another = link_to(confirmation, translated("fr", "Choose another answer"))
    assert speaks_french(client.get(another).get_data(as_text=True))
    if earlier:
        keep = link_to(confirmation, translated("fr", "Keep my earlier answer"))
        assert speaks_french(client.get(keep).get_data(as_text=True))
    sent = client.post(form_action(confirmation), data=hidden_fields(confirmation))
    assert sent.status_code == 303
    assert speaks_french(client.get(sent.headers["Location"]).get_data(as_text=True))
    # The native's own page still has no language picked.
    native_page = client.get(native + "?reason=switched").get_data(as_text=True)
    assert "lang=" not in form_action(native_page)


def test_a_language_picked_on_page_1_drawn_for_a_native_is_kept(app, client):
    native = survey_path(app, make_departure(app, locale="fr"))
    picked = survey_path(app, make_departure(app, locale="de"))
    for link in (native, picked):
        assert submit(client, link, {"reason": "switched"}).status_code == 303
    client.get(native)  # drawn, and kept, for French
    page = client.get(picked + "?lang=fr").get_data(as_text=True)
    assert speaks_french(page)
    change = translated("fr", "Change my other answers and contact choice")
    more = client.get(link_to(page, change)).get_data(as_text=True)
    assert speaks_french(more)
    assert translated("fr", "A few more questions") in more
    # Its form posts to the address it was opened at: still French after.
    sent = submit(client, picked + "?lang=fr", {"reason": "too_expensive"})
    assert speaks_french(client.get(sent.headers["Location"]).get_data(as_text=True))

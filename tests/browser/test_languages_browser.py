"""Each shipped language end to end: the email, then its pages on a phone."""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from survey import db, outbox
from survey.answers.models import Response
from survey.contacts import erase_person
from survey.demo import DEMO_BRAND
from survey.departures.models import Departure
from tests.browser.test_survey_browser import (
    DESKTOP,
    assert_no_horizontal_scroll,
    screenshot,
    with_demo_brand,
)
from tests.conftest import Clock, SmtpSink, free_port
from tests.factories import make_departure, submit, survey_path, withdraw_path
from tests.test_languages import translated, with_a_failing_survey_page
from tests.test_outbox import html_part, text_part

pytestmark = pytest.mark.browser

TEN_SECONDS = "It takes ten seconds: choose the answer that fits best."


def assert_accessible(page: Page) -> None:
    """axe-core finds nothing wrong with the page as it is now."""
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


@pytest.fixture
def live_app(make_app, smtp: SmtpSink) -> tuple[Flask, str]:
    """The live app, sending its mail to the test SMTP server."""
    base_url = f"http://127.0.0.1:{free_port()}"
    app = make_app(BASE_URL=base_url, MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port)
    return app, base_url


@pytest.mark.parametrize("locale", ["en", "de", "fr", "es"])
def test_the_survey_in_each_language_from_the_email_to_the_thanks(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    smtp: SmtpSink,
    artifacts: Path,
    locale: str,
) -> None:
    app, _ = live_app
    page = browser_page
    with_demo_brand(app)
    company = DEMO_BRAND["company_name"]
    departure = make_departure(app, locale=locale, company="Acme")
    with app.app_context():
        assert outbox.deliver_due().sent == 1
    [email] = smtp.messages
    subject = str(make_header(decode_header(email["Subject"])))
    # Who asks: the company the customer knew, not their own.
    assert subject == translated(
        locale, "One question from %(company)s before you go"
    ) % {"company": company}
    body = text_part(email)
    assert translated(locale, "What is the main reason you are leaving?") in body
    assert translated(locale, TEN_SECONDS) in body

    # The HTML part: accessible, its reasons easy to tap on a phone.
    page.set_content(html_part(email))
    assert_accessible(page)
    heights = page.eval_on_selector_all(
        'a[href*="?reason="]', "links => links.map(a => a.offsetHeight)"
    )
    assert len(heights) == 10 and min(heights) >= 44, heights
    screenshot(page, artifacts / f"email-{locale}-360.png")

    reason_link = re.search(r"^\s*(http://\S+\?reason=too_expensive)\s*$", body, re.M)
    assert reason_link is not None, body

    # The reason clicked in the email, to confirm, in the customer's language,
    # under the company's name and logo.
    page.goto(reason_link.group(1))
    expect(page.locator("html")).to_have_attribute("lang", locale)
    expect(page.locator(".brand-header")).to_contain_text(company)
    expect(page.locator(".brand-header img")).to_be_visible()
    reason = translated(locale, "It costs more than it is worth to us")
    expect(page.get_by_text(reason)).to_be_visible()
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-confirm-360.png")

    # Another answer instead: page 1, the whole question.
    page.get_by_role("link", name=translated(locale, "Choose another answer")).click()
    question = translated(locale, "What is the main reason you are leaving?")
    expect(page.get_by_role("heading", name=question)).to_be_visible()
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-page1-360.png")
    page.locator(
        "label", has_text=translated(locale, "We found a better alternative")
    ).click()
    page.get_by_role("button", name=translated(locale, "Send my answer")).click()

    # Page 2, then the thanks, still in the customer's language.
    expect(page).to_have_url(re.compile(r"/more(\?lang=\w+)?$"))
    expect(page.locator("html")).to_have_attribute("lang", locale)
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-page2-360.png")
    page.get_by_role("button", name=translated(locale, "Send"), exact=True).click()
    expect(page).to_have_url(re.compile(r"/thanks(\?lang=\w+)?$"))
    expect(
        page.get_by_role("heading", name=translated(locale, "Thank you"))
    ).to_be_visible()
    website = translated(locale, "Go to %(company)s's website") % {"company": company}
    expect(page.get_by_role("link", name=website)).to_have_attribute(
        "href", DEMO_BRAND["website_url"]
    )
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-thanks-360.png")

    # The same pages on a laptop.
    page.set_viewport_size(DESKTOP)
    screenshot(page, artifacts / f"survey-{locale}-thanks-1280.png")
    page.goto(reason_link.group(1).split("?")[0])
    expect(page.get_by_role("heading", name=question)).to_be_visible()
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-page1-1280.png")

    with app.app_context(), db.new_session() as session:
        [saved] = session.scalars(
            select(Response).where(Response.departure_id == departure.id)
        )
        assert saved.reason == "switched"


@pytest.mark.parametrize("locale", ["en", "de", "fr", "es"])
def test_every_other_customer_page_in_each_language(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
    clock: Clock,
    locale: str,
) -> None:
    """The states a customer may meet besides the survey's path: each in
    their language, accessible, at phone width. A link's pages speak its
    departure's language, though the browser asks for another."""
    app, _ = live_app
    page = browser_page
    with_a_failing_survey_page(app)  # before the app's first request
    with_demo_brand(app)

    def browser_asks_for(language: str) -> None:
        page.set_extra_http_headers({"Accept-Language": language})

    browser_asks_for(other := "de" if locale == "en" else "en")
    answered, erased, stayed, expiring, unanswered = (
        make_departure(app, locale=locale) for _ in range(5)
    )
    assert (
        submit(
            app.test_client(), survey_path(app, answered), {"reason": "switched"}
        ).status_code
        == 303
    )
    with app.app_context(), db.write_session() as session:
        erase_person(session, erased.contact_email, actor_id=None, via="test")
        session.execute(
            update(Departure)
            .where(Departure.id == stayed.id)
            .values(reactivated_at=clock())
        )
        session.commit()

    def check(name: str, url: str, status: int) -> None:
        answer = page.goto(url)
        assert answer is not None and answer.status == status, (name, answer)
        expect(page.locator("html")).to_have_attribute("lang", locale)
        assert_no_horizontal_scroll(page)
        assert_accessible(page)
        screenshot(page, artifacts / f"page-{name}-{locale}-360.png")

    link = live_server + survey_path(app, answered)
    check("confirm-change", link + "?reason=too_expensive", 200)
    check("confirm-same", link + "?reason=switched", 200)
    # "Something else" from the email: its text box on the confirmation.
    check(
        "confirm-other",
        live_server + survey_path(app, unanswered) + "?reason=other",
        200,
    )
    expect(page.locator("#reason_other")).to_be_visible()
    # Page 2 with "Which one?" shown (after "another product").
    check("details", link + "/more", 200)
    page.locator("input[name=destination][value=competitor]").check()
    expect(page.locator("#destination_name")).to_be_visible()
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"page-details-which-one-{locale}-360.png")
    # Page 2 refused: an answer too long, and a yes to a consent wording
    # changed since the page was drawn.
    page.locator("#details").fill("x" * 5001)
    page.locator("#winback_consent").check()
    stale = "field => field.value = '2025-01-v0'"
    page.locator("input[name=consent_version]").evaluate(stale)
    page.get_by_role("button", name=translated(locale, "Send"), exact=True).click()
    expect(page.locator("#details-errors")).to_be_visible()
    expect(page.locator("#winback_consent-errors")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", locale)
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"page-details-refused-{locale}-360.png")
    # An address naming no one's link speaks the browser's language.
    browser_asks_for(locale)
    check("404", live_server + "/s/not-a-real-link", 404)
    # The shared error page, as a mistyped address meets it.
    check("error-404", live_server + "/no-such-page", 404)
    browser_asks_for(other)
    # Under a link, whatever the error, the departure's language.
    check("error-405", link + "/renew", 405)
    check("error-404-under-link", link + "/thanx", 404)
    check("error-422", link + "?reason=%00", 422)  # refused by the app's guard
    for status in (403, 429, 500):
        check(f"error-{status}", f"{link}/fails/ours/{status}", status)
    # Page 1 sent without an answer: the error, in their words.
    check("page-one", live_server + survey_path(app, unanswered), 200)
    page.get_by_role("button", name=translated(locale, "Send my answer")).click()
    expect(page.locator("[role=alert], .errors").first).to_be_visible()
    assert_accessible(page)
    screenshot(page, artifacts / f"page-one-refused-{locale}-360.png")
    # The same form with a forged token (a page not drawn by us): refused.
    page.locator("input[name=reason]").first.check()
    page.locator("input[name=csrf_token]").evaluate("field => field.value = 'forged'")
    with page.expect_response(lambda answer: answer.request.method == "POST") as sent:
        page.get_by_role("button", name=translated(locale, "Send my answer")).click()
    assert sent.value.status == 400
    expect(page.locator("html")).to_have_attribute("lang", locale)
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"page-400-forged-{locale}-360.png")
    # The thanks page reached without an answer (as a bot's post lands there).
    check(
        "thanks-unanswered", live_server + survey_path(app, unanswered) + "/thanks", 200
    )
    check("410-erased", live_server + survey_path(app, erased), 410)
    check("stayed", live_server + survey_path(app, stayed), 200)
    check("withdraw", live_server + withdraw_path(app, answered), 200)
    page.get_by_role("button", name=translated(locale, "Confirm")).click()
    expect(page.get_by_role("heading", name=translated(locale, "Done"))).to_be_visible()
    assert_accessible(page)
    screenshot(page, artifacts / f"page-withdrawn-{locale}-360.png")

    # A link past its age: a fresh one offered, and asked for.
    expired_link = live_server + survey_path(app, expiring)
    clock.advance(days=app.config["LINK_MAX_AGE_DAYS"] + 1)
    check("410-expired", expired_link, 410)
    page.get_by_role("button", name=translated(locale, "Send me a new link")).click()
    expect(page.locator("html")).to_have_attribute("lang", locale)
    assert_accessible(page)
    screenshot(page, artifacts / f"page-renewed-{locale}-360.png")

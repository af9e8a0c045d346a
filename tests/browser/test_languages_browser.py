"""Each shipped language end to end: the email, then its pages on a phone."""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from survey import db, outbox
from survey.answers.models import Response
from tests.browser.test_survey_browser import assert_no_horizontal_scroll, screenshot
from tests.conftest import SmtpSink, free_port
from tests.factories import make_departure
from tests.test_languages import translated
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


@pytest.mark.parametrize("locale", ["de", "fr", "es"])
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
    departure = make_departure(app, locale=locale, company="Acme")
    with app.app_context():
        assert outbox.deliver_due().sent == 1
    [email] = smtp.messages
    subject = str(make_header(decode_header(email["Subject"])))
    assert subject.startswith(translated(locale, "One question before you go"))
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

    # The reason clicked in the email, to confirm, in the customer's language.
    page.goto(reason_link.group(1))
    expect(page.locator("html")).to_have_attribute("lang", locale)
    reason = translated(locale, "It costs more than it is worth to us")
    expect(page.get_by_text(reason)).to_be_visible()
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-confirm-360.png")
    page.get_by_role("button", name=translated(locale, "Send this answer")).click()

    # Page 2, then the thanks, still in the customer's language.
    expect(page).to_have_url(re.compile(r"/more$"))
    expect(page.locator("html")).to_have_attribute("lang", locale)
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-page2-360.png")
    page.get_by_role("button", name=translated(locale, "Send"), exact=True).click()
    expect(page).to_have_url(re.compile(r"/thanks$"))
    expect(
        page.get_by_role("heading", name=translated(locale, "Thank you"))
    ).to_be_visible()
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    screenshot(page, artifacts / f"survey-{locale}-thanks-360.png")

    with app.app_context(), db.new_session() as session:
        [saved] = session.scalars(
            select(Response).where(Response.departure_id == departure.id)
        )
        assert saved.reason == "too_expensive"

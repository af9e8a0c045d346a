"""The survey's admin pages in a real browser: brand, reasons, a language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from survey.demo import DEMO_BRAND
from tests.browser.conftest import sign_in
from tests.browser.test_survey_browser import assert_no_horizontal_scroll, screenshot
from tests.factories import make_user

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}


def test_an_admin_brands_the_survey_adds_a_reason_and_previews_german(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
) -> None:
    app, _ = live_app
    page = browser_page
    admin = make_user(app, "admin", name="Ada Admin")
    sign_in(page, live_server, admin.email)

    # The brand, on a phone.
    page.get_by_role("link", name="Survey", exact=True).click()
    page.get_by_label("Company name, as your customers know it").fill(
        DEMO_BRAND["company_name"]
    )
    page.get_by_label("Accent colour").fill(DEMO_BRAND["accent_color"])
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved: customers see it from now on.")).to_be_visible()
    expect(page.get_by_text("One question from Northwind Analytics")).to_be_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, artifacts / "admin-survey-brand-360.png")

    # A reason of the team's own.
    page.get_by_role("link", name="Reasons").click()
    page.get_by_label("New reason's code").first.fill("data_migration")
    page.get_by_label("Label (English)").first.fill("Moving our data was too hard")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.get_by_text(re.compile(r"Saved as version \d+"))).to_be_visible()
    expect(page.get_by_text("Moving our data was too hard")).to_be_visible()
    screenshot(page, artifacts / "admin-survey-reasons-360.png")

    # The German wording, previewed before saving.
    page.get_by_role("link", name="Wording: Deutsch").click()
    page.get_by_label("Answer “Moving our data was too hard”").fill(
        "Der Datenumzug war zu schwer"
    )
    page.get_by_role("button", name="Preview").click()
    preview = page.locator(".preview")
    expect(preview).to_contain_text("Eine Frage von Northwind Analytics")
    # The real first page and the real email, each drawn as the customer
    # sees them: the page with its stylesheet, the email with its inline styles.
    survey_page = page.frame_locator('iframe[title^="The survey\'s first"]')
    expect(survey_page.get_by_label("Der Datenumzug war zu schwer")).to_be_visible()
    expect(survey_page.locator("header.brand-header")).to_contain_text("Northwind")
    assert (
        survey_page.locator("main.page").evaluate(
            "main => getComputedStyle(main).maxWidth"
        )
        == "640px"
    )  # 40rem: style.css is drawn
    # Page 2 as after the first reason with a follow-up question: the team's
    # own reason among the other factors, the consent.
    page_two = page.frame_locator('iframe[title^="The survey\'s second"]')
    expect(page_two.locator("h1")).to_have_text("Noch ein paar Fragen")
    expect(page_two.get_by_label("Der Datenumzug war zu schwer")).to_be_visible()
    expect(page_two.locator("fieldset.consent")).to_be_visible()
    email = page.frame_locator("iframe[title^='The invitation']")
    expect(
        email.get_by_role("link", name="Der Datenumzug war zu schwer")
    ).to_be_visible()
    assert (
        email.locator("body")
        .evaluate("body => getComputedStyle(body).fontFamily")
        .startswith("Arial")
    )  # the inline styles are drawn
    assert_no_horizontal_scroll(page)
    screenshot(page, artifacts / "admin-survey-wording-de-360.png")
    page.set_viewport_size(DESKTOP)
    screenshot(page, artifacts / "admin-survey-wording-de-1280.png")
    page.get_by_role("link", name="Reasons").click()
    screenshot(page, artifacts / "admin-survey-reasons-1280.png")

"""The survey in a real browser on a 360px phone screen: fill it in end to end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from survey import db
from survey.answers.models import Response
from survey.branding.logos import checked_logo
from survey.consent import ConsentEvent
from survey.demo import DEMO_BRAND, DEMO_LOGO
from survey.departures.models import Departure
from tests.browser.conftest import VIEWPORT
from tests.factories import make_departure, set_brand, survey_path

pytestmark = pytest.mark.browser

WIDTH = 360
#: A laptop's screen.
DESKTOP = {"width": 1280, "height": 800}


def assert_no_horizontal_scroll(page: Page) -> None:
    # Measured once the stylesheet applies: a page seen before its load event
    # (a slow CI run) can be laid out unstyled, a long word at full width.
    page.wait_for_load_state("load")
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= WIDTH, f"{page.url} scrolls sideways: {scroll_width}px"


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def with_demo_brand(app: Flask) -> None:
    """Ask as the demo company does: its name, logo and colour."""
    set_brand(app, **DEMO_BRAND, logo=checked_logo(DEMO_LOGO))


def press_tab_until(page: Page, description: str, check: str) -> None:
    """Press Tab until the focused element satisfies ``check`` (a JavaScript
    test of ``el``), checking that every element reached shows its focus."""
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            f"""() => {{
                const el = document.activeElement;
                return {{
                    found: Boolean(el && ({check})),
                    outline: getComputedStyle(el).outlineStyle,
                    what: el.outerHTML.slice(0, 80),
                }};
            }}"""
        )
        assert focused["outline"] != "none", f"focus not shown on {focused['what']}"
        if focused["found"]:
            return
    raise AssertionError(f"Tab never reached {description}")


@dataclass
class Survey:
    """A departure's survey, and the browser page to open it in."""

    app: Flask
    page: Page
    departure: Departure
    link: str


@pytest.fixture
def survey(live_app: tuple[Flask, str], live_server: str, browser_page: Page) -> Survey:
    app, _ = live_app
    with_demo_brand(app)
    departure = make_departure(app, contact_name="Ada", company="Acme")
    return Survey(
        app, browser_page, departure, live_server + survey_path(app, departure)
    )


def test_survey_on_a_small_phone(survey: Survey, artifacts: Path) -> None:
    app, page, departure = survey.app, survey.page, survey.departure

    # Page 1: the one question, readable without sideways scrolling.
    page.goto(survey.link)
    expect(page.get_by_text("What is the main reason you are leaving?")).to_be_visible()
    assert_no_horizontal_scroll(page)

    # The keyboard reaches the first answer, and its focus is visible.
    page.keyboard.press("Tab")
    focused = page.evaluate(
        """() => {
            const el = document.activeElement;
            return {type: el.type, outline: getComputedStyle(el).outlineStyle};
        }"""
    )
    assert focused["type"] == "radio"
    assert focused["outline"] != "none"

    page.locator("label", has_text="It is missing something we need").click()
    expect(page.get_by_label("It is missing something we need")).to_be_checked()
    screenshot(page, artifacts / "survey-page1-360.png")
    page.get_by_role("button", name="Send my answer").click()

    # Page 2: optional questions and the consent, unticked until ticked.
    expect(page).to_have_url(survey.link + "/more")
    assert_no_horizontal_scroll(page)
    page.get_by_label("It costs more than it is worth to us").check()
    page.get_by_label("Too many bugs or problems").check()
    page.get_by_label("Which feature were you missing most?").fill("SAML sign-on")
    page.get_by_label("Anything else you would like us to know?").fill("Needed SSO")
    which_one = page.get_by_label("If another product, which one? (optional)")
    expect(which_one).to_be_hidden()  # asked only after "Another product"
    page.get_by_label("Another product", exact=True).check()
    expect(which_one).to_be_visible()
    which_one.fill("Globex")
    consent = page.get_by_label("Yes, you may contact me later about coming back")
    expect(consent).not_to_be_checked()
    page.locator("label", has_text="Yes, you may contact me later").click()
    expect(consent).to_be_checked()
    assert_no_horizontal_scroll(page)
    screenshot(page, artifacts / "survey-page2-360.png")
    page.get_by_role("button", name="Send", exact=True).click()

    # Thanks: what was kept, including the consent.
    expect(page).to_have_url(survey.link + "/thanks")
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    expect(page.get_by_text("Yes, you agreed")).to_be_visible()
    assert_no_horizontal_scroll(page)
    screenshot(page, artifacts / "survey-thanks-360.png")

    with app.app_context(), db.new_session() as session:
        [saved] = session.scalars(
            select(Response).where(Response.departure_id == departure.id)
        )
        assert saved.reason == "missing_features"
        assert saved.factors == ["too_expensive", "product_issues"]
        assert saved.follow_up_answer == "SAML sign-on"
        assert saved.details == "Needed SSO"
        assert (saved.destination, saved.destination_name) == ("competitor", "Globex")
        actions = session.scalars(
            select(ConsentEvent.action).where(ConsentEvent.departure_id == departure.id)
        ).all()
        assert actions == ["granted"]


def test_the_survey_can_be_answered_with_the_keyboard_alone(
    survey: Survey, artifacts: Path
) -> None:
    app, page, departure, link = (
        survey.app,
        survey.page,
        survey.departure,
        survey.link,
    )
    page.goto(link)
    # Page 1: into the reasons, an arrow key to the second, then the button.
    press_tab_until(page, "the first reason", "el.type === 'radio'")
    page.keyboard.press("ArrowDown")
    expect(page.get_by_label("It is missing something we need")).to_be_checked()
    press_tab_until(page, "the button", "el.tagName === 'BUTTON'")
    page.keyboard.press("Enter")

    # Page 2: the consent ticked with the space bar, then sent.
    expect(page).to_have_url(link + "/more")
    press_tab_until(page, "the consent", "el.name === 'winback_consent'")
    page.keyboard.press("Space")
    press_tab_until(page, "the button", "el.tagName === 'BUTTON'")
    page.keyboard.press("Enter")

    # Thanks: the way back to the answers, reached by the keyboard.
    expect(page).to_have_url(link + "/thanks")
    press_tab_until(page, "the change link", "el.textContent === 'Change my answers'")
    screenshot(page, artifacts / "survey-keyboard-thanks-360.png")
    with app.app_context(), db.new_session() as session:
        [saved] = session.scalars(
            select(Response).where(Response.departure_id == departure.id)
        )
        assert saved.reason == "missing_features"
        actions = session.scalars(
            select(ConsentEvent.action).where(ConsentEvent.departure_id == departure.id)
        ).all()
        assert actions == ["granted"]


def test_a_long_word_in_an_answer_does_not_widen_the_thanks_page(
    live_app: tuple[Flask, str], live_server: str, browser_page: Page
) -> None:
    app, _ = live_app
    page = browser_page
    departure = make_departure(app)
    long_word = "https://globex.example/" + "enterprisesinglesignon" * 4

    page.goto(live_server + survey_path(app, departure))
    page.locator("label", has_text="Something else").click()
    page.get_by_label("In your own words (optional)").fill(long_word)
    page.get_by_role("button", name="Send my answer").click()
    page.get_by_role("link", name="Skip these questions").click()

    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    expect(page.get_by_text(long_word)).to_be_visible()
    assert_no_horizontal_scroll(page)


def test_a_reason_tapped_in_the_email_counts_with_one_more_tap(
    survey: Survey, artifacts: Path
) -> None:
    """The confirmation's button shows without scrolling on a 360x740 phone."""
    app, page, departure, link = (
        survey.app,
        survey.page,
        survey.departure,
        survey.link,
    )

    page.goto(link + "?reason=too_expensive")
    expect(page.get_by_text("It costs more than it is worth to us")).to_be_visible()
    send = page.get_by_role("button", name="Send this answer")
    box = send.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= page.viewport_size["height"], box
    assert_no_horizontal_scroll(page)
    screenshot(page, artifacts / "survey-confirm-360.png")
    send.click()
    expect(page).to_have_url(link + "/more")

    # Another reason tapped later is offered as a change, not saved.
    page.goto(link + "?reason=switched")
    expect(page.get_by_role("heading", name="Change your answer?")).to_be_visible()
    change = page.get_by_role("button", name="Change my answer")
    box = change.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= page.viewport_size["height"], box
    screenshot(page, artifacts / "survey-confirm-change-360.png")
    page.set_viewport_size(DESKTOP)
    screenshot(page, artifacts / "survey-confirm-change-1280.png")
    page.set_viewport_size(VIEWPORT)
    with app.app_context(), db.new_session() as session:
        [saved] = session.scalars(
            select(Response).where(Response.departure_id == departure.id)
        )
        assert saved.reason == "too_expensive"

    # Or neither: the whole question again, the saved answer chosen.
    page.get_by_role("link", name="Choose another answer").click()
    expect(page).to_have_url(link)
    expect(page.get_by_label("It costs more than it is worth to us")).to_be_checked()


def test_page_2_after_a_better_alternative_asks_which_once(
    survey: Survey, artifacts: Path
) -> None:
    page, link = survey.page, survey.link
    page.goto(link + "?reason=switched")
    page.get_by_role("button", name="Send this answer").click()
    expect(page).to_have_url(link + "/more")
    expect(
        page.get_by_label("What made the alternative better for you?")
    ).to_be_visible()
    which_one = page.get_by_label("If another product, which one? (optional)")
    expect(which_one).to_be_hidden()
    page.get_by_label("Another product", exact=True).check()
    expect(which_one).to_be_visible()
    expect(page.get_by_text("Which alternative")).to_have_count(0)
    assert_no_horizontal_scroll(page)
    screenshot(page, artifacts / "survey-page2-switched-360.png")
    page.set_viewport_size(DESKTOP)
    screenshot(page, artifacts / "survey-page2-switched-1280.png")

"""/insights in a real browser: change the period, follow a said-versus-found
count to the queue, and look at the page on a desktop and a phone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.test_review_browser import DESKTOP, listed_companies, screenshot
from tests.factories import make_user
from tests.insights_data import build_story

pytestmark = pytest.mark.browser


def test_change_the_period_and_follow_a_cell_to_the_queue(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
) -> None:
    app, _ = live_app
    page = browser_page
    companies = build_story(app)  # March 2026; today is later
    csm = make_user(app, "csm")

    page.set_viewport_size(DESKTOP)
    sign_in(page, live_server, csm.email)
    page.get_by_role("link", name="Insights").click()
    expect(page.get_by_role("heading", name="Insights", exact=True)).to_be_visible()
    expect(page.get_by_text("No departures in this period.")).to_be_visible()

    # March 2026: the figures worked out in tests/test_insights.py.
    page.locator("#from").fill("2026-03-01")
    page.locator("#to").fill("2026-03-31")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/insights\?.*from=2026-03-01"))
    reasons = page.get_by_role("region", name="Why they say they leave")
    expect(reasons.get_by_role("row").nth(1)).to_contain_text("$300.00")
    said = page.get_by_role("region", name="Said versus found")
    expect(said.get_by_role("strong")).to_have_text("100 %")
    # Over time: departures, then the MRR lost in each currency, by reason.
    over_time = page.get_by_role("region", name="Over time")
    usd = over_time.get_by_role(
        "img", name="MRR lost per month in USD, by stated reason"
    )
    expect(usd).to_be_visible()
    expect(over_time).to_contain_text("$484.99 of MRR lost in USD")
    screenshot(page, artifacts / "insights-1280.png")
    page.set_viewport_size({"width": 360, "height": 740})
    screenshot(page, artifacts / "insights-360.png")
    # On a phone the charts fit the screen, and so does the page.
    for chart in over_time.get_by_role("img").all():
        box = chart.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360, box
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    over_time.screenshot(path=str(artifacts / "insights-over-time-360.png"))

    # "Too expensive", found "poor fit": one postmortem, d1's.
    page.set_viewport_size(DESKTOP)
    row = said.get_by_role("row").filter(has_text="It costs more than it is worth")
    row.get_by_role("link", name="1").first.click()
    expect(page).to_have_url(re.compile(r"/review\?.*root_cause="))
    assert listed_companies(page) == [companies["d1"]]

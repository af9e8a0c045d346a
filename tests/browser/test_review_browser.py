"""The staff side in a real browser: filter the queue, write and finish a postmortem."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from survey import db
from survey.review.models import Postmortem
from survey.review_items import ReviewItem
from tests.browser.conftest import sign_in
from tests.conftest import Clock
from tests.factories import make_departure, make_user, submit, survey_path

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def listed_companies(page: Page) -> list[str]:
    """Return the companies of the queue's rows, top to bottom."""
    return page.locator("table.queue tbody tr td:nth-child(2) a").all_inner_texts()


def test_review_a_departure_and_finish_its_postmortem(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
    clock: Clock,
) -> None:
    app, _ = live_app
    page = browser_page
    csm = make_user(app, "csm", name="Casey Csm")
    answers = {
        "Acme": ("missing_features", 49_900, "smb"),
        "Globex": ("too_expensive", 129_900, "enterprise"),
        "Initech": ("too_expensive", 9_900, "smb"),
    }
    departures = {}
    for company, (reason, mrr_cents, segment) in answers.items():
        departure = make_departure(
            app, company=company, mrr_cents=mrr_cents, segment=segment
        )
        answered = submit(
            app.test_client(), survey_path(app, departure), {"reason": reason}
        )
        assert answered.status_code == 303
        departures[company] = departure
    globex = departures["Globex"]
    due = clock.current.date() + timedelta(days=14)

    # Sign in on a phone: the CSM lands on the queue, largest loss first.
    sign_in(page, live_server, csm.email)
    expect(page).to_have_url(f"{live_server}/review")
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    assert listed_companies(page) == ["Globex", "Acme", "Initech"]
    screenshot(page, artifacts / "review-queue-360.png")

    # On a desktop screen: filter by stated reason, then by search text.
    page.set_viewport_size(DESKTOP)
    page.locator("#reason").select_option("too_expensive")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/review\?.*reason=too_expensive"))
    assert listed_companies(page) == ["Globex", "Initech"]
    page.locator("#q").fill("glob")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/review\?.*q=glob"))
    expect(page.locator("#reason")).to_have_value("too_expensive")
    expect(page.locator("#q")).to_have_value("glob")
    assert listed_companies(page) == ["Globex"]
    row = page.locator("table.queue tbody tr")
    expect(row).to_contain_text("It costs more than it is worth to us")
    expect(row).to_contain_text("$1,299.00")
    expect(row).to_contain_text("New")
    screenshot(page, artifacts / "review-queue.png")

    # Open the item: the customer's answer and the account are shown.
    page.get_by_role("link", name="Globex").click()
    expect(page).to_have_url(f"{live_server}/review/{globex.public_id}")
    expect(page.get_by_role("heading", name="Globex")).to_be_visible()
    expect(page.locator("h1 .status")).to_have_text("New")
    expect(page.locator("#answers-heading + dl")).to_contain_text(
        "It costs more than it is worth to us"
    )
    screenshot(page, artifacts / "review-item.png")

    # The postmortem: two root causes, one primary, one action item.
    page.locator("#what_happened").fill("Renewal price rose 40% with no new value.")
    page.locator("#root_causes-oversold").check()
    page.locator("#root_causes-failed_adoption").check()
    page.locator("#primary_cause-oversold").check()
    page.locator("#preventable-partly").check()
    page.locator("#action_items-0-text").fill("Price renewals with the customer")
    page.locator("#action_items-0-team").select_option("sales")
    page.locator("#action_items-0-owner").fill("Dana Sales")
    page.locator("#action_items-0-due_date").fill(due.isoformat())
    page.get_by_role("button", name="Mark postmortem done").click()

    # Back at the top of the item, where the confirmation shows.
    expect(page).to_have_url(f"{live_server}/review/{globex.public_id}")
    expect(page.get_by_role("status")).to_have_text("Postmortem marked done.")
    expect(page.locator("h1 .status")).to_have_text("Postmortem done")
    expect(page.locator("#postmortem")).to_contain_text("Marked done")
    # Done, it reads as a document; "edit" brings the form, choices kept.
    read_view = page.locator("#postmortem .read-view")
    expect(read_view).to_contain_text("Renewal price rose 40% with no new value.")
    expect(read_view).to_contain_text("Price renewals with the customer")
    screenshot(page, artifacts / "review-postmortem-read.png")
    page.get_by_role("link", name="Edit the postmortem").click()
    expect(page.locator("#what_happened")).to_have_value(
        "Renewal price rose 40% with no new value."
    )
    expect(page.locator("#root_causes-oversold")).to_be_checked()
    expect(page.locator("#root_causes-failed_adoption")).to_be_checked()
    expect(page.locator("#primary_cause-oversold")).to_be_checked()
    expect(page.locator("#preventable-partly")).to_be_checked()
    expect(page.locator("#action_items-0-text")).to_have_value(
        "Price renewals with the customer"
    )
    expect(page.locator("#action_items-0-due_date")).to_have_value(due.isoformat())
    screenshot(page, artifacts / "review-postmortem-done.png")

    with app.app_context(), db.new_session() as session:
        item = session.scalar(
            select(ReviewItem).where(ReviewItem.departure_id == globex.id)
        )
        assert item is not None
        assert item.status == "postmortem_done"
        others = session.scalars(
            select(ReviewItem.status).where(ReviewItem.departure_id != globex.id)
        ).all()
        assert others == ["new", "new"]
        postmortem = session.scalar(
            select(Postmortem).where(Postmortem.departure_id == globex.id)
        )
        assert postmortem is not None
        assert postmortem.done_at == clock.current
        assert postmortem.updated_by_id == csm.id
        assert postmortem.what_happened == "Renewal price rose 40% with no new value."
        assert postmortem.preventable == "partly"
        causes = {cause.code: cause.is_primary for cause in postmortem.root_causes}
        assert causes == {"oversold": True, "failed_adoption": False}
        [action] = postmortem.action_items
        assert (action.text, action.team, action.owner, action.due_date) == (
            "Price renewals with the customer",
            "sales",
            "Dana Sales",
            due,
        )
        assert action.done is False

    # The action item is listed among the open ones, linked to its postmortem.
    page.get_by_role("link", name="Action items").click()
    expect(page).to_have_url(f"{live_server}/review/actions")
    [action_row] = page.locator("tbody tr").all()
    expect(action_row).to_contain_text(due.isoformat())
    expect(action_row).to_contain_text("Sales")
    expect(action_row).to_contain_text("Dana Sales")
    expect(action_row).to_contain_text("Price renewals with the customer")
    expect(action_row.get_by_role("link", name="Globex")).to_have_attribute(
        "href", f"/review/{globex.public_id}#postmortem"
    )
    screenshot(page, artifacts / "review-actions.png")

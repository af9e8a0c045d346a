"""Every staff page on `make run`'s demo data, at a laptop's and a phone's size.

Each page state is drawn at 1280x800 and at 360x740, saved as a screenshot
(test-artifacts/staff-<page>-<width>.png) and checked: nothing scrolls
sideways, no block of words is squeezed narrower than 200 px on the laptop,
and axe-core finds no violation. The queue must show its Status and Age
columns and at least ten items without scrolling on the laptop; a refused
postmortem save must put focus on its error summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from survey import db
from survey.answers.models import Response
from survey.demo import load_demo
from survey.departures.models import Departure
from survey.review import queue
from survey.review.models import Postmortem
from survey.review_items import ReviewItem
from survey.staff.models import StaffUser
from survey.vocabulary import FOLLOW_UP_TEXTS
from tests.browser.conftest import sign_in
from tests.factories import (
    login,
    make_departure,
    make_user,
    submit,
    survey_path,
)

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
SIZES = {"1280": LAPTOP, "360": PHONE}

#: One unbroken word of 75 characters, and a staff name of 45.
LONG_COMPANY = (
    "InternationalisierungsdienstleistungsgesellschaftsvermoegensverwaltungsGmbH"
)
LONG_STAFF_NAME = "Maximiliana Theodora Wolfeschlegelsteinhausen"
LEAVING_NAME = "Rita Leaving"

#: Elements that hold words people read (customer's or staff's).
TEXT_BLOCKS = (
    "main :is(p, dd, dt, li, td, th, blockquote, label, legend, figcaption,"
    " .quote, .version)"
)

#: The blocks of five words or more (their own text, not their parts')
#: narrower than 200 px, hidden ones aside.
SQUEEZED = """(selector) => {
  const own = (el) => [...el.childNodes].filter((node) => node.nodeType === 3)
    .map((node) => node.textContent).join(' ').trim();
  const width = (el) => Math.round(el.getBoundingClientRect().width);
  return [...document.querySelectorAll(selector)]
    .filter((el) => el.getClientRects().length)
    .filter((el) => !el.closest('.visually-hidden, summary'))
    // A cross-tab's column headings are labels of numbers, not words to read.
    .filter((el) => !el.matches('table.matrix thead th:not(:first-child)'))
    .filter((el) => own(el).split(/\\s+/).length >= 5 && width(el) < 200)
    .map((el) => `${el.tagName.toLowerCase()} ${width(el)}px: ${own(el)}`);
}"""


#: The tables wider than their box, but for scrollable regions (cross-tabs).
CUT_OFF = """[...document.querySelectorAll('.table-wrap:not([role=region])')]
  .filter((el) => el.scrollWidth > el.clientWidth + 1)
  .map((el) => el.querySelector('th, td')?.innerText)"""


@dataclass(frozen=True)
class Demo:
    """The demo data's people and the items worth looking at."""

    admin: str
    marketing: str
    #: (follow-up reason, item) of the demo's own items whose customer
    #: answered a follow-up question, the longest questions first.
    answered_with_follow_up: tuple[tuple[str, str], ...]
    answered_at_length: str
    finished: str
    draft_free: str
    person: str
    #: A CSM in every "Assign to" list, deactivated on the way.
    leaving: str


@pytest.fixture
def demo(live_app: tuple[Flask, str]) -> Demo:
    """`make run`'s demo data, staff of each role, and interesting items."""
    app, _ = live_app
    with app.app_context(), db.write_session() as session:
        load_demo(session)
        session.commit()
    # A customer with a lot to say, one unbroken word of it (a pasted link).
    talker = make_departure(app, company="Very Long Answers Ltd")
    page1 = survey_path(app, talker)
    customer = app.test_client()
    assert submit(customer, page1, {"reason": "missing_features"}).status_code == 303
    long_words = "We needed an audit trail for every export. " * 12
    pasted = "https://tickets.example/" + "x" * 240
    more = submit(
        customer,
        f"{page1}/more",
        {"follow_up": long_words, "details": f"{long_words}\n{pasted}"},
    )
    assert more.status_code == 303
    admin = make_user(app, "admin", name="Ada Admin")
    marketing = make_user(app, "marketing", name="Max Marketing")
    leaving = make_user(app, "csm", name=LEAVING_NAME)
    # Words that do not break: a long staff name (in every "Assign to"
    # list), and an account whose names are long words, assigned to that
    # person, on the queue's first page below the fold (its lost MRR the
    # 20th largest: it is a rare row, the ten above the fold are ordinary).
    long_named = make_user(app, "csm", name=LONG_STAFF_NAME)
    with app.app_context(), db.new_session() as session:
        mid_page_mrr = session.scalar(
            select(ReviewItem.mrr_cents)
            .where(ReviewItem.status != "closed")
            .order_by(ReviewItem.mrr_cents.desc())
            .offset(19)
            .limit(1)
        )
    assert mid_page_mrr is not None
    stress = make_departure(
        app,
        company=LONG_COMPANY,
        contact_name="Bartholomaeus-Maximilian von "
        "Hohenzollern-Sigmaringen-Wittelsbach",
        contact_email="bartholomaeus.maximilian.hohenzollern-sigmaringen"
        "@verwaltungsgesellschaft.example",
        plan="enterprise_unlimited_seats_with_premium_support_and_sso_2024",
        mrr_cents=mid_page_mrr,
    )
    stress_page = survey_path(app, stress)
    assert submit(customer, stress_page, {"reason": "switched"}).status_code == 303
    with app.app_context(), db.write_session() as session:
        item = session.scalar(
            select(ReviewItem).where(ReviewItem.departure_id == stress.id)
        )
        assert item is not None
        queue.assign(session, item, long_named.id, actor_id=admin.id)
        session.commit()
    with app.app_context(), db.new_session() as session:
        open_items = (
            select(Departure.public_id)
            .join(ReviewItem, ReviewItem.departure_id == Departure.id)
            .outerjoin(Postmortem, Postmortem.departure_id == Departure.id)
            .where(ReviewItem.status.in_(("new", "in_review")))
            .where(Postmortem.id.is_(None))
        )
        # The demo's answers to follow-up questions (the page that broke),
        # one per question, the longest questions first.
        answered = session.execute(
            open_items.add_columns(Response.follow_up_reason)
            .join(Response, Response.departure_id == Departure.id)
            .where(Response.follow_up_answer.is_not(None))
            .where(Departure.id != talker.id)
            .order_by(Departure.id)
        ).all()
        follow_ups = {str(reason): public_id for public_id, reason in answered}
        follow_up = tuple(
            (reason, follow_ups[reason])
            for reason in sorted(
                follow_ups, key=lambda code: -len(FOLLOW_UP_TEXTS[code])
            )[:3]
        )
        finished = session.scalar(
            select(Departure.public_id)
            .join(Postmortem, Postmortem.departure_id == Departure.id)
            .where(Postmortem.done_at.is_not(None))
            .order_by(Departure.mrr_cents.desc())
            .limit(1)
        )
        free = session.scalars(open_items.order_by(Departure.id).limit(2)).all()
        person = session.scalar(
            select(Departure.contact_email).order_by(Departure.id).limit(1)
        )
    assert len(follow_up) == 3 and finished and len(free) == 2 and person
    return Demo(
        admin.email,
        marketing.email,
        follow_up,
        talker.public_id,
        finished,
        free[1],
        person,
        leaving.email,
    )


def check(page: Page, artifacts: Path, name: str, size: str) -> None:
    """Save the page, then check it reads well at this size."""
    page.screenshot(path=str(artifacts / f"staff-{name}-{size}.png"), full_page=True)
    sideways = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert sideways <= 0, f"{name} at {size} scrolls sideways by {sideways}px"
    # Nor is a table cut off in its box; a cross-tab may scroll, as a region.
    cut_off = page.evaluate(CUT_OFF)
    assert not cut_off, f"{name} at {size}: tables cut off: {cut_off}"
    if size == "1280":
        squeezed = page.evaluate(SQUEEZED, TEXT_BLOCKS)
        assert not squeezed, f"{name}: squeezed below 200px:\n" + "\n".join(squeezed)
    results = Axe().run(page)
    assert results.violations_count == 0, f"{name} at {size}:\n" + (
        results.generate_report()
    )


def visit(page: Page, base: str, path: str, status: int = 200) -> None:
    response = page.goto(base + path)
    assert response is not None and response.status == status, path


@pytest.mark.parametrize("size", SIZES)
def test_every_staff_page_reads_well_at_both_sizes(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
    demo: Demo,
    size: str,
) -> None:
    app, _ = live_app
    page, base = browser_page, live_server
    page.set_viewport_size(SIZES[size])
    shot: Callable[[str], None] = lambda name: check(page, artifacts, name, size)  # noqa: E731

    visit(page, base, "/login")
    shot("login")
    sign_in(page, base, demo.admin)
    expect(page).to_have_url(f"{base}/review")

    # The queue: Status and Age in view, ten items above the fold on a laptop.
    rows = page.locator("table.queue tbody tr")
    expect(rows.first).to_be_visible()
    shot("queue")
    # The account with long words is on this page, its row among the others.
    expect(page.get_by_role("link", name=LONG_COMPANY)).to_have_count(1)
    if size == "1280":
        for column in ("Status", "Age"):
            header = page.get_by_role("columnheader", name=column, exact=True)
            box = header.bounding_box()
            assert box is not None and box["x"] + box["width"] <= LAPTOP["width"]
        above_fold = [
            box
            for box in (row.bounding_box() for row in rows.all())
            if box is not None and box["y"] + box["height"] <= LAPTOP["height"]
        ]
        assert len(above_fold) >= 10, f"{len(above_fold)} items above the fold"
    else:
        # On a phone, filters and bulk changes fold away: the list comes first.
        expect(page.get_by_text("Filters", exact=True)).to_be_visible()
        expect(page.locator("#q")).to_be_hidden()
        box = rows.first.bounding_box()
        assert box is not None and box["y"] < PHONE["height"] / 2
        page.get_by_text("Filters", exact=True).click()
        expect(page.locator("#q")).to_be_visible()

    # Filters, the less used ones open because one of them is set.
    visit(
        page,
        base,
        "/review?status=&segment=enterprise&mrr_min=100&currency=usd&sort=oldest",
    )
    if size == "360":  # folded, saying how many filters are set
        page.get_by_text("Filters (3 set)", exact=True).click()
    expect(page.locator("details.more")).to_have_attribute("open", "")
    expect(page.locator(".error-summary")).to_have_count(0)
    expect(page.locator("#segment")).to_be_visible()
    expect(page.locator("#currency")).to_have_value("USD")  # as stored
    expect(page.locator("#csm")).to_be_visible()
    shot("queue-filtered")

    # The demo's items whose customer answered a follow-up question: the
    # question above its answer, the answers readable (a long staff name in
    # "Assign to" too). The first is "item"; the others are named by reason.
    answers = page.locator("#answers-heading ~ dl.answers")
    for number, (reason, public_id) in enumerate(demo.answered_with_follow_up):
        visit(page, base, f"/review/{public_id}")
        expect(answers).to_contain_text(str(FOLLOW_UP_TEXTS[reason]))
        # The account's facts beside the answers on a laptop, below on a phone.
        answers_box = page.locator(
            "section[aria-labelledby=answers-heading]"
        ).bounding_box()
        facts_box = page.locator(
            "section[aria-labelledby=facts-heading]"
        ).bounding_box()
        assert answers_box is not None and facts_box is not None
        if size == "1280":
            assert facts_box["x"] >= answers_box["x"] + answers_box["width"]
            assert abs(facts_box["y"] - answers_box["y"]) < 5
            # Short answers too: every answer has room to read.
            widths = [
                box["width"]
                for box in (dd.bounding_box() for dd in answers.locator("dd").all())
                if box is not None
            ]
            assert widths and min(widths) >= 200, f"{reason}: answers {widths}"
        else:
            assert facts_box["y"] >= answers_box["y"] + answers_box["height"]
        shot("item" if number == 0 else f"item-follow-up-{reason}")
    visit(page, base, f"/review/{demo.answered_at_length}")
    expect(answers).to_contain_text("audit trail")
    shot("item-long-answers")

    # A move the workflow refuses, and an assignment to someone who left
    # meanwhile: each summed up at the top of the review panel (focused),
    # its message at its field; the URL's GET is the item page again.
    page.locator("#status").select_option("in_review")
    page.get_by_role("button", name="Change status").click()
    expect(page.get_by_role("status")).to_contain_text("Status: In review.")
    page.locator("#status").select_option("postmortem_done")
    page.get_by_role("button", name="Change status").click()
    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Move to — Finish the postmortem first")
    expect(page.locator("#status")).to_have_attribute("aria-invalid", "true")
    shot("item-move-refused")
    with app.app_context(), db.write_session() as session:
        session.execute(
            update(StaffUser)
            .where(StaffUser.email == demo.leaving)
            .values(active=False)
        )
        session.commit()
    page.locator("#assignee").select_option(label=LEAVING_NAME)
    page.get_by_role("button", name="Assign", exact=True).click()
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Assign to — Choose someone who reviews.")
    expect(page.locator("#assignee-errors")).to_be_visible()
    shot("item-assign-refused")
    summary.get_by_role("link").click()
    expect(page.locator("#assignee")).to_be_focused()
    assert page.url.startswith(f"{base}/review/{demo.answered_at_length}/assign")
    visit(page, base, page.url.removeprefix(base).split("#")[0])  # its GET
    expect(page).to_have_url(f"{base}/review/{demo.answered_at_length}#review")

    # A finished postmortem reads as a document, with a way to edit it.
    visit(page, base, f"/review/{demo.finished}")
    expect(page.locator("#postmortem .read-view")).to_be_visible()
    shot("item-postmortem-done")
    page.locator("#postmortem").get_by_role("link", name="Edit the postmortem").click()
    expect(page.locator("#what_happened")).to_be_visible()
    if size == "1280":  # an action's text gets the wide column
        text_box = page.locator("#action_items-0-text").bounding_box()
        owner_box = page.locator("#action_items-0-owner").bounding_box()
        assert text_box is not None and owner_box is not None
        assert text_box["width"] > 2 * owner_box["width"]
    shot("item-postmortem-edit")

    # A refused "Mark done": the summary says why, and has focus.
    visit(page, base, f"/review/{demo.draft_free}")
    page.locator("#action_items-0-text").fill("Call them in a month")
    page.get_by_role("button", name="Mark postmortem done").click()
    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Choose a team.")
    shot("item-postmortem-errors")

    # Someone else saves meanwhile: their version beside mine, field by field.
    other = app.test_client()
    assert login(other, demo.admin).status_code == 302
    theirs = submit(
        other,
        f"/review/{demo.draft_free}",
        {"what_happened": "Their account of it.", "intent": "save"},
        action=f"/review/{demo.draft_free}/postmortem",
    )
    assert theirs.status_code == 302
    assert theirs.location.endswith("#postmortem")
    page.locator("#action_items-0-team").select_option("customer_success")
    page.locator("#what_happened").fill("My account of it.")
    page.get_by_role("button", name="Save draft").last.click()
    expect(page.locator(".compare").first).to_contain_text("Their account of it.")
    shot("item-postmortem-conflict")

    visit(page, base, "/review/actions")
    shot("actions")
    visit(page, base, "/winback")
    first_row = page.locator("table.winback tbody tr").first
    expect(first_row).to_be_visible()
    if size == "360":  # the filters fold away: the list comes first
        expect(page.locator("#reason")).to_be_hidden()
        box = first_row.bounding_box()
        assert box is not None and box["y"] < PHONE["height"] / 2
    shot("winback")
    # An inverted range: "until" refused and explained, "from" still applied.
    visit(page, base, "/winback?since=2000-01-01&until=1999-01-01", 422)
    expect(page.locator(".error-summary")).to_contain_text("not after")
    expect(page.locator("table.winback tbody tr").first).to_be_visible()
    expect(page.locator("#until")).to_be_visible()  # refused: open at a phone too
    shot("winback-refused")
    visit(page, base, "/insights")
    if size == "360":  # the filters fold away: what they chose comes first
        expect(page.locator("#days")).to_be_hidden()
        box = page.locator("#scope").bounding_box()
        assert box is not None and box["y"] < PHONE["height"] / 2
    shot("insights")
    visit(page, base, "/insights?segment=enterprise")  # a filter set: open
    expect(page.locator("#segment")).to_have_value("enterprise")
    expect(page.locator("#segment")).to_be_visible()
    shot("insights-filtered")
    visit(page, base, "/admin/users")
    shot("users")
    visit(page, base, "/admin/contacts")
    shot("contacts")
    # Erasing: first what it would remove, then why not without the typed
    # confirmation.
    page.locator("#email").fill(demo.person)
    page.get_by_role("button", name="Erase their data…").click()
    expect(page.get_by_role("status")).to_contain_text("removes the personal data of")
    shot("contacts-erase-preview")
    page.get_by_role("button", name=re.compile(r"^Erase \d+ departure")).click()
    expect(page.locator(".error-summary")).to_be_focused()
    expect(page.get_by_role("status")).to_contain_text("removes the personal data of")
    shot("contacts-erase-unconfirmed")
    visit(page, base, "/admin/webhooks")
    shot("webhooks")
    for name, path in (
        ("survey-brand", "/admin/survey"),
        ("survey-reasons", "/admin/survey/reasons"),
        ("survey-wording", "/admin/survey/wording/en"),
        ("survey-versions", "/admin/survey/versions"),
    ):
        visit(page, base, path)
        shot(name)
    visit(page, base, "/account")
    shot("account")
    visit(page, base, "/review/no-such-item", 404)
    expect(page.get_by_role("navigation", name="Staff")).to_be_visible()
    shot("404")

    # After a bulk change the queue says what changed, and on a laptop ten
    # items still show above the fold.
    visit(page, base, "/review")
    rows = page.locator("table.queue tbody tr")
    for row in rows.all()[:2]:
        row.locator("input[type=checkbox]").check()
    if size == "360":
        page.get_by_text("Change the selected items", exact=True).click()
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status")).to_contain_text("2 items assigned to Ada")
    shot("queue-after-bulk")
    if size == "1280":
        above_fold = [
            box
            for box in (row.bounding_box() for row in rows.all())
            if box is not None and box["y"] + box["height"] <= LAPTOP["height"]
        ]
        assert len(above_fold) >= 10, f"{len(above_fold)} items above the fold"

    # Marketing may not open the queue: a 403 inside the staff layout.
    page.context.clear_cookies()
    sign_in(page, base, demo.marketing)
    visit(page, base, "/review", 403)
    expect(page.get_by_role("navigation", name="Staff")).to_be_visible()
    shot("403")


@pytest.mark.parametrize("size", SIZES)
def test_a_failure_and_giving_up_ones_own_access_read_well_at_both_sizes(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
    size: str,
) -> None:
    """The staff 500 page (inside the staff layout) and the question an admin
    is asked before removing their own admin role or account, checked as
    every staff page is: screenshots, no sideways scroll, axe-core."""
    app, _ = live_app

    # Registered before the app's first request: a page that fails.
    @app.get("/review/fails-for-the-test")
    def fails() -> str:
        raise RuntimeError("kaboom")

    page, base = browser_page, live_server
    page.set_viewport_size(SIZES[size])
    me = make_user(app, "admin", name=LONG_STAFF_NAME)
    make_user(app, "admin", name="Olga Other")  # someone to give it back
    sign_in(page, base, me.email)
    expect(page).to_have_url(f"{base}/review")

    visit(page, base, "/review/fails-for-the-test", 500)
    expect(page.get_by_role("heading", name="Something went wrong")).to_be_visible()
    expect(page.get_by_role("navigation", name="Staff")).to_be_visible()
    expect(page.get_by_text("kaboom")).to_have_count(0)
    check(page, artifacts, "500", size)

    visit(page, base, "/admin/users")
    page.get_by_label(f"Role of {LONG_STAFF_NAME}").select_option("csm")
    mine = page.locator("tr", has=page.get_by_label(f"Role of {LONG_STAFF_NAME}"))
    mine.get_by_role("button", name="Change role").click()
    expect(
        page.get_by_role("heading", name="Give up your own admin access?")
    ).to_be_visible()
    expect(page.get_by_role("button", name="Make me CSM")).to_be_visible()
    check(page, artifacts, "confirm-own-access", size)

    visit(page, base, "/admin/users")
    mine.get_by_role("button", name="Deactivate").click()
    expect(page.get_by_role("button", name="Deactivate my account")).to_be_visible()
    check(page, artifacts, "confirm-own-deactivation", size)
    # Keeping it changes nothing.
    page.get_by_role("link", name="Keep my admin access").click()
    expect(page).to_have_url(f"{base}/admin/users")

"""Integrations in a real browser: an admin adds a webhook and reads its log;
the queue shows Stripe's departures without a contact; a customer who stayed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import stripe
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from survey import db, outbox
from survey.outbox import OutboxMessage
from tests.browser.conftest import sign_in
from tests.browser.test_review_browser import DESKTOP, screenshot
from tests.factories import make_departure, make_user, path_of

pytestmark = pytest.mark.browser

SECRET = "whsec_browser"
_events = itertools.count(1)


def stripe_event(app: Flask, kind: str, subscription: dict, previous=None) -> None:
    data = {"object": subscription}
    if previous is not None:
        data["previous_attributes"] = previous
    body = json.dumps({"id": f"evt_{next(_events)}", "type": kind, "data": data})
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    answer = app.test_client().post(
        "/api/v1/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def test_webhooks_page_the_queue_and_a_customer_who_stayed(
    live_app: tuple[Flask, str],
    live_server: str,
    browser_page: Page,
    artifacts: Path,
) -> None:
    app, _ = live_app
    app.config.update(WEBHOOKS_ALLOW_PRIVATE=True, STRIPE_WEBHOOK_SECRET=SECRET)
    page = browser_page
    admin = make_user(app, "admin", name="Ada Admin")
    sign_in(page, live_server, admin.email)

    # Add an endpoint on a phone: the secret is shown once.
    page.goto(f"{live_server}/admin/webhooks")
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    page.locator("#url").fill("http://127.0.0.1:9/exit-survey-hooks/a-rather-long-path")
    page.get_by_label("departure.recorded", exact=False).check()
    page.get_by_label("response.submitted", exact=False).check()
    page.get_by_role("button", name="Add the endpoint").click()
    secret = page.locator("code.secret").inner_text()
    assert secret.startswith("whsec_")
    screenshot(page, artifacts / "webhooks-added-360.png")

    # A delivery that fails shows in the log, with its error and a way to resend.
    make_departure(app, company="Acme")
    with app.app_context():
        outbox.deliver_due(limit=100)
    page.goto(f"{live_server}/admin/webhooks")
    expect(page.locator("code.secret")).to_have_count(0)
    log = page.locator("table").nth(1)
    expect(log).to_contain_text("departure.recorded")
    expect(log).to_contain_text("ConnectionError")
    screenshot(page, artifacts / "webhooks-log-360.png")
    page.set_viewport_size(DESKTOP)
    screenshot(page, artifacts / "webhooks-log-1280.png")
    page.get_by_role("button", name="Send again").first.click()
    expect(page.get_by_role("status")).to_contain_text("Queued again")

    # Stripe: one departure without any contact, one who stayed.
    stripe_event(
        app,
        "customer.subscription.deleted",
        {"id": "sub_nocontact", "customer": "cus_1", "currency": "eur", "metadata": {}},
    )
    stayed = {
        "id": "sub_stayed",
        "customer": "cus_2",
        "currency": "usd",
        "cancel_at_period_end": True,
        "current_period_end": 1_790_000_000,
        "metadata": {"email": "stays@example.com", "company": "Stays Inc."},
    }
    stripe_event(
        app, "customer.subscription.updated", stayed, {"cancel_at_period_end": False}
    )
    with app.app_context(), db.new_session() as session:
        invitation = session.scalar(
            select(OutboxMessage).where(
                OutboxMessage.kind == "invitation",
                OutboxMessage.recipient == "stays@example.com",
            )
        )
        survey_url = invitation.body_text.split("Or open your personal survey:")[1]
    stripe_event(
        app,
        "customer.subscription.updated",
        {**stayed, "cancel_at_period_end": False},
        {"cancel_at_period_end": True},
    )
    page.goto(f"{live_server}/review")
    expect(page.locator("table.queue")).to_contain_text("No contact")
    screenshot(page, artifacts / "queue-no-contact-1280.png")
    page.set_viewport_size({"width": 360, "height": 740})
    screenshot(page, artifacts / "queue-no-contact-360.png")

    page.goto(live_server + path_of(survey_url.split()[0]))
    expect(page.get_by_role("heading", name="Thank you for staying")).to_be_visible()
    screenshot(page, artifacts / "survey-stayed-360.png")

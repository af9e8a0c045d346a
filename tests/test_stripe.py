"""Stripe intake: signed events become departures, once; Stripe's API read for
the contact, and waited for when it is down."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from flask import Flask
from sqlalchemy import func, select

from survey import cli, outbox
from survey.answers.models import Response
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from survey.review_items import ReviewItem
from survey.stripe_intake import MAX_ATTEMPTS, StripeEvent
from tests.factories import hidden_fields, login, make_user, path_of, submit

SECRET = "whsec_test_secret"
_ids = itertools.count(1)


@dataclass
class FakeStripe:
    """Stripe's API on loopback: customers by id; ``down`` answers 503;
    ``held``, while set, keeps each answer until ``release`` is set;
    ``asked`` is set by the first request."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    requests: list[str] = field(default_factory=list)
    held: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    asked: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def stripe_api() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append(self.path)
            fake.asked.set()
            if fake.held:
                assert fake.release.wait(timeout=30)
            customer_id = self.path.rsplit("/", 1)[-1]
            if fake.down:
                status, body = 503, {"error": {"message": "down"}}
            elif customer_id in fake.customers:
                status, body = 200, fake.customers[customer_id]
            else:
                status = 404
                body = {"error": {"type": "invalid_request_error", "message": "no"}}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_port}"
    fake.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def stripe_app(make_app, stripe_api) -> Flask:
    return make_app(
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_KEY="sk_test_123",
        STRIPE_API_BASE=stripe_api[1],
    )


@pytest.fixture
def stripe_mail_app(make_app, stripe_api, smtp) -> Flask:
    """A Stripe app whose mail worker sends to the test SMTP server."""
    return make_app(
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_KEY="sk_test_123",
        STRIPE_API_BASE=stripe_api[1],
        MAIL_SERVER=smtp.host,
        MAIL_PORT=smtp.port,
    )


def subscription(**fields: Any) -> dict[str, Any]:
    number = next(_ids)
    sub = {
        "id": f"sub_{number:06d}",
        "object": "subscription",
        "customer": f"cus_{number:06d}",
        "currency": "eur",
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": 1_780_000_000,
        "ended_at": 1_780_000_100,
        "current_period_end": 1_782_000_000,
        "metadata": {},
        "cancellation_details": {"feedback": "too_expensive", "comment": None},
        "items": {"data": [item(29_900)]},
    }
    sub.update(fields)
    return sub


def item(
    unit_amount: int, interval: str = "month", count: int = 1, quantity: int = 1
) -> dict[str, Any]:
    return {
        "quantity": quantity,
        "price": {
            "nickname": "Pro",
            "product": "prod_1",
            "currency": "eur",
            "unit_amount": unit_amount,
            "recurring": {"interval": interval, "interval_count": count},
        },
    }


def event(
    kind: str, sub: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An event, made by Stripe after every event made before it."""
    data: dict[str, Any] = {"object": sub}
    if previous is not None:
        data["previous_attributes"] = previous
    number = next(_ids)
    return {
        "id": f"evt_{number:08d}",
        "object": "event",
        "type": kind,
        "created": 1_780_000_000 + number,
        "data": data,
    }


def signed(
    body: str, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=timestamp
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def customer(sub: dict[str, Any], email: str) -> dict[str, Any]:
    """Stripe's customer of ``sub``, as its API answers."""
    return {"id": sub["customer"], "object": "customer", "email": email, "name": None}


def staying(sub: dict[str, Any], how: str) -> dict[str, Any]:
    """The event of a customer who cancelled ``sub`` at the period's end and
    changes their mind: ``uncancelled`` (updated) or ``resumed``."""
    stayed = {**sub, "cancel_at_period_end": False}
    if how == "uncancelled":
        return event(
            "customer.subscription.updated", stayed, {"cancel_at_period_end": True}
        )
    return event("customer.subscription.resumed", stayed)


def worker_pass(app: Flask) -> None:
    """One pass of the mail worker, as production runs it."""
    result = app.test_cli_runner().invoke(args=["outbox", "send", "--once"])
    assert result.exit_code == 0, result.output


def handle_due(app: Flask) -> int:
    with app.app_context():
        return cli._handle_stripe_due()


def post(client, evt: dict[str, Any], **signing: Any) -> Any:
    body = json.dumps(evt)
    return client.post(
        "/api/v1/webhooks/stripe", data=body, headers=signed(body, **signing)
    )


def departures(session) -> list[Departure]:
    session.rollback()
    return list(session.scalars(select(Departure).order_by(Departure.id)))


def invitations(session) -> list[OutboxMessage]:
    session.rollback()
    return list(
        session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "invitation"))
    )


def test_a_deleted_subscription_becomes_a_departure(stripe_app, stripe_api, session):
    fake, _ = stripe_api
    sub = subscription(metadata={"segment": "smb", "email": "meta@example.com"})
    fake.customers[sub["customer"]] = {
        "id": sub["customer"],
        "object": "customer",
        "email": "Ada@Example.com",
        "name": "Ada Lovelace",
        "preferred_locales": ["fr"],
    }
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"received": True, "outcome": "handled"}
    [departure] = departures(session)
    assert departure.source == "stripe"
    assert departure.external_id == sub["id"]
    assert departure.contact_email == "ada@example.com"  # the API's, not metadata's
    assert departure.contact_name == "Ada Lovelace"
    assert (departure.plan, departure.mrr_cents, departure.currency) == (
        "Pro",
        29_900,
        "EUR",
    )
    assert departure.segment == "smb"
    assert departure.cancelled_at == datetime.fromtimestamp(sub["canceled_at"], UTC)
    assert departure.billing_reason == "too_expensive"
    [invitation] = invitations(session)
    assert invitation.recipient == "ada@example.com"
    assert fake.requests == [f"/v1/customers/{sub['customer']}"]
    # Handled: the stored event no longer holds the person's data.
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.payload) == ("done", None)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([item(5_000)], 5_000),
        ([item(120_000, "year")], 10_000),
        ([item(1_000, "week")], 4_333),  # 1000 x 52 / 12
        ([item(30_000, "month", count=3)], 10_000),
        ([item(24_000, "year", count=2)], 1_000),
        ([item(2_500, quantity=4), item(12_000, "year")], 11_000),
    ],
    ids=["monthly", "yearly", "weekly", "quarterly", "two-yearly", "multi-item"],
)
def test_mrr_is_normalized_to_a_month(stripe_app, session, items, expected):
    sub = subscription(items={"data": items}, metadata={"email": "m@example.com"})
    client = stripe_app.test_client()
    assert post(client, event("customer.subscription.deleted", sub)).status_code == 200
    [departure] = departures(session)
    assert departure.mrr_cents == expected


@pytest.mark.parametrize(
    "tamper",
    ["missing", "wrong_secret", "changed_body", "stale", "garbage_header"],
)
def test_unsigned_badly_signed_or_stale_events_are_refused(stripe_app, session, tamper):
    body = json.dumps(event("customer.subscription.deleted", subscription()))
    headers = signed(body)
    if tamper == "missing":
        del headers["Stripe-Signature"]
    elif tamper == "wrong_secret":
        headers = signed(body, secret="whsec_other")
    elif tamper == "changed_body":
        body = body.replace("too_expensive", "switched")
    elif tamper == "stale":
        headers = signed(body, timestamp=int(time.time()) - 301)
    else:
        headers["Stripe-Signature"] = "t=abc,v1=zz"
    response = stripe_app.test_client().post(
        "/api/v1/webhooks/stripe", data=body, headers=headers
    )
    assert response.status_code == 400
    assert response.json["error"] == "bad_signature"
    assert departures(session) == []
    assert session.scalar(select(func.count()).select_from(StripeEvent)) == 0


@pytest.mark.parametrize("order", ["old-first", "new-first"])
def test_while_the_secret_rolls_the_new_secret_signature_among_others_will_do(
    stripe_app, session, order
):
    """Stripe signs with the old secret and the new one while a secret rolls;
    the endpoint, set to the new one, finds its signature among them."""
    body = json.dumps(
        event(
            "customer.subscription.deleted", subscription(metadata={"email": "r@x.io"})
        )
    )
    timestamp = int(time.time())

    def v1(secret: str) -> str:
        header = signed(body, secret=secret, timestamp=timestamp)["Stripe-Signature"]
        return header.split(",")[1]

    old, new = v1("whsec_old_secret"), v1(SECRET)
    assert old.startswith("v1=") and new.startswith("v1=") and old != new
    client = stripe_app.test_client()

    def post_signed(*signatures: str) -> Any:
        header = ",".join([f"t={timestamp}", *signatures])
        return client.post(
            "/api/v1/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    # The old secret's signature alone is no longer enough.
    refused = post_signed(old)
    assert refused.status_code == 400
    assert refused.json["error"] == "bad_signature"
    assert departures(session) == []
    response = post_signed(*([old, new] if order == "old-first" else [new, old]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["outcome"] == "handled"
    assert len(departures(session)) == 1


@pytest.mark.parametrize(("age", "status"), [(299, 200), (301, 400)])
def test_an_event_is_accepted_until_it_is_five_minutes_old(
    stripe_app, session, age, status
):
    evt = event(
        "customer.subscription.deleted", subscription(metadata={"email": "t@x.io"})
    )
    # Rounded up: the request's own milliseconds never turn 299 s into 300.
    signed_at = math.ceil(time.time()) - age
    response = post(stripe_app.test_client(), evt, timestamp=signed_at)
    assert response.status_code == status, response.get_data(as_text=True)
    assert len(departures(session)) == (1 if status == 200 else 0)


def test_a_signed_body_that_is_not_an_event_is_refused(stripe_app, session):
    body = json.dumps({"hello": "world"})
    response = stripe_app.test_client().post(
        "/api/v1/webhooks/stripe", data=body, headers=signed(body)
    )
    assert response.status_code == 400
    assert response.json["error"] == "bad_payload"
    assert session.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_without_a_secret_nothing_is_accepted(make_app, session):
    app = make_app()
    body = json.dumps(event("customer.subscription.deleted", subscription()))
    response = app.test_client().post(
        "/api/v1/webhooks/stripe", data=body, headers=signed(body)
    )
    assert response.status_code == 503
    assert response.json["error"] == "stripe_not_configured"
    assert departures(session) == []


def test_the_same_event_twice_at_once_makes_one_departure_and_one_email(
    stripe_app, served_by, session
):
    host, port = served_by(stripe_app)
    evt = event(
        "customer.subscription.deleted", subscription(metadata={"email": "twice@x.io"})
    )
    body = json.dumps(evt).encode()
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    outcomes: list[str] = []

    def send() -> None:
        headers = signed(body.decode())
        request = urllib.request.Request(
            f"http://{host}:{port}/api/v1/webhooks/stripe",
            data=body,
            headers=headers,
            method="POST",
        )
        barrier.wait()
        with urllib.request.urlopen(request, timeout=30) as answer:
            statuses.append(answer.status)
            outcomes.append(json.load(answer)["outcome"])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert sorted(outcomes).count("handled") == 1
    assert len(departures(session)) == 1
    assert len(invitations(session)) == 1


def test_cancel_at_period_end_departs_now_and_the_deletion_adds_nothing(
    stripe_app, session
):
    client = stripe_app.test_client()
    sub = subscription(
        cancel_at_period_end=True, canceled_at=None, metadata={"email": "p@x.io"}
    )
    updated = event(
        "customer.subscription.updated", sub, {"cancel_at_period_end": False}
    )
    assert post(client, updated).json["outcome"] == "handled"
    [departure] = departures(session)
    assert departure.cancelled_at == datetime.fromtimestamp(
        sub["current_period_end"], UTC
    )
    deleted = event(
        "customer.subscription.deleted", {**sub, "canceled_at": 1_782_000_000}
    )
    assert post(client, deleted).status_code == 200
    assert len(departures(session)) == 1
    assert len(invitations(session)) == 1
    # An update that changes something else records nothing.
    other = event("customer.subscription.updated", sub, {"metadata": {}})
    assert post(client, other).json["outcome"] == "handled"
    assert len(departures(session)) == 1


@pytest.mark.parametrize("how", ["uncancelled", "resumed"])
def test_a_customer_who_stays_is_marked_reactivated(
    stripe_app, session, client, clock, how
):
    stripe_client = stripe_app.test_client()
    sub = subscription(
        cancel_at_period_end=True, canceled_at=None, metadata={"email": "s@x.io"}
    )
    post(
        stripe_client,
        event("customer.subscription.updated", sub, {"cancel_at_period_end": False}),
    )
    [departure] = departures(session)
    [invitation] = invitations(session)
    survey_url = invitation.body_text.split("Or open your personal survey:")[1].split()[
        0
    ]
    # The customer opened the survey before they changed their mind.
    page_one = client.get(path_of(survey_url)).get_data(as_text=True)
    assert post(stripe_client, staying(sub, how)).json["outcome"] == "handled"
    [departure] = departures(session)
    assert departure.reactivated_at is not None
    # The unsent invitation stays unsent; no reminder is ever due.
    [invitation] = invitations(session)
    assert invitation.status == outbox.CANCELLED
    # The link thanks them and records nothing.
    page = client.get(path_of(survey_url))
    assert page.status_code == 200
    assert "Thank you for staying" in page.get_data(as_text=True)
    answer = client.post(
        path_of(survey_url), data={**hidden_fields(page_one), "reason": "switched"}
    )
    assert answer.status_code == 303
    thanks = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Thank you for staying" in thanks
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Response)) == 0
    assert session.scalar(select(func.count()).select_from(ReviewItem)) == 0
    # Unanswered long enough, it enters the queue, shown as reactivated.
    clock.advance(days=stripe_app.config["REVIEW_UNANSWERED_AFTER_DAYS"] + 1)
    with stripe_app.app_context():
        assert cli._queue_unanswered() == 1
        assert cli.queue_reminders() == 0
    make_user(stripe_app, "admin", email="boss@example.com")
    login(client, "boss@example.com")
    queue = client.get("/review").get_data(as_text=True)
    assert "Reactivated" in queue
    item = client.get(f"/review/{departure.public_id}").get_data(as_text=True)
    assert "Stayed" in item


def test_the_contact_comes_from_metadata_without_an_api_key(make_app, session):
    app = make_app(STRIPE_WEBHOOK_SECRET=SECRET)
    sub = subscription(metadata={"email": "Meta@Example.com", "name": "Meta Person"})
    assert (
        post(app.test_client(), event("customer.subscription.deleted", sub)).status_code
        == 200
    )
    [departure] = departures(session)
    assert (departure.contact_email, departure.contact_name) == (
        "meta@example.com",
        "Meta Person",
    )


def test_what_stripe_leaves_out_is_taken_from_where_else_it_is(
    stripe_app, stripe_api, session
):
    """No plan nickname: the product's name; no cancellation time: when the
    subscription ended; a customer without an email: the metadata's."""
    fake, _base = stripe_api
    sub = subscription(
        canceled_at=None,
        ended_at=1_781_000_000,
        metadata={"email": "From.Meta@Example.com"},
    )
    price = sub["items"]["data"][0]["price"]
    price["nickname"] = None
    price["product"] = {"id": "prod_9", "name": "Enterprise Annual"}
    fake.customers[sub["customer"]] = {
        "id": sub["customer"],
        "object": "customer",
        "email": None,
        "name": "Ines Customer",
    }
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    [departure] = departures(session)
    assert departure.plan == "Enterprise Annual"
    assert departure.cancelled_at == datetime.fromtimestamp(1_781_000_000, UTC)
    assert (departure.contact_email, departure.contact_name) == (
        "from.meta@example.com",
        "Ines Customer",
    )


def test_without_any_contact_the_departure_is_kept_and_queued(
    stripe_app, session, client
):
    sub = subscription()  # the API knows no such customer; no metadata
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200
    [departure] = departures(session)
    assert departure.contact_email is None
    assert invitations(session) == []
    make_user(stripe_app, "admin", email="boss@example.com")
    login(client, "boss@example.com")
    queue = client.get("/review").get_data(as_text=True)
    assert "No contact" in queue
    assert departure.public_id in queue


def test_an_event_waits_while_stripe_is_down_and_is_handled_after(
    stripe_app, stripe_api, clock, session
):
    fake, _ = stripe_api
    fake.down = True
    sub = subscription()
    fake.customers[sub["customer"]] = {
        "id": sub["customer"],
        "object": "customer",
        "email": "later@example.com",
        "name": "Later",
    }
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200
    assert response.json["outcome"] == "postponed"
    assert departures(session) == []
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.attempts) == ("pending", 1)
    assert "503" in (stored.last_error or "") or "down" in (stored.last_error or "")
    with stripe_app.app_context():
        assert cli._handle_stripe_due() == 0  # not due yet: back-off
    clock.advance(seconds=31)
    with stripe_app.app_context():
        assert cli._handle_stripe_due() == 0  # still down: later again
    session.rollback()
    assert session.scalar(select(StripeEvent.attempts)) == 2
    fake.down = False
    clock.advance(minutes=5)
    with stripe_app.app_context():
        assert cli._handle_stripe_due() == 1
    [departure] = departures(session)
    assert departure.contact_email == "later@example.com"
    assert len(invitations(session)) == 1


def test_the_survey_link_of_a_stripe_departure_works(stripe_app, session, client):
    sub = subscription(metadata={"email": "link@x.io"})
    post(stripe_app.test_client(), event("customer.subscription.deleted", sub))
    [invitation] = invitations(session)
    survey_url = invitation.body_text.split("Or open your personal survey:")[1].split()[
        0
    ]
    assert (
        submit(client, path_of(survey_url), {"reason": "too_expensive"}).status_code
        == 303
    )


@pytest.mark.parametrize(
    ("kind", "fields", "previous"),
    [
        ("customer.subscription.deleted", {"items": "not a list"}, None),
        ("customer.subscription.updated", {}, "not an object"),
    ],
    ids=["odd-items", "odd-previous"],
)
def test_an_event_that_cannot_be_read_is_kept_and_never_stops_the_worker(
    stripe_app, clock, session, kind, fields, previous
):
    sub = subscription(**fields, metadata={"email": "odd@x.io"})
    response = post(stripe_app.test_client(), event(kind, sub, previous))
    assert response.status_code == 200
    assert response.json["outcome"] == "postponed"
    clock.advance(minutes=5)
    with stripe_app.app_context():
        assert cli._handle_stripe_due() == 0  # tried again, and kept again
    session.rollback()
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.attempts) == ("pending", 2)
    assert "Error" in stored.last_error
    assert departures(session) == []


def cancel_then_stay(client, email: str) -> dict[str, Any]:
    """A customer cancels at the period's end, then changes their mind."""
    sub = subscription(
        cancel_at_period_end=True, canceled_at=None, metadata={"email": email}
    )
    cancelling = {"cancel_at_period_end": False}
    assert post(client, event("customer.subscription.updated", sub, cancelling)).json
    stayed = {**sub, "cancel_at_period_end": False}
    back = {"cancel_at_period_end": True}
    assert post(client, event("customer.subscription.updated", stayed, back)).json
    return sub


def test_stripe_departures_and_reactivations_are_published(stripe_app, session):
    from survey import db, webhooks

    stripe_app.config["WEBHOOKS_ALLOW_PRIVATE"] = True
    with stripe_app.app_context(), db.write_session() as s:
        webhooks.add_endpoint(
            s,
            "http://127.0.0.1:9/hook",
            ["departure.recorded", "departure.reactivated"],
        )
        s.commit()
    client = stripe_app.test_client()
    sub = cancel_then_stay(client, "w@x.io")
    session.rollback()
    published = session.execute(
        select(OutboxMessage.subject, OutboxMessage.body_text)
        .where(OutboxMessage.kind == "webhook")
        .order_by(OutboxMessage.id)
    ).all()
    assert [subject for subject, _ in published] == [
        "departure.recorded",
        "departure.reactivated",
    ]
    data = json.loads(published[1][1])["data"]
    assert (data["external_id"], data["source"]) == (sub["id"], "stripe")


def test_a_customer_who_stayed_then_cancels_after_all_is_asked(stripe_app, session):
    client = stripe_app.test_client()
    sub = cancel_then_stay(client, "twice@x.io")
    [departure] = departures(session)
    assert departure.reactivated_at is not None
    gone = {**sub, "canceled_at": 1_782_000_000}
    assert post(client, event("customer.subscription.deleted", gone)).json == {
        "received": True,
        "outcome": "handled",
    }
    [departure] = departures(session)
    assert departure.reactivated_at is None
    statuses = sorted(message.status for message in invitations(session))
    assert statuses == [outbox.CANCELLED, "pending"]  # the first was never sent


@pytest.mark.parametrize(
    "metadata",
    [
        {"csm_email": "not an address", "segment": "smb"},
        {"csm_email": "CSM@Example.com", "segment": "s" * 81},
        {"csm_email": "CSM@Example.com", "segment": "smb", "comment": "x" * 3000},
    ],
    ids=["bad-csm-email", "long-segment", "long-comment"],
)
def test_metadata_that_fails_our_rules_leaves_out_only_itself(
    stripe_app, session, metadata
):
    """Never EUR cents recorded as USD: every fact that fits is kept, a long
    billing reason is shortened, and only what does not fit is left out."""
    comment = metadata.pop("comment", None)
    sub = subscription(
        metadata={"email": "facts@x.io", "company": "Acme", **metadata},
        cancellation_details={"feedback": "too_expensive", "comment": comment},
    )
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["outcome"] == "handled"
    [departure] = departures(session)
    assert (departure.currency, departure.mrr_cents, departure.plan) == (
        "EUR",
        29_900,
        "Pro",
    )
    assert (departure.company, departure.contact_email) == ("Acme", "facts@x.io")
    assert departure.cancelled_at == datetime.fromtimestamp(sub["canceled_at"], UTC)
    reason = "too_expensive" + (f": {comment}" if comment else "")
    assert departure.billing_reason == reason[:2000]
    valid_csm = "@" in metadata["csm_email"]
    assert departure.csm_email == ("csm@example.com" if valid_csm else None)
    valid_segment = len(metadata["segment"]) <= 80
    assert departure.segment == ("smb" if valid_segment else None)
    assert len(invitations(session)) == 1


def test_the_mail_worker_handles_a_due_stripe_event(
    stripe_mail_app, stripe_api, smtp, clock, session
):
    """``outbox send`` itself tries again the events Stripe's outage held
    back, and sends the invitation in the same pass."""
    fake, _ = stripe_api
    fake.down = True
    sub = subscription()
    fake.customers[sub["customer"]] = customer(sub, "worker@example.com")
    response = post(
        stripe_mail_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.json["outcome"] == "postponed"
    fake.down = False
    worker_pass(stripe_mail_app)
    assert departures(session) == []  # not due yet: its back-off runs
    clock.advance(seconds=31)
    worker_pass(stripe_mail_app)
    [departure] = departures(session)
    assert departure.contact_email == "worker@example.com"
    [message] = smtp.messages
    assert message["X-Envelope-To"] == "worker@example.com"
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.payload) == ("done", None)


@pytest.mark.parametrize(
    "metadata",
    [{"email": "Meta@Example.com", "name": "Meta Person"}, {}],
    ids=["contact-from-metadata", "no-contact"],
)
def test_after_the_last_attempt_the_departure_is_kept_without_stripe(
    stripe_app, stripe_api, clock, session, client, metadata
):
    """Stripe's API never comes back: the last attempt records the departure
    with what the subscription says, and nothing is lost."""
    fake, _ = stripe_api
    fake.down = True
    sub = subscription(metadata=metadata)
    fake.customers[sub["customer"]] = customer(sub, "api@example.com")
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.json["outcome"] == "postponed"
    for _ in range(MAX_ATTEMPTS - 2):
        clock.advance(hours=7)  # beyond the longest back-off
        assert handle_due(stripe_app) == 0
    assert departures(session) == []
    clock.advance(hours=7)
    assert handle_due(stripe_app) == 1
    assert len(fake.requests) == MAX_ATTEMPTS  # each attempt asked Stripe
    [departure] = departures(session)
    assert (departure.mrr_cents, departure.currency) == (29_900, "EUR")
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.payload, stored.attempts) == (
        "done",
        None,
        MAX_ATTEMPTS - 1,
    )
    if metadata:
        assert (departure.contact_email, departure.contact_name) == (
            "meta@example.com",
            "Meta Person",
        )
        [invitation] = invitations(session)
        assert invitation.recipient == "meta@example.com"
    else:
        assert departure.contact_email is None
        assert invitations(session) == []
        make_user(stripe_app, "admin", email="boss@example.com")
        login(client, "boss@example.com")
        queue = client.get("/review")
        assert queue.status_code == 200
        assert "No contact" in queue.get_data(as_text=True)
        assert departure.public_id in queue.get_data(as_text=True)


@pytest.mark.parametrize("how", ["uncancelled", "resumed"])
def test_a_change_of_mind_that_overtakes_its_postponed_cancellation_is_kept(
    stripe_mail_app, stripe_api, smtp, clock, session, how
):
    """Stripe's API is down as the customer cancels at the period's end: the
    cancellation waits. They stay; that event is handled first. Once Stripe
    is back, the worker records the departure as reactivated, and the
    customer who stayed is never asked why they left."""
    fake, _ = stripe_api
    fake.down = True
    sub = subscription(cancel_at_period_end=True, canceled_at=None)
    fake.customers[sub["customer"]] = customer(sub, "stayed@example.com")
    client = stripe_mail_app.test_client()
    cancelling = event(
        "customer.subscription.updated", sub, {"cancel_at_period_end": False}
    )
    assert post(client, cancelling).json["outcome"] == "postponed"
    stays = post(client, staying(sub, how))
    assert stays.status_code == 200
    fake.down = False
    clock.advance(minutes=1)
    worker_pass(stripe_mail_app)
    [departure] = departures(session)
    assert departure.contact_email == "stayed@example.com"
    assert departure.reactivated_at is not None
    assert [m.status for m in invitations(session)] == [outbox.CANCELLED]
    assert smtp.messages == []
    # The change of mind waited for its departure; nothing is left pending.
    assert stays.json["outcome"] == "postponed"
    assert session.scalars(select(StripeEvent.status)).all() == ["done", "done"]


def test_a_second_change_of_mind_that_overtakes_its_cancellation_is_kept(
    stripe_mail_app, stripe_api, smtp, clock, session
):
    """Cancelled, stayed, cancelled again (Stripe down: it waits), stayed
    again: the last change of mind is handled first, yet the customer ends
    up reactivated, and no survey leaves."""
    fake, _ = stripe_api
    sub = subscription(cancel_at_period_end=True, canceled_at=None)
    fake.customers[sub["customer"]] = customer(sub, "twice@example.com")
    client = stripe_mail_app.test_client()
    cancelling = {"cancel_at_period_end": False}
    assert post(client, event("customer.subscription.updated", sub, cancelling)).json
    assert post(client, staying(sub, "uncancelled")).json["outcome"] == "handled"
    fake.down = True
    again = event("customer.subscription.updated", sub, cancelling)
    assert post(client, again).json["outcome"] == "postponed"
    stays = post(client, staying(sub, "uncancelled"))
    assert stays.status_code == 200
    fake.down = False
    clock.advance(minutes=1)
    worker_pass(stripe_mail_app)
    [departure] = departures(session)
    assert departure.reactivated_at is not None
    statuses = [message.status for message in invitations(session)]
    assert statuses == [outbox.CANCELLED] * len(statuses)
    assert smtp.messages == []
    # It waited for the cancellation before it; nothing is left pending.
    assert stays.json["outcome"] == "postponed"
    assert set(session.scalars(select(StripeEvent.status))) == {"done"}


def test_a_change_of_mind_that_arrives_while_the_cancellation_reads_the_customer(
    stripe_app, stripe_api, served_by, session
):
    """Both events at once: the cancellation is reading the customer from
    Stripe when the change of mind is handled; it waits, and the
    cancellation applies it as it records the departure."""
    fake, _ = stripe_api
    fake.held = True
    sub = subscription(cancel_at_period_end=True, canceled_at=None)
    fake.customers[sub["customer"]] = customer(sub, "both@example.com")
    host, port = served_by(stripe_app)
    body = json.dumps(
        event("customer.subscription.updated", sub, {"cancel_at_period_end": False})
    )
    answers: list[tuple[int, str]] = []

    def cancel() -> None:
        request = urllib.request.Request(
            f"http://{host}:{port}/api/v1/webhooks/stripe",
            data=body.encode(),
            headers=signed(body),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answers.append((answer.status, json.load(answer)["outcome"]))

    thread = threading.Thread(target=cancel)
    thread.start()
    try:
        assert fake.asked.wait(timeout=30)  # the cancellation reads the customer
        stays = post(stripe_app.test_client(), staying(sub, "uncancelled"))
        assert stays.status_code == 200
        assert stays.json["outcome"] == "postponed"
    finally:
        fake.release.set()
        thread.join(timeout=30)
    assert answers == [(200, "handled")]
    [departure] = departures(session)
    assert departure.reactivated_at is not None
    [invitation] = invitations(session)
    assert invitation.status == outbox.CANCELLED
    assert session.scalars(select(StripeEvent.status)).all() == ["done", "done"]


def test_a_change_of_mind_older_than_the_next_cancellation_is_obsolete(
    stripe_app, stripe_api, clock, session
):
    """Cancelled (Stripe down: waits), stayed (waits for the departure), then
    cancelled for good: the customer left last, and is asked."""
    fake, _ = stripe_api
    fake.down = True
    sub = subscription(
        cancel_at_period_end=True, canceled_at=None, metadata={"email": "last@x.io"}
    )
    client = stripe_app.test_client()
    first = event("customer.subscription.updated", sub, {"cancel_at_period_end": False})
    assert post(client, first).json["outcome"] == "postponed"
    assert post(client, staying(sub, "uncancelled")).json["outcome"] == "postponed"
    fake.down = False
    gone = event("customer.subscription.deleted", {**sub, "canceled_at": 1_782_000_000})
    assert post(client, gone).json["outcome"] == "handled"
    clock.advance(minutes=1)
    handle_due(stripe_app)  # the first cancellation, late: nothing changes
    [departure] = departures(session)
    assert departure.reactivated_at is None
    [invitation] = invitations(session)
    assert invitation.status == "pending"
    statuses = session.scalars(select(StripeEvent.status)).all()
    assert statuses == ["done", "done", "done"]


def test_a_change_of_mind_without_any_departure_waits_then_is_let_go(
    stripe_app, clock, session
):
    """A reactivation whose cancellation never comes (made before Stripe was
    connected) waits its attempts, then ends with nothing recorded."""
    sub = subscription(metadata={"email": "never@x.io"})
    client = stripe_app.test_client()
    resumed = event("customer.subscription.resumed", sub)
    assert post(client, resumed).json["outcome"] == "postponed"
    for _ in range(MAX_ATTEMPTS - 2):
        clock.advance(hours=7)
        assert handle_due(stripe_app) == 0
    clock.advance(hours=7)
    assert handle_due(stripe_app) == 1
    assert departures(session) == []
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.payload) == ("done", None)


@pytest.mark.parametrize("how", ["uncancelled", "resumed"])
def test_a_change_of_mind_delivered_after_a_later_cancellation_is_obsolete(
    stripe_app, session, how
):
    """Cancelled, stayed, cancelled again; Stripe delivers the change of mind
    last (a retry): the customer cancelled last, and is still asked."""
    client = stripe_app.test_client()
    sub = subscription(
        cancel_at_period_end=True, canceled_at=None, metadata={"email": "late@x.io"}
    )
    cancelling = {"cancel_at_period_end": False}
    first = event("customer.subscription.updated", sub, cancelling)
    assert post(client, first).json["outcome"] == "handled"
    stayed = staying(sub, how)  # made by Stripe before the next cancellation
    again = event("customer.subscription.updated", sub, cancelling)
    assert post(client, again).json["outcome"] == "handled"
    late = post(client, stayed)
    assert late.status_code == 200, late.get_data(as_text=True)
    assert late.json["outcome"] == "handled"
    [departure] = departures(session)
    assert departure.reactivated_at is None
    [invitation] = invitations(session)
    assert invitation.status == "pending"
    assert set(session.scalars(select(StripeEvent.status))) == {"done"}


def test_a_cancellation_delivered_after_a_later_change_of_mind_changes_nothing(
    stripe_app, session
):
    """Cancelled, stayed, cancelled again, stayed again; Stripe delivers the
    second cancellation last: the customer stayed last, and is not asked."""
    client = stripe_app.test_client()
    sub = cancel_then_stay(client, "stays@x.io")
    again = event("customer.subscription.updated", sub, {"cancel_at_period_end": False})
    assert post(client, staying(sub, "uncancelled")).json["outcome"] == "handled"
    late = post(client, again)
    assert late.status_code == 200, late.get_data(as_text=True)
    assert late.json["outcome"] == "handled"
    [departure] = departures(session)
    assert departure.reactivated_at is not None
    statuses = [message.status for message in invitations(session)]
    assert statuses == [outbox.CANCELLED]
    assert set(session.scalars(select(StripeEvent.status))) == {"done"}


def test_a_cancellation_delivered_after_its_change_of_mind_was_let_go_is_kept_stayed(
    stripe_app, clock, session
):
    """The change of mind waited its attempts for a departure, then was let
    go; the cancellation Stripe made before it comes at last (a retry): the
    departure is recorded as reactivated, and no survey leaves."""
    client = stripe_app.test_client()
    sub = subscription(
        cancel_at_period_end=True, canceled_at=None, metadata={"email": "slow@x.io"}
    )
    cancelling = event(
        "customer.subscription.updated", sub, {"cancel_at_period_end": False}
    )
    assert post(client, staying(sub, "resumed")).json["outcome"] == "postponed"
    for _ in range(MAX_ATTEMPTS - 1):
        clock.advance(hours=7)
        handle_due(stripe_app)
    session.rollback()
    assert session.scalars(select(StripeEvent.status)).all() == ["done"]
    assert departures(session) == []
    late = post(client, cancelling)
    assert late.status_code == 200, late.get_data(as_text=True)
    assert late.json["outcome"] == "handled"
    [departure] = departures(session)
    assert departure.reactivated_at is not None
    assert [message.status for message in invitations(session)] == [outbox.CANCELLED]


def test_an_unknown_currency_leaves_out_the_amount_too(stripe_app, session):
    """Never an amount without its currency, recorded as USD."""
    sub = subscription(currency="xyz", metadata={"email": "money@x.io"})
    sub["items"]["data"][0]["price"]["currency"] = "xyz"
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["outcome"] == "handled"
    [departure] = departures(session)
    assert departure.mrr_cents == 0
    assert (departure.plan, departure.contact_email) == ("Pro", "money@x.io")
    assert len(invitations(session)) == 1


def test_a_subscription_id_we_cannot_keep_closes_its_event(stripe_app, clock, session):
    """No departure can be recorded under an id longer than we keep: the
    event is closed with the reason, not tried again for ever."""
    sub = subscription(id="sub_" + "x" * 250, metadata={"email": "long@x.io"})
    response = post(
        stripe_app.test_client(), event("customer.subscription.deleted", sub)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["outcome"] == "handled"
    clock.advance(hours=7)
    assert handle_due(stripe_app) == 0
    assert departures(session) == []
    [stored] = session.scalars(select(StripeEvent)).all()
    assert (stored.status, stored.payload, stored.attempts) == ("done", None, 0)
    assert "external_id" in (stored.last_error or "")

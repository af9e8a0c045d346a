"""Outgoing webhooks: signed as Standard Webhooks say, delivered by the worker,
retried, never for a change that rolled back, never inside the network."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from flask import Flask
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from survey import db, outbox, webhooks
from survey.answers.service import record_reason
from survey.departures.schemas import DepartureIn
from survey.departures.service import record_departure
from survey.outbox import OutboxMessage
from tests.factories import (
    csrf_token,
    hidden_fields,
    login,
    make_departure,
    make_user,
    submit,
    survey_path,
    withdraw_path,
)


@dataclass
class Receiver:
    """An HTTP server on loopback that keeps what is posted to it."""

    url: str = ""
    port: int = 0
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    #: Status codes to answer, in order; then 204.
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """Run a Receiver on loopback for the block (over TLS with ``tls``)."""
    kept = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with kept.lock:
                kept.posts.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = kept.answers.pop(0) if kept.answers else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kept.port = server.server_port
    kept.url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        yield kept
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as kept:
        yield kept


@pytest.fixture
def hook_app(make_app) -> Flask:
    return make_app(WEBHOOKS_ALLOW_PRIVATE=True)


def add(app: Flask, url: str, *events: str, **options: Any) -> webhooks.WebhookEndpoint:
    with app.app_context(), db.write_session() as session:
        endpoint = webhooks.add_endpoint(session, url, events, **options)
        session.commit()
        return endpoint


def deliver(app: Flask) -> outbox.DeliveryReport:
    with app.app_context():
        return outbox.deliver_due(limit=1000)


def verified(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    return Webhook(secret).verify(body, headers)


def test_the_command_adds_an_endpoint_whose_deliveries_verify(
    hook_app, receiver, session
):
    runner = hook_app.test_cli_runner()
    result = runner.invoke(
        args=[
            "webhooks",
            "add",
            receiver.url,
            "--event",
            "departure.recorded",
            "--event",
            "response.submitted",
        ]
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("whsec_")
    assert "shown only this once" in result.stderr
    listed = runner.invoke(args=["webhooks", "list"]).stdout
    assert receiver.url in listed
    assert secret not in listed

    departure = make_departure(hook_app, company="Acme", mrr_cents=29_900)
    assert deliver(hook_app).sent == 2  # the invitation and the webhook
    [(headers, body)] = receiver.posts
    payload = verified(secret, headers, body)
    assert payload["type"] == "departure.recorded"
    data = payload["data"]
    assert data["departure_id"] == departure.public_id
    assert (data["mrr_cents"], data["currency"]) == (29_900, "USD")
    # Ids, codes and amounts only: no free text, no contact.
    assert "contact_email" not in data
    assert "company" not in data
    assert departure.contact_email.encode() not in body
    # A tampered body does not verify.
    with pytest.raises(WebhookVerificationError):
        verified(secret, headers, body.replace(b"29900", b"1"))

    client = hook_app.test_client()
    assert (
        submit(
            client, survey_path(hook_app, departure), {"reason": "too_expensive"}
        ).status_code
        == 303
    )
    deliver(hook_app)
    answered = verified(secret, *receiver.posts[-1])
    assert answered["type"] == "response.submitted"
    assert answered["data"]["reason"] == "too_expensive"

    endpoint_id = listed.split()[0]  # the list starts with the endpoint's id
    removed = runner.invoke(args=["webhooks", "remove", endpoint_id])
    assert removed.exit_code == 0, removed.output
    session.rollback()
    assert (
        session.scalar(select(func.count()).where(OutboxMessage.kind == webhooks.KIND))
        == 0
    )


def test_an_endpoint_may_include_personal_data(hook_app, receiver):
    endpoint = add(hook_app, receiver.url, "departure.recorded", include_personal=True)
    departure = make_departure(hook_app, company="Acme")
    deliver(hook_app)
    [(headers, body)] = receiver.posts
    data = verified(endpoint.secret, headers, body)["data"]
    assert data["company"] == "Acme"
    assert data["contact_email"] == departure.contact_email


def test_a_failed_delivery_is_retried_with_the_same_id(
    hook_app, receiver, clock, session
):
    endpoint = add(hook_app, receiver.url, "departure.recorded")
    receiver.answers = [500]
    make_departure(hook_app)
    report = deliver(hook_app)
    assert report.retried == 1
    session.rollback()
    delivery = session.scalar(
        select(OutboxMessage).where(OutboxMessage.kind == "webhook")
    )
    assert (delivery.status, delivery.status_code, delivery.attempts) == (
        "pending",
        500,
        1,
    )
    assert delivery.last_error.startswith("HTTP 500")
    assert deliver(hook_app).handled == 0  # waits for its back-off
    clock.advance(seconds=hook_app.config["OUTBOX_RETRY_BASE_SECONDS"])
    assert deliver(hook_app).sent == 1
    first, second = receiver.posts
    assert first[0]["webhook-id"] == second[0]["webhook-id"]
    verified(endpoint.secret, *second)
    session.rollback()
    delivery = session.get(OutboxMessage, delivery.id)
    assert (delivery.status, delivery.status_code) == ("sent", 204)


def test_a_rolled_back_change_delivers_nothing(hook_app, receiver, session):
    add(hook_app, receiver.url, "departure.recorded")
    with hook_app.app_context(), db.write_session() as s:
        record_departure(
            s,
            DepartureIn(external_id="sub_rb", contact_email="rb@example.com"),
            source="api",
        )
        assert s.scalar(select(func.count()).where(OutboxMessage.kind == "webhook"))
        s.rollback()
    assert deliver(hook_app).handled == 0
    assert receiver.posts == []


def test_a_first_answer_in_a_savepoint_keeps_its_event(hook_app, receiver, session):
    """An answer recorded on the connection of a session inside a SAVEPOINT
    (as a caller nesting its work may do) keeps what it sets off."""
    add(hook_app, receiver.url, "response.submitted")
    departure = make_departure(hook_app)
    with hook_app.app_context(), db.write_session() as writing:
        with writing.begin_nested():
            record_reason(writing.connection(), departure.public_id, "switched", None)
        writing.commit()
    events = session.scalars(
        select(OutboxMessage.subject).where(
            OutboxMessage.kind == "webhook",
            OutboxMessage.departure_id == departure.id,
        )
    ).all()
    assert events == ["response.submitted"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "http://93.184.215.14/hook",  # public, but not https
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
    ],
)
def test_private_or_plain_addresses_are_refused_without_the_setting(make_app, url):
    app = make_app()
    result = app.test_cli_runner().invoke(
        args=["webhooks", "add", url, "--event", "departure.recorded"]
    )
    assert result.exit_code != 0
    assert "whsec_" not in result.output


def test_an_endpoint_that_turned_private_gets_nothing(make_app, receiver, session):
    add(make_app(WEBHOOKS_ALLOW_PRIVATE=True), receiver.url, "departure.recorded")
    strict = make_app()
    make_departure(strict)
    report = deliver(strict)
    assert report.failed == 1  # given up at once: retrying cannot help
    assert receiver.posts == []
    session.rollback()
    delivery = session.scalar(
        select(OutboxMessage).where(OutboxMessage.kind == "webhook")
    )
    assert "SURVEY_WEBHOOKS_ALLOW_PRIVATE" in delivery.last_error


def test_a_name_that_resolves_inside_the_network_when_connecting_gets_nothing(
    make_app, session, monkeypatch, tmp_path
):
    """DNS rebinding: the name is public when checked, and loopback when the
    connection looks it up a moment later. Refused once connected, before a
    byte of the delivery is sent."""
    host = "hooks.rebind.example"
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host).configure_cert(server_tls)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    lookup = socket.getaddrinfo

    def rebinding(name: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if name != host:
            return lookup(name, port, *args, **kwargs)
        # The check asks without a port, the connection with one.
        address = "93.184.215.14" if port is None else "127.0.0.1"
        return lookup(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with serving(tls=server_tls) as receiver:
        app = make_app()
        add(app, f"https://{host}:{receiver.port}/hook", "departure.recorded")
        make_departure(app)
        report = deliver(app)
    assert receiver.posts == []
    assert report.failed == 1  # given up at once, as for a name seen private
    session.rollback()
    delivery = session.scalar(
        select(OutboxMessage).where(OutboxMessage.kind == "webhook")
    )
    assert "127.0.0.1 is inside a network" in delivery.last_error


def test_a_slack_endpoint_gets_a_readable_sentence(hook_app, receiver):
    add(
        hook_app,
        receiver.url,
        "response.submitted",
        slack=True,
        include_personal=True,
    )
    departure = make_departure(
        hook_app, company="Acme <b>", mrr_cents=29_900, currency="EUR"
    )
    client = hook_app.test_client()
    submit(client, survey_path(hook_app, departure), {"reason": "too_expensive"})
    deliver(hook_app)
    [(headers, body)] = receiver.posts
    assert "webhook-signature" not in headers
    text = json.loads(body)["text"]
    assert text.startswith("Acme &lt;b&gt; (EUR 299/month) left: too expensive — <")
    assert f"/review/{departure.public_id}|open the item>" in text


def test_consent_and_postmortem_events(hook_app, receiver, session):
    endpoint = add(
        hook_app,
        receiver.url,
        "consent.granted",
        "consent.withdrawn",
        "postmortem.completed",
    )
    departure = make_departure(hook_app)
    client = hook_app.test_client()
    page1 = survey_path(hook_app, departure)
    submit(client, page1, {"reason": "switched"})
    submit(client, page1 + "/more", {"winback_consent": "y"})
    deliver(hook_app)
    kinds = [verified(endpoint.secret, *post)["type"] for post in receiver.posts]
    assert kinds == ["consent.granted"]
    make_user(hook_app, "admin", email="pm@example.com")
    staff = hook_app.test_client()
    login(staff, "pm@example.com")
    item = f"/review/{departure.public_id}"
    page = staff.get(item).get_data(as_text=True)
    fields = {
        **hidden_fields(page),
        "what_happened": "They moved to a competitor.",
        "root_causes": ["competitor"],
        "primary_cause": "competitor",
        "preventable": "partly",
        "intent": "finish",
    }
    assert staff.post(f"{item}/postmortem", data=fields).status_code in (302, 303)
    deliver(hook_app)
    done = [verified(endpoint.secret, *post) for post in receiver.posts[1:]]
    assert [p["type"] for p in done] == ["postmortem.completed"], [
        p["type"] for p in done
    ]
    assert done[0]["data"]["primary_root_cause"] == "competitor"
    # The customer withdraws through the email's link.
    path = withdraw_path(hook_app, departure)
    form = client.get(path).get_data(as_text=True)
    assert client.post(path, data={"csrf_token": csrf_token(form)}).status_code == 200
    deliver(hook_app)
    withdrawn = [verified(endpoint.secret, *post) for post in receiver.posts[2:]]
    assert [p["type"] for p in withdrawn] == ["consent.withdrawn"]
    assert withdrawn[0]["data"]["departure_id"] == departure.public_id
    assert withdrawn[0]["data"]["channel"] == "withdrawal_link"


def test_admins_add_endpoints_see_deliveries_and_send_again(
    hook_app, receiver, session
):
    client = hook_app.test_client()
    make_user(hook_app, "admin", email="admin@example.com")
    login(client, "admin@example.com")
    page = client.get("/admin/webhooks").get_data(as_text=True)
    added = client.post(
        "/admin/webhooks",
        data={
            "csrf_token": csrf_token(page),
            "url": receiver.url,
            "events": ["departure.recorded"],
        },
    )
    shown = added.get_data(as_text=True)
    assert added.status_code == 200
    assert "shown only this once" in shown
    secret = shown.split('<code class="secret">')[1].split("<")[0]
    assert secret.startswith("whsec_")
    assert secret not in client.get("/admin/webhooks").get_data(as_text=True)
    receiver.answers = [500] * 20
    make_departure(hook_app)
    deliver(hook_app)
    log = client.get("/admin/webhooks").get_data(as_text=True)
    assert "departure.recorded" in log and "HTTP 500" in log
    session.rollback()
    delivery = session.scalar(
        select(OutboxMessage).where(OutboxMessage.kind == "webhook")
    )
    receiver.answers = []
    again = client.post(
        f"/admin/webhooks/deliveries/{delivery.id}/again",
        data={"csrf_token": csrf_token(log)},
    )
    assert again.status_code == 303
    assert deliver(hook_app).sent == 1
    verified(secret, *receiver.posts[-1])
    # Refused addresses are explained on the form.
    refused = client.post(
        "/admin/webhooks",
        data={
            "csrf_token": csrf_token(log),
            "url": "ftp://x",
            "events": ["consent.granted"],
        },
    )
    assert "Give an https:// address" in refused.get_data(as_text=True)


def test_other_roles_cannot_manage_webhooks(hook_app, client):
    make_user(hook_app, "csm", email="csm@example.com")
    login(client, "csm@example.com")
    assert client.get("/admin/webhooks").status_code == 403


def test_an_erased_persons_deliveries_are_never_sent(hook_app, receiver, session):
    add(hook_app, receiver.url, "departure.recorded", include_personal=True)
    departure = make_departure(hook_app, contact_email="gone@example.com")
    runner = hook_app.test_cli_runner()
    assert runner.invoke(args=["contacts", "erase", "gone@example.com"]).exit_code == 0
    assert deliver(hook_app).handled == 0
    session.rollback()
    delivery = session.scalar(
        select(OutboxMessage).where(OutboxMessage.kind == "webhook")
    )
    assert delivery.status == "cancelled"
    assert delivery.last_error == "person erased"
    assert departure.contact_email not in delivery.body_text
    with hook_app.app_context(), db.write_session() as s:
        assert not webhooks.send_again(s, delivery.id)
        s.commit()
    assert deliver(hook_app).handled == 0
    assert receiver.posts == []


def test_an_erased_persons_deliveries_still_name_their_endpoint(
    hook_app, receiver, session
):
    add(hook_app, receiver.url, "departure.recorded", include_personal=True)
    make_departure(hook_app, contact_email="gone@example.com", company="Gone Ltd")
    deliver(hook_app)
    assert len(receiver.posts) == 1  # delivered, then the person is erased
    receiver.answers = [500] * 20
    make_departure(hook_app, contact_email="gone@example.com", company="Gone Ltd")
    deliver(hook_app)  # its first attempt fails: pending, to be retried
    runner = hook_app.test_cli_runner()
    assert runner.invoke(args=["contacts", "erase", "gone@example.com"]).exit_code == 0
    client = hook_app.test_client()
    make_user(hook_app, "admin", email="admin@example.com")
    login(client, "admin@example.com")
    page = client.get("/admin/webhooks").get_data(as_text=True)
    assert "erased.invalid" not in page and "gone@example.com" not in page
    assert "Gone Ltd" not in page
    # Each delivery still says where it went and what it was about...
    assert page.count(f'<td data-label="To" class="wrap">{receiver.url}</td>') == 2
    assert page.count('<td data-label="Event">departure.recorded<br>') == 2
    # ...and offers no "Send again" that would be refused.
    assert "/again" not in page and "Send again" not in page
    assert page.count("Erased: not sent again") == 2
    session.rollback()
    assert {
        (m.recipient, m.status)
        for m in session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "webhook")
        )
    } == {(receiver.url, "sent"), (receiver.url, "cancelled")}
    # Neither the command line's retry nor the worker posts them again.
    assert runner.invoke(args=["outbox", "retry", "--all-failed"]).exit_code == 0
    receiver.answers = []
    assert deliver(hook_app).handled == 0
    assert len(receiver.posts) == 2


@pytest.mark.parametrize(
    ("mrr_cents", "currency", "shown"),
    [
        (29_900, "EUR", "EUR 299/month"),
        (29_950, "USD", "USD 299.50/month"),
        (5_000, "JPY", "JPY 5,000/month"),
    ],
)
def test_slack_amounts_read_as_people_write_them(
    hook_app, receiver, mrr_cents, currency, shown
):
    add(hook_app, receiver.url, "departure.recorded", slack=True)
    make_departure(hook_app, mrr_cents=mrr_cents, currency=currency)
    deliver(hook_app)
    [(_, body)] = receiver.posts
    assert json.loads(body)["text"].startswith(f"A customer ({shown}) cancelled")

"""Outgoing webhooks: endpoints admins register, events written to the outbox.

``publish`` writes one delivery per subscribed endpoint into the outbox, in
the caller's transaction: a change that rolls back sends nothing, and the
mail worker delivers, retries with back-off and logs each one as it does
emails. Deliveries follow the Standard Webhooks specification
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), signed with
the ``standardwebhooks`` package and the endpoint's own ``whsec_`` secret.
An endpoint marked as Slack gets a short sentence instead of the JSON.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
from flask import current_app
from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from standardwebhooks.webhooks import Webhook

from survey import clock, outbox
from survey.db import Base
from survey.errors import InvalidInput
from survey.money import major_units

log = logging.getLogger(__name__)

EVENTS = {
    "departure.recorded": "A departure was recorded",
    "response.submitted": "A customer answered the question",
    "consent.granted": "A contact agreed to hear from us again",
    "consent.withdrawn": "A contact withdrew win-back consent",
    "postmortem.completed": "A postmortem was marked done",
    "departure.reactivated": "A customer took the cancellation back",
}

#: The outbox kind of a webhook delivery.
KIND = "webhook"


class WebhookEndpoint(Base):
    """Where some events are posted, and how."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: The events it receives, space-separated.
    events: Mapped[str] = mapped_column(Text)
    #: ``whsec_`` and base64 of 32 random bytes: shown once, when created.
    secret: Mapped[str] = mapped_column(String(100))
    #: A Slack incoming webhook: a readable sentence, not the JSON.
    slack: Mapped[bool] = mapped_column(default=False)
    #: Whether payloads carry free text and contact details.
    include_personal: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]

    @property
    def event_list(self) -> list[str]:
        """The events it receives."""
        return self.events.split()


# --- registering endpoints ------------------------------------------------------


#: Why an address is refused, as the admin reads it (on the form, and in a
#: delivery's error).
UNREACHABLE = "The address is not reachable from here."
ALLOW_PRIVATE_HINT = "set SURVEY_WEBHOOKS_ALLOW_PRIVATE to allow it."


def _inside_a_network(address: str) -> bool:
    """Return whether an IP address is private, loopback, link-local, etc."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return not ip.is_global or ip.is_multicast


def _is_private(host: str) -> bool:
    """Return whether ``host`` is, or resolves to, an address inside a network."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return True  # unresolvable: refuse rather than guess
    return any(_inside_a_network(str(info[4][0])) for info in infos)


def check_url(url: str) -> str:
    """Return ``url`` if webhooks may be sent there; raise InvalidInput if not.

    Only ``https://`` to public addresses, unless
    ``SURVEY_WEBHOOKS_ALLOW_PRIVATE`` is set (tests, a receiver on the same
    network): a webhook must not become a way to reach the service's own
    network. Checked when registered and again before each delivery (a name
    can come to resolve elsewhere); the delivery's connection then refuses
    a peer inside a network (``_PublicPeer``), whatever the name resolved
    to a moment before.
    """
    url = url.strip()
    parts = urlsplit(url)
    allow_private = current_app.config["WEBHOOKS_ALLOW_PRIVATE"]
    schemes = {"https", "http"} if allow_private else {"https"}
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidInput(
            "The address is not valid.",
            {
                "url": [
                    "Give an https:// address (http:// needs "
                    "SURVEY_WEBHOOKS_ALLOW_PRIVATE)."
                ]
            },
        )
    if len(url) > 2000 or parts.username or parts.password:
        raise InvalidInput(
            "The address is not valid.",
            {"url": ["Give an address of at most 2000 characters, without a login."]},
        )
    if not allow_private and _is_private(parts.hostname):
        raise InvalidInput(
            UNREACHABLE,
            {
                "url": [
                    "It is a private, loopback or link-local address (or does "
                    f"not resolve); {ALLOW_PRIVATE_HINT}"
                ]
            },
        )
    return url


def check_events(events: Iterable[str]) -> list[str]:
    """Return the events, known and without repeats; raise InvalidInput if not."""
    chosen = list(dict.fromkeys(events))
    unknown = [event for event in chosen if event not in EVENTS]
    if unknown or not chosen:
        raise InvalidInput(
            "Choose the events to send.",
            {"events": [f"Choose one or more of: {', '.join(EVENTS)}."]},
        )
    return chosen


def new_secret() -> str:
    """Return a new Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def add_endpoint(
    session: Session,
    url: str,
    events: Iterable[str],
    *,
    slack: bool = False,
    include_personal: bool = False,
) -> WebhookEndpoint:
    """Register an endpoint; its ``secret`` is to be shown this once."""
    endpoint = WebhookEndpoint(
        url=check_url(url),
        events=" ".join(check_events(events)),
        secret=new_secret(),
        slack=slack,
        include_personal=include_personal,
        created_at=clock.now(),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def endpoints(session: Session) -> list[WebhookEndpoint]:
    """Return every endpoint, oldest first."""
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def remove_endpoint(session: Session, endpoint_id: int) -> bool:
    """Remove an endpoint and its deliveries; return whether it existed."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        return False
    session.delete(endpoint)
    session.flush()
    return True


def deliveries(
    session: Session, endpoint_id: int | None = None, limit: int = 50
) -> list[outbox.OutboxMessage]:
    """Return the newest deliveries (of one endpoint, or all)."""
    query = (
        select(outbox.OutboxMessage)
        .where(outbox.OutboxMessage.kind == KIND)
        .order_by(outbox.OutboxMessage.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        query = query.where(outbox.OutboxMessage.endpoint_id == endpoint_id)
    return list(session.scalars(query))


#: What erasure leaves of a delivery about an erased person: its body (the
#: same words erasure leaves everywhere, see survey.contacts)...
ERASED_BODY = "[erased]"
#: ...and why it will not go (again).
PERSON_ERASED = "person erased"


def forget(message: outbox.OutboxMessage) -> None:
    """Empty a delivery about a person being erased, for good.

    Its endpoint (the recipient) and its event stay: neither is about the
    person, and the log still says what went where. One not yet sent, or
    given up on, is cancelled, so neither "Send again" nor ``outbox retry``
    ever posts it.
    """
    message.body_text = ERASED_BODY
    message.body_html = message.unsubscribe_url = None
    if message.status in (outbox.PENDING, outbox.FAILED):
        message.status, message.last_error = outbox.CANCELLED, PERSON_ERASED


def erased(message: outbox.OutboxMessage) -> bool:
    """Whether ``message`` is about a person since erased (never sent again)."""
    return message.body_text == ERASED_BODY or message.recipient.endswith(
        outbox.ERASED_DOMAIN  # erased before deliveries kept their endpoint
    )


def send_again(session: Session, message_id: int) -> bool:
    """Queue a delivery once more, whatever became of it; return whether found.

    The same ``webhook-id``: a receiver that kept the first copy knows it.
    Never one about an erased person: erasure emptied it for good.
    """
    message = session.get(outbox.OutboxMessage, message_id)
    if message is None or message.kind != KIND or erased(message):
        return False
    message.status, message.attempts = outbox.PENDING, 0
    message.next_attempt_at, message.locked_until = clock.now(), None
    message.claimed_by = None
    return True


# --- publishing events ----------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """What happened, as each kind of endpoint gets it.

    ``data`` holds ids, codes and amounts; ``personal`` free text and
    contact details (sent only to endpoints that include them). ``sentence``
    is Slack's, written with or without the personal part.
    """

    type: str
    data: Mapping[str, Any]
    personal: Mapping[str, Any]
    departure_id: int | None
    link: str | None = None

    def payload(self, endpoint: WebhookEndpoint, now: datetime) -> str:
        """Return the body ``endpoint`` gets."""
        if endpoint.slack:
            return json.dumps({"text": self.sentence(endpoint.include_personal)})
        data = {**self.data, **(self.personal if endpoint.include_personal else {})}
        return json.dumps(
            {"type": self.type, "timestamp": clock.iso(now), "data": data},
            separators=(",", ":"),
        )

    def sentence(self, personal: bool) -> str:
        """Return a short readable line about the event (Slack's mrkdwn)."""
        who = _slack_escape(str(self.personal.get("company") or "")) if personal else ""
        who = who or "A customer"
        amount, currency = self.data.get("mrr_cents"), self.data.get("currency")
        if amount and currency:
            who += f" ({currency} {_amount(int(amount), str(currency))}/month)"
        reason = str(self.data.get("reason") or "").replace("_", " ")
        what = {
            "departure.recorded": f"{who} cancelled",
            "response.submitted": f"{who} left: {reason or 'no reason given'}",
            "consent.granted": f"{who}: the contact agreed to hear from us again",
            "consent.withdrawn": f"{who}: the contact withdrew win-back consent",
            "postmortem.completed": f"Postmortem done for {who}",
            "departure.reactivated": f"{who} stayed after all",
        }[self.type]
        return f"{what} — <{self.link}|open the item>" if self.link else what


def _amount(minor_units: int, currency: str) -> str:
    """Write an amount in minor units as people read it: 299, 299.50, 5,000."""
    value = major_units(minor_units, currency)
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,}"


def _slack_escape(text: str) -> str:
    """Escape what Slack's mrkdwn reads as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def subscribers(session: Session, event_type: str) -> list[WebhookEndpoint]:
    """Return the endpoints that receive ``event_type`` (most often none)."""
    return [
        endpoint
        for endpoint in session.scalars(select(WebhookEndpoint))
        if event_type in endpoint.event_list
    ]


def publish(session: Session, event: Event, subscribed: list[WebhookEndpoint]) -> int:
    """Queue ``event`` for the ``subscribed`` endpoints (``subscribers``), in
    the caller's transaction; return how many deliveries were queued."""
    now = clock.now()
    for endpoint in subscribed:
        session.add(
            outbox.OutboxMessage(
                departure_id=event.departure_id,
                endpoint_id=endpoint.id,
                kind=KIND,
                recipient=endpoint.url[:320],
                subject=event.type,
                body_text=event.payload(endpoint, now),
                body_html=None,
                msgid="msg_" + secrets.token_hex(12),
                status=outbox.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    if subscribed:
        session.flush()
    return len(subscribed)


# --- delivering -------------------------------------------------------------------


class PrivatePeer(Exception):
    """The receiver's address, as connected to, is inside a network."""


class _PublicPeer:
    """A connection that refuses a peer inside a network once the socket is
    connected, before TLS or a byte of the request: a name checked as public
    can resolve elsewhere a moment later, when the connection looks it up
    (DNS rebinding). ``_new_conn`` is urllib3's step that opens the socket,
    for plain and TLS connections alike. ``PrivatePeer`` is no OSError,
    which urllib3 would wrap and retry."""

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        peer = str(sock.getpeername()[0])
        if _inside_a_network(peer):
            sock.close()
            raise PrivatePeer(f"{peer} is inside a network")
        return sock


class _PublicHTTPConnection(_PublicPeer, urllib3.connection.HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicPeer, urllib3.connection.HTTPSConnection):
    pass


class _PublicHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnly(requests.adapters.HTTPAdapter):
    """Connects to public addresses only (see ``_PublicPeer``)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }


_http = threading.local()


def _http_session(public_only: bool) -> requests.Session:
    """This thread's HTTP session: connections kept alive between deliveries;
    for ``public_only``, to public addresses only."""
    sessions: dict[bool, requests.Session] = _http.__dict__.setdefault("sessions", {})
    session = sessions.get(public_only)
    if session is None:
        session = sessions[public_only] = requests.Session()
        session.headers["User-Agent"] = "exit-survey-webhooks"
        if public_only:
            guarded = _PublicOnly()
            session.mount("https://", guarded)
            session.mount("http://", guarded)
    return session


def signed_headers(secret: str, msgid: str, body: str, at: datetime) -> dict[str, str]:
    """Return the Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": msgid,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msgid, at, body),
        "content-type": "application/json",
    }


@outbox.courier(KIND)
def deliver(session: Session, message: outbox.OutboxMessage) -> int:
    """Post one delivery; return the receiver's status code (2xx).

    Raise ``outbox.DeliveryFailed`` on any other answer or none.
    """
    # The endpoints, read once per pass of the worker (its session's life).
    known: dict[int, tuple[bool, str, str] | None] = session.info.setdefault(
        "webhook_endpoints", {}
    )
    if message.endpoint_id not in known:
        endpoint = (
            session.get(WebhookEndpoint, message.endpoint_id)
            if message.endpoint_id
            else None
        )
        known[message.endpoint_id or 0] = (
            (endpoint.slack, endpoint.secret, endpoint.url) if endpoint else None
        )
        session.commit()  # no transaction open while the receiver answers
    found = known.get(message.endpoint_id or 0)
    if found is None:
        raise outbox.DeliveryFailed("the endpoint was removed", final=True)
    slack, secret, url = found
    try:
        url = check_url(url)
    except InvalidInput as refused:
        reasons = " ".join(m for messages in refused.fields.values() for m in messages)
        raise outbox.DeliveryFailed(
            f"{refused.message} {reasons}", final=True
        ) from None
    headers = (
        {"content-type": "application/json"}
        if slack
        else signed_headers(secret, message.msgid, message.body_text, clock.now())
    )
    public_only = not current_app.config["WEBHOOKS_ALLOW_PRIVATE"]
    try:
        answer = _http_session(public_only).post(
            url,
            data=message.body_text.encode(),
            headers=headers,
            timeout=current_app.config["WEBHOOK_TIMEOUT_SECONDS"],
            allow_redirects=False,  # a redirect could lead inside the network
        )
    except PrivatePeer as refused:
        raise outbox.DeliveryFailed(
            f"{UNREACHABLE} {refused}; {ALLOW_PRIVATE_HINT}", final=True
        ) from None
    except requests.RequestException as exc:
        raise outbox.DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= answer.status_code < 300:
        raise outbox.DeliveryFailed(
            f"HTTP {answer.status_code}: {answer.text[:200]}",
            status_code=answer.status_code,
        )
    return answer.status_code

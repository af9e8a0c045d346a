"""Transactional outbox: emails written with the business change, sent by a worker.

``enqueue`` adds a message in the caller's transaction. ``deliver_due`` is the
worker's pass: it claims due messages (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several workers never take the same row and never wait for
each other) and leases them for a minute (``OUTBOX_LEASE_SECONDS``), renewed
every few seconds while it holds them. Its sender threads
(``OUTBOX_SENDERS``) send side by side, each over an SMTP connection of its
own; the worker records their outcomes together, a tenth of a second's worth
per transaction, and at once when sending slows down. Shortly before sending,
a worker renews its claim on the next few messages, and skips those whose
claim has passed to another worker (a lease that ran out while this one could
not reach the database) or that were settled meanwhile (an erasure).

Delivery is at least once. A message marked sent is never sent again, but a
worker that dies, or loses the database, after the mail server took a
message and before recording it as sent leaves it to be sent again: the
messages in hand then, and those sent in the tenth of a second before. Every
copy carries the message's one ``Message-ID``, chosen when it was queued,
so mail systems can tell a copy from a new message. A worker that dies
leaves its messages to others once its lease runs out, within a minute. A
worker that loses the database gives its claims back if it can, and keeps
one identity (``new_worker_id``) for its whole run: its next pass takes
back at once whatever it still holds.
"""

from __future__ import annotations

import email.policy
import functools
import itertools
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol, cast

import flask_mail
from blinker import Namespace
from flask import Flask, current_app, render_template
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    ForeignKey,
    Index,
    String,
    Text,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from survey import clock, db, logs, metrics
from survey.db import Base
from survey.errors import DatabaseBusy
from survey.i18n import force_locale

log = logging.getLogger(__name__)

PENDING, SENT, FAILED = "pending", "sent", "failed"
#: Not to be sent: what it was for went away (an answer came, the customer
#: stayed). Never queued again, unlike a failed message.
CANCELLED = "cancelled"
STATUSES = (PENDING, SENT, FAILED, CANCELLED)

_signals = Namespace()
#: Sent in the transaction that marks messages sent (``sender``: a tuple of
#: the messages, all sent at one ``sent_at``; keyword ``session``): whoever
#: keeps a fact about the sending writes it there, so it commits with the
#: messages' status or not at all.
messages_sent = _signals.signal("messages-sent")
#: Sent as that transaction begins, before the messages' rows are locked:
#: whoever will write about the messages' departures locks those first, in
#: the order every write about a person takes (departure, then its messages).
messages_settling = _signals.signal("messages-settling")
#: Where erased contacts' addresses point (see survey.contacts).
ERASED_DOMAIN = "@erased.invalid"


class OutboxMessage(Base):
    """An email waiting to be sent, sent, or given up on."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    departure_id: Mapped[int | None] = mapped_column(
        ForeignKey("departures.id", ondelete="CASCADE"), index=True
    )
    #: Template name: ``invitation``, ``fresh_link``.
    kind: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    #: Where the recipient's mail program withdraws consent in one click
    #: (``List-Unsubscribe``, RFC 8058); None for mail without such a link.
    unsubscribe_url: Mapped[str | None] = mapped_column(Text)
    #: The From name and the Reply-To address, as the brand was when written
    #: (None: the configured sender's own, and no Reply-To).
    sender_name: Mapped[str | None] = mapped_column(String(100))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    #: The ``Message-ID`` header, chosen once when queued: every copy sent
    #: (a retry, a resend after a crash) is the same message to mail systems.
    msgid: Mapped[str] = mapped_column(String(320))
    #: ``pending``, ``sent``, ``failed`` (gave up after the last attempt) or
    #: ``cancelled``.
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    #: A worker's claim on the message lasts until then.
    locked_until: Mapped[datetime | None]
    #: Which worker holds (or last held) the claim.
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    #: The request that created the message (X-Request-ID), for the logs.
    request_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    #: A webhook delivery's endpoint (see survey.webhooks; None for email)...
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    #: ...and the HTTP status its receiver last answered.
    status_code: Mapped[int | None]


#: Who delivers each kind of message that is not an email (see ``courier``).
_COURIERS: dict[str, Courier] = {}


class Courier(Protocol):
    """Delivers one message some other way than email; returns a status code
    (kept on the message) or raises DeliveryFailed."""

    def __call__(self, session: Session, message: OutboxMessage) -> int | None: ...


def courier(kind: str) -> Callable[[Courier], Courier]:
    """Register the function that delivers messages of ``kind``."""

    def register(function: Courier) -> Courier:
        _COURIERS[kind] = function
        return function

    return register


class DeliveryFailed(Exception):
    """A courier's delivery did not succeed. ``final``: never worth retrying."""

    def __init__(
        self, error: str, *, status_code: int | None = None, final: bool = False
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.final = final


def _one_line(text: str) -> str:
    """Collapse whitespace so names and subjects cannot add mail headers."""
    return " ".join(text.split())


def render_email(name: str, locale: str | None, **context: Any) -> tuple[str, str, str]:
    """Render ``templates/email/<name>/`` into (subject, text, html)."""
    with force_locale(locale):
        subject = _one_line(render_template(f"email/{name}/subject.txt", **context))
        text = render_template(f"email/{name}/body.txt", **context)
        html = render_template(f"email/{name}/body.html", subject=subject, **context)
    return subject, text, html


def enqueue(
    session: Session,
    *,
    kind: str,
    recipient: str,
    locale: str | None,
    departure_id: int | None = None,
    sender_name: str | None = None,
    reply_to: str | None = None,
    **context: Any,
) -> OutboxMessage:
    """Add an email to the outbox in the caller's transaction, from
    ``sender_name`` at the configured sender's address.

    An email whose ``context`` has a consent withdrawal link (``withdraw_url``)
    offers it to mail programs as their one-click unsubscribe too (RFC 8058).
    """
    subject, text, html = render_email(kind, locale, **context)
    now = clock.now()
    message = OutboxMessage(
        departure_id=departure_id,
        kind=kind,
        recipient=_one_line(recipient),
        subject=subject,
        body_text=text,
        body_html=html,
        unsubscribe_url=context.get("withdraw_url"),
        sender_name=_one_line(sender_name)[:100] if sender_name else None,
        reply_to=_one_line(reply_to) if reply_to else None,
        msgid=make_msgid(domain=_sender_domain()),
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        request_id=logs.request_id(),
    )
    session.add(message)
    session.flush()
    return message


class _TimeoutConnection(flask_mail.Connection):
    """A Flask-Mail connection whose SMTP socket gives up after a timeout."""

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        timeout = current_app.config["MAIL_TIMEOUT_SECONDS"]
        mail = self.mail
        host: smtplib.SMTP | smtplib.SMTP_SSL
        if mail.use_ssl:
            host = smtplib.SMTP_SSL(
                mail.server, mail.port, timeout=timeout, context=_tls_context()
            )
        else:
            host = smtplib.SMTP(mail.server, mail.port, timeout=timeout)
        if mail.use_tls:
            host.starttls(context=_tls_context())
        if mail.username and mail.password:
            host.login(mail.username, mail.password)
        return host


def _tls_context() -> ssl.SSLContext:
    """Verify the server's certificate and name (smtplib does not by default).

    Made once per set of trusted certificates (``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` name them): loading them took 27 ms, once per batch.
    """
    return _context_trusting(
        os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    )


@functools.cache
def _context_trusting(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    return ssl.create_default_context()


class _MailMessage(flask_mail.Message):
    """Flask-Mail's message, whose headers go out as written."""

    def as_bytes(self) -> bytes:
        # Flask-Mail encodes and folds the headers it writes itself. Refolded
        # on the way out by the modern policy, a List-Unsubscribe <URL> longer
        # than a line would become RFC 2047 encoded words, which mail programs
        # do not read; the compat32 policy the message was built with only
        # folds at spaces (a URL has none), and writes a message five times
        # faster (3.2 ms of the 11 ms a message took, make bench-outbox).
        return bytes(self._message().as_bytes(policy=_AS_WRITTEN))


_AS_WRITTEN = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)


def _sender_domain() -> str | None:
    """Return the domain of the configured sender (None: this host's name)."""
    domain = str(current_app.config["MAIL_DEFAULT_SENDER"]).rpartition("@")[2]
    return domain.strip("> ") or None


def _sender(name: str | None) -> str:
    """The configured sender, under ``name`` when one is given."""
    configured = str(current_app.config["MAIL_DEFAULT_SENDER"])
    if not name:
        return configured
    # Quoted here: Flask-Mail writes a (name, address) pair unquoted, and a
    # name holding an address would then become the sender.
    return formataddr((name, parseaddr(configured)[1] or configured))


def _as_mail(message: OutboxMessage) -> flask_mail.Message:
    mail_message = _MailMessage(
        subject=message.subject,
        recipients=[message.recipient],
        body=message.body_text,
        html=message.body_html,
        sender=_sender(message.sender_name),
        reply_to=message.reply_to,
    )
    mail_message.msgId = message.msgid
    if message.unsubscribe_url:
        # RFC 8058: the mail program's own "unsubscribe" button withdraws
        # consent with one POST, no page in between.
        mail_message.extra_headers = {
            "List-Unsubscribe": f"<{message.unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    return mail_message


def eml_folder() -> Path:
    """Return where messages become ``.eml`` files when no mail server is set."""
    return Path(current_app.instance_path) / "mail"


def eml_files(message_id: int) -> list[Path]:
    """Return the ``.eml`` files written for a message (none when mail was sent)."""
    return sorted(eml_folder().glob(f"*-{message_id}-*.eml"))


def _write_eml(message: OutboxMessage, mail_message: flask_mail.Message) -> Path:
    folder = eml_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = (
        folder / f"{message.created_at:%Y%m%d-%H%M%S}-{message.id}-{message.kind}.eml"
    )
    path.write_bytes(mail_message.as_bytes())
    return path


@dataclass
class DeliveryReport:
    """What one pass of the worker did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        return self.sent + self.retried + self.failed


def _lease() -> timedelta:
    """How long a claim lasts unless renewed. A worker renews its claims on
    everything in hand every ``RENEW_EVERY`` of it, however long a mail
    server keeps it waiting: a worker that dies leaves its messages to the
    others within one lease."""
    return timedelta(seconds=current_app.config["OUTBOX_LEASE_SECONDS"])


#: A worker renews what it holds this often, in leases (a few renewals may
#: fail, a database busy for a moment, before the lease runs out)...
RENEW_EVERY = 1 / 6
#: ...and tries a failed renewal again this soon.
RETRY_RENEWAL_SECONDS = 1.0


def _claim(session: Session, limit: int, worker: str) -> list[int]:
    """Lease up to ``limit`` due messages to this worker and commit the claim.

    Free messages, and those this worker still holds from an earlier pass
    that failed: no other worker takes them before the lease runs out.
    """
    now = clock.now()
    db.begin_write(session)
    ids = list(
        session.scalars(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == PENDING,
                OutboxMessage.next_attempt_at <= now,
                or_(
                    OutboxMessage.locked_until.is_(None),
                    OutboxMessage.locked_until < now,
                    OutboxMessage.claimed_by == worker,
                ),
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(locked_until=now + _lease(), claimed_by=worker)
        )
    session.commit()
    log.debug("worker %s claimed %d messages", worker, len(ids))
    return ids


class _Mailer:
    """Sends a batch over one SMTP connection, opened on first use and reopened
    after a failure; writes ``.eml`` files when no mail server is configured."""

    def __init__(self) -> None:
        self.connection: _TimeoutConnection | None = None

    def send(self, message: OutboxMessage) -> None:
        mail_message = _as_mail(message)
        if current_app.config["MAIL_SUPPRESS_SEND"]:
            path = _write_eml(message, mail_message)
            # The file holds the links; a log line never does (a survey link
            # opens a customer's answers).
            log.info("no mail server configured: wrote %s", path)
            return
        try:
            if self.connection is None:
                self.connection = _TimeoutConnection(current_app.extensions["mail"])
                self.connection.__enter__()
            mail_message.send(self.connection)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and connection.host is not None:
            try:
                connection.host.quit()
            except (smtplib.SMTPException, OSError):
                connection.host.close()


def _load(session: Session, message_ids: list[int]) -> dict[int, OutboxMessage]:
    """Read a batch's messages in one query (one per message cost 0.5 ms)."""
    if not message_ids:
        return {}
    loaded = session.scalars(
        select(OutboxMessage).where(OutboxMessage.id.in_(message_ids))
    )
    messages = {message.id: message for message in loaded}
    session.commit()
    # Plain objects from here on: the recorder's thread notes their outcome.
    for message in messages.values():
        session.expunge(message)
    return messages


#: How many messages the worker checks it may still send at once, right
#: before sending them (one check per message cost a tenth of its time).
RENEW_AHEAD = 25
#: How long outcomes gather before they are written together (one
#: transaction per message cost a third of its time).
RECORD_EVERY_SECONDS = 0.1


def _renew_claims(session: Session, ids: list[int], worker: str) -> set[int]:
    """Renew this worker's claim on messages ``ids``; return those still this
    worker's to send. Not those sent or given up meanwhile (an erasure, a
    reactivation), nor those another worker claimed after this worker's
    lease ran out."""
    now = clock.now()
    db.begin_write(session)
    renewed = set(
        session.scalars(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(ids),
                OutboxMessage.status == PENDING,
                OutboxMessage.claimed_by == worker,
                OutboxMessage.locked_until >= now,
            )
            .values(locked_until=now + _lease())
            .returning(OutboxMessage.id)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()  # hold no transaction while talking SMTP
    return renewed


@dataclass
class _Attempt:
    """How sending one message went."""

    message: OutboxMessage
    error: str | None = None
    status_code: int | None = None
    final: bool = False  # the error is not worth another attempt


class _Senders:
    """Sends a pass's messages side by side on the worker's sender threads,
    each over an SMTP connection and with a database session (for couriers)
    of its own: a worker spends its time waiting on mail servers and
    receivers, so it waits on several at once."""

    def __init__(self, app: Flask, count: int) -> None:
        self._app = app
        self._pool = _sender_threads(count)
        self._own = threading.local()
        self._opened: list[tuple[_Mailer, Session]] = []
        self._lock = threading.Lock()
        self._submitted: list[Future[_Attempt]] = []

    def submit(self, message: OutboxMessage) -> Future[_Attempt]:
        """Send ``message`` on the next free thread."""
        future = self._pool.submit(self._send, message)
        self._submitted.append(future)
        return future

    def close(self) -> None:
        """Drop what was not started, wait for what was, close connections."""
        for future in self._submitted:
            future.cancel()
        wait(self._submitted)
        for mailer, session in self._opened:
            mailer.close()
            session.close()

    def _send(self, message: OutboxMessage) -> _Attempt:
        with self._app.app_context(), logs.acting_for(message.request_id):
            own: tuple[_Mailer, Session] | None = getattr(self._own, "tools", None)
            if own is None:
                own = self._own.tools = (_Mailer(), db.new_session())
                with self._lock:
                    self._opened.append(own)
            mailer, session = own
            return _send(session, message, mailer)


@functools.cache
def _sender_threads(count: int) -> ThreadPoolExecutor:
    """The process's sender threads, kept from pass to pass."""
    return ThreadPoolExecutor(count, thread_name_prefix="outbox-sender")


class _Pass:
    """One pass of a worker over the messages it claimed: renews its claims a
    few messages ahead, hands the messages to the senders, and records their
    outcomes a batch at a time (at once when sending slows down)."""

    def __init__(
        self,
        session: Session,
        worker: str,
        report: DeliveryReport,
        messages: list[OutboxMessage],
    ) -> None:
        self.session, self.worker, self.report = session, worker, report
        self.waiting = deque(messages)  # not handed to a sender yet
        self.renewed: set[int] = set()
        self.checked: set[int] = set()
        self.in_flight: dict[Future[_Attempt], OutboxMessage] = {}
        self.done: list[_Attempt] = []
        self.done_since = 0.0
        self.held_since = time.monotonic()  # when the claims were last renewed

    def run(
        self, senders: _Senders, room: int, should_stop: Callable[[], bool]
    ) -> None:
        """Send everything (``room``: how many messages may be in hand at
        once) unless ``should_stop`` says otherwise; give back the rest."""
        stopping = False
        while True:
            while not stopping and self.waiting and len(self.in_flight) < room:
                if should_stop():
                    stopping = True
                    self._take_back_unstarted()
                    break
                if self.waiting[0].id not in self.checked:
                    self._renew_ahead()
                message = self.waiting.popleft()
                if message.id in self.renewed:
                    self.in_flight[senders.submit(message)] = message
            if not self.in_flight:
                break
            if not stopping and should_stop():
                stopping = True
                self._take_back_unstarted()
            finished, _ = wait(
                self.in_flight,
                timeout=RECORD_EVERY_SECONDS,
                return_when=FIRST_COMPLETED,
            )
            self._keep_claims()
            for future in finished:
                del self.in_flight[future]
                if not self.done:
                    self.done_since = time.monotonic()
                self.done.append(future.result())
            if self.done and (
                not self.in_flight
                or time.monotonic() - self.done_since >= RECORD_EVERY_SECONDS
            ):
                self._record()
        self._record()
        if self.waiting:
            _release(self.session, [m.id for m in self.waiting], self.worker)

    def _take_back_unstarted(self) -> None:
        """Leave the messages no sender has started on to the next worker."""
        for future, message in list(self.in_flight.items()):
            if future.cancel():
                del self.in_flight[future]
                self.waiting.append(message)

    def _renew_ahead(self) -> None:
        ahead = [m.id for m in itertools.islice(self.waiting, RENEW_AHEAD)]
        self.renewed = _renew_claims(self.session, ahead, self.worker)
        self.checked = set(ahead)
        for message_id in self.checked - self.renewed:
            log.warning(
                "message %s skipped: no longer claimed by %s", message_id, self.worker
            )

    def _keep_claims(self) -> None:
        """Renew the claims on everything in hand once ``RENEW_EVERY`` of a
        lease has passed, senders waiting on a slow server included.

        A renewal the database refuses (busy, a deadlock) is tried again a
        second later: giving the claims back would let another worker send
        again what this one sent and has not recorded yet.
        """
        every = _lease().total_seconds() * RENEW_EVERY
        if time.monotonic() - self.held_since < every:
            return
        held = [
            m.id
            for m in (
                *self.waiting,
                *self.in_flight.values(),
                *(attempt.message for attempt in self.done),
            )
        ]
        try:
            self.renewed &= _renew_claims(self.session, held, self.worker)
        except (SQLAlchemyError, DatabaseBusy) as error:
            self.session.rollback()
            log.warning("worker %s could not renew its claims: %s", self.worker, error)
            self.held_since = time.monotonic() - every + RETRY_RENEWAL_SECONDS
            return
        self.held_since = time.monotonic()

    def _record(self) -> None:
        if not self.done:
            return
        batch, self.done = self.done, []
        outcomes = _record_results(self.session, batch, self.worker)
        for attempt, outcome in zip(batch, outcomes, strict=True):
            message = attempt.message
            if outcome is None and message.recipient.endswith(ERASED_DOMAIN):
                # Erased while it was in hand: no copy of it may stay on disk.
                for path in eml_files(message.id):
                    path.unlink(missing_ok=True)
            if outcome == SENT:
                self.report.sent += 1
            elif outcome == FAILED:
                self.report.failed += 1
            elif outcome is not None:
                self.report.retried += 1


def _record_results(
    session: Session, attempts: list[_Attempt], worker: str
) -> list[str | None]:
    """Store the outcomes of attempts in one transaction (one per message
    cost a third of a message's time); return each outcome (None: nothing
    stored, another worker's attempt decides)."""
    db.begin_write(session)
    sent = _record_sent(session, [a for a in attempts if a.error is None], clock.now())
    outcomes = [
        sent.get(a.message.id)
        if a.error is None
        else _record_failure(session, a, worker)
        for a in attempts
    ]
    session.commit()
    for attempt, outcome in zip(attempts, outcomes, strict=True):
        if outcome is not None:
            metrics.OUTBOX_ATTEMPTS.labels(attempt.message.kind, outcome).inc()
    return outcomes


def _record_failure(session: Session, attempt: _Attempt, worker: str) -> str | None:
    """Note a failed attempt: retry with back-off, or give up."""
    message = session.get(
        OutboxMessage, attempt.message.id, with_for_update=True, populate_existing=True
    )
    if message is None or message.status != PENDING or message.claimed_by != worker:
        return None  # another worker took the message over; its attempt decides
    with logs.acting_for(message.request_id):
        outcome = _retry_or_give_up(message, attempt)
    session.flush()
    return outcome


def _retry_or_give_up(message: OutboxMessage, attempt: _Attempt) -> str:
    now = clock.now()
    message.attempts += 1
    message.locked_until = None
    message.status_code = attempt.status_code
    message.last_error = attempt.error
    if attempt.final or message.attempts >= current_app.config["OUTBOX_MAX_ATTEMPTS"]:
        message.status = FAILED
        log.error(
            "gave up on message %s after %d attempts", message.id, message.attempts
        )
        return FAILED
    delay = current_app.config["OUTBOX_RETRY_BASE_SECONDS"] * 2 ** (
        message.attempts - 1
    )
    message.next_attempt_at = now + timedelta(seconds=min(delay, 6 * 3600))
    log.warning(
        "message %s not sent (attempt %d): %s",
        message.id,
        message.attempts,
        attempt.error,
    )
    return "retried"


def _record_sent(
    session: Session, attempts: list[_Attempt], now: datetime
) -> dict[int, str]:
    """Mark messages sent, whoever claims them now, unless no longer pending
    (another worker's attempt decided); return ``SENT`` by the ids marked.

    An UPDATE per status code, after the departures' locks
    (``messages_settling``): reading the rows first cost a third of a
    message's time.
    """
    if not attempts:
        return {}
    messages = tuple(a.message for a in attempts)
    messages_settling.send(messages, session=session)
    by_status_code: dict[int | None, list[int]] = {}
    for attempt in attempts:
        by_status_code.setdefault(attempt.status_code, []).append(attempt.message.id)
    marked: dict[int, int] = {}
    for status_code, ids in by_status_code.items():
        rows = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == PENDING)
            .values(
                status=SENT,
                sent_at=now,
                attempts=OutboxMessage.attempts + 1,
                locked_until=None,
                last_error=None,
                status_code=status_code,
            )
            .returning(OutboxMessage.id, OutboxMessage.attempts)
            .execution_options(synchronize_session=False)
        )
        marked.update((row.id, row.attempts) for row in rows)
    for attempt in attempts:
        message = attempt.message
        if message.id not in marked:
            # As the other side left it (erased, perhaps).
            recipient = session.scalar(
                select(OutboxMessage.recipient).where(OutboxMessage.id == message.id)
            )
            set_committed_value(message, "recipient", recipient or message.recipient)
            continue
        for name, value in (
            ("status", SENT),
            ("sent_at", now),
            ("attempts", marked[message.id]),
            ("locked_until", None),
            ("last_error", None),
            ("status_code", attempt.status_code),
        ):
            set_committed_value(message, name, value)
    if done := tuple(m for m in messages if m.id in marked):
        messages_sent.send(done, session=session)
    return dict.fromkeys(marked, SENT)


def new_worker_id() -> str:
    """Return a new worker identity, for one worker's whole run."""
    return uuid.uuid4().hex[:8]


def deliver_due(
    limit: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    worker: str | None = None,
) -> DeliveryReport:
    """Send the messages that are due now; return what happened.

    ``should_stop`` is asked before each message: a worker told to stop
    finishes the messages in hand and leaves the rest to the next worker.
    ``worker`` is the caller's identity (``new_worker_id``; a new one when
    None), the same on each of its passes and never used by two callers at
    once: a pass takes back the messages an earlier failed pass still holds.
    """
    config = current_app.config
    limit = limit or config["OUTBOX_BATCH_SIZE"]
    worker = worker or new_worker_id()
    report = DeliveryReport()
    with db.new_session() as session:
        claimed = _claim(session, limit, worker)
        if not claimed:
            return report
        try:
            loaded = _load(session, claimed)
        except (SQLAlchemyError, DatabaseBusy):
            _release_if_possible(session, claimed, worker)
            raise
        # Not those deleted since they were claimed (their webhook endpoint went).
        messages = [loaded[i] for i in claimed if i in loaded]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        senders = _Senders(app, config["OUTBOX_SENDERS"])
        try:
            _Pass(session, worker, report, messages).run(
                senders, 2 * config["OUTBOX_SENDERS"], should_stop
            )
        except (SQLAlchemyError, DatabaseBusy):
            # Messages in hand may have gone out unrecorded: sending them
            # again is the price of never losing them.
            log.warning("worker %s lost the database; giving back its claims", worker)
            senders.close()
            _release_if_possible(session, claimed, worker)
            raise
        finally:
            senders.close()
    return report


def _send(session: Session, message: OutboxMessage, mailer: _Mailer) -> _Attempt:
    """Send one message by mail or by its kind's courier; return how it went."""
    attempt = _Attempt(message)
    try:
        if message.kind in _COURIERS:
            attempt.status_code = _COURIERS[message.kind](session, message)
        else:
            mailer.send(message)
    except DeliveryFailed as exc:
        attempt.error = _unaddressed(str(exc), message)
        attempt.status_code, attempt.final = exc.status_code, exc.final
    except (smtplib.SMTPException, OSError) as exc:
        attempt.error = _unaddressed(f"{type(exc).__name__}: {exc}", message)
    except (SQLAlchemyError, DatabaseBusy):
        raise
    except Exception as exc:  # a message that cannot be built: retry, then give up
        log.exception("message %s could not be sent", message.id)
        attempt.error = _unaddressed(f"{type(exc).__name__}: {exc}", message)
    return attempt


def without_address(text: str, address: str) -> str:
    """Return ``text`` with ``address`` (in any case) replaced: mail servers
    quote the recipient when they refuse it."""
    quoted = re.compile(re.escape(address), re.IGNORECASE)
    return quoted.sub("<the recipient>", text)


def _unaddressed(error: str, message: OutboxMessage) -> str:
    """An error as kept and logged: without the recipient's address (logs
    are out of an erasure's reach), and at most 1,000 characters."""
    return without_address(error, message.recipient)[:1000]


def _release_if_possible(session: Session, message_ids: list[int], worker: str) -> None:
    """Give claims back after a database error, if the database lets us.

    If it does not, they stay this worker's: its next pass takes them back
    (see ``_claim``), and others wait for the lease.
    """
    try:
        session.rollback()
        _release(session, message_ids, worker)
    except (SQLAlchemyError, DatabaseBusy) as error:
        log.warning("worker %s kept its claims: %s", worker, type(error).__name__)


def _release(session: Session, message_ids: list[int], worker: str) -> None:
    """Give claimed messages back at once, for another worker to take."""
    db.begin_write(session)
    session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(message_ids),
            OutboxMessage.status == PENDING,
            OutboxMessage.claimed_by == worker,
        )
        .values(locked_until=None)
    )
    session.commit()


def recent(session: Session, *, status: str | None, limit: int) -> list[OutboxMessage]:
    """Return the newest messages, optionally only those in ``status``."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    return list(session.scalars(query))


def cancel_pending(
    session: Session, *conditions: ColumnElement[bool], why: str
) -> None:
    """Cancel the pending messages that match ``conditions``, noting ``why``.

    A message a worker is sending right now (its claim still runs) is left
    to go: it is marked as it ends, sent or not, and never silently both.
    """
    now = clock.now()
    session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.status == PENDING,
            or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until < now),
            *conditions,
        )
        .values(status=CANCELLED, last_error=why)
        .execution_options(synchronize_session=False)
    )


def retry_failed(session: Session, message_ids: list[int] | None) -> int:
    """Queue failed messages again (all of them when ``message_ids`` is None).

    Only failed ones: a pending message is queued already, and a sent one must
    never go out twice. Never an erased person's: erasure failed them for
    good. Return how many were queued.
    """
    query = (
        update(OutboxMessage)
        .where(
            OutboxMessage.status == FAILED,
            ~OutboxMessage.recipient.endswith(ERASED_DOMAIN, autoescape=True),
        )
        .values(
            status=PENDING,
            attempts=0,
            next_attempt_at=clock.now(),
            locked_until=None,
            claimed_by=None,
        )
    )
    if message_ids is not None:
        query = query.where(OutboxMessage.id.in_(message_ids))
    result = cast(CursorResult[Any], session.execute(query))
    return result.rowcount


def init_app(app: Flask) -> None:
    """Set up Flask-Mail with the app's ``MAIL_*`` settings."""
    flask_mail.Mail(app)

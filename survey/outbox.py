"""Transactional outbox: emails written with the business change, sent by a worker.

``enqueue`` adds a message in the caller's transaction. ``deliver_due`` is the
worker's step: it claims due messages (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several workers never take the same row and never wait for
each other), leases them for a while, sends each through Flask-Mail and
commits each result at once. Right before sending, a worker renews its
claim on the message, and skips it if the claim has passed to another worker
(a lease that ran out while this one was stuck on a slow server).

Delivery is at least once. A message marked sent is never sent again, but a
worker that dies, or loses the database, after the mail server took a
message and before recording it as sent leaves it to be sent again. Every
copy carries the message's one ``Message-ID``, chosen when it was queued,
so mail systems can tell a copy from a new message. A worker that dies
leaves its messages to others once its lease runs out. A worker that loses
the database gives its claims back if it can, and keeps one identity
(``new_worker_id``) for its whole run: its next pass takes back at once
whatever it still holds.
"""

from __future__ import annotations

import email.policy
import functools
import logging
import os
import smtplib
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Protocol, cast

import flask_mail
from blinker import Namespace
from flask import Flask, current_app, render_template
from sqlalchemy import (
    CursorResult,
    ForeignKey,
    Index,
    String,
    Text,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from survey import clock, db
from survey.db import Base
from survey.errors import DatabaseBusy
from survey.i18n import force_locale

log = logging.getLogger(__name__)

PENDING, SENT, FAILED = "pending", "sent", "failed"

_signals = Namespace()
#: Sent in the transaction that marks a message sent (``sender``: the
#: message; keyword ``session``): whoever keeps a fact about the sending
#: writes it there, so it commits with the message's status or not at all.
message_sent = _signals.signal("message-sent")
#: Sent as that transaction begins, before the message's row is locked:
#: whoever will write about the message's departure locks that first, in the
#: order every write about a person takes (departure, then its messages).
message_settling = _signals.signal("message-settling")
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
    #: The ``Message-ID`` header, chosen once when queued: every copy sent
    #: (a retry, a resend after a crash) is the same message to mail systems.
    msgid: Mapped[str] = mapped_column(String(320))
    #: ``pending``, ``sent`` or ``failed`` (gave up after the last attempt).
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    #: A worker's claim on the message lasts until then.
    locked_until: Mapped[datetime | None]
    #: Which worker holds (or last held) the claim.
    claimed_by: Mapped[str | None] = mapped_column(String(32))
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
        subject = render_template(f"email/{name}/subject.txt", **context)
        text = render_template(f"email/{name}/body.txt", **context)
        html = render_template(f"email/{name}/body.html", **context)
    return _one_line(subject), text, html


def enqueue(
    session: Session,
    *,
    kind: str,
    recipient: str,
    locale: str | None,
    departure_id: int | None = None,
    **context: Any,
) -> OutboxMessage:
    """Add an email to the outbox in the caller's transaction.

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
        msgid=make_msgid(domain=_sender_domain()),
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
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


def _as_mail(message: OutboxMessage) -> flask_mail.Message:
    mail_message = _MailMessage(
        subject=message.subject,
        recipients=[message.recipient],
        body=message.body_text,
        html=message.body_html,
        sender=current_app.config["MAIL_DEFAULT_SENDER"],
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


def _lease(messages: int) -> timedelta:
    """How long a claim on ``messages`` messages lasts: each may hit the SMTP
    timeout on connect, on every command and on the data, plus a margin."""
    per_message = current_app.config["MAIL_TIMEOUT_SECONDS"] * 6
    return timedelta(seconds=per_message * messages + 60)


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
            .values(locked_until=now + _lease(len(ids)), claimed_by=worker)
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
            log.info("no mail server configured: wrote %s", path)
            # The documented way for a newcomer to click through locally.
            for line in message.body_text.splitlines():
                if "/s/" in line and "?" not in line:
                    log.info("survey link for %s: %s", message.kind, line.strip())
                    break
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
    session.commit()  # kept loaded: the session does not expire on commit
    return messages


#: Statements the worker runs for every message, built once (building them
#: anew each time was a tenth of a message's time).
_RENEW = (
    update(OutboxMessage)
    .where(
        OutboxMessage.id == bindparam("message_id"),
        OutboxMessage.status == PENDING,
        OutboxMessage.claimed_by == bindparam("worker"),
        OutboxMessage.locked_until >= bindparam("now"),
    )
    .values(locked_until=bindparam("until"))
    .execution_options(synchronize_session=False)
)
_MARK_SENT = (
    update(OutboxMessage)
    .where(OutboxMessage.id == bindparam("message_id"), OutboxMessage.status == PENDING)
    .values(
        status=SENT,
        sent_at=bindparam("now"),
        attempts=OutboxMessage.attempts + 1,
        locked_until=None,
        last_error=None,
        status_code=bindparam("status_code"),
    )
    .returning(OutboxMessage.attempts)
    .execution_options(synchronize_session=False)
)


def _renew_claim(session: Session, message: OutboxMessage, worker: str) -> bool:
    """Renew this worker's claim on a message about to be sent, in the
    current transaction; return False when it is no longer this worker's to
    send: sent or given up meanwhile (an erasure, a reactivation), or claimed
    by another worker after this worker's lease ran out."""
    now = clock.now()
    renewed = session.execute(
        _RENEW,
        {
            "message_id": message.id,
            "worker": worker,
            "now": now,
            "until": now + _lease(1),
        },
    )
    if not cast(CursorResult[Any], renewed).rowcount:
        log.warning("message %s skipped: no longer claimed by %s", message.id, worker)
        return False
    return True


def _renew(session: Session, message: OutboxMessage, worker: str) -> bool:
    """Renew the claim on one message in a transaction of its own."""
    db.begin_write(session)
    renewed = _renew_claim(session, message, worker)
    session.commit()  # hold no transaction while talking SMTP
    return renewed


@dataclass
class _Attempt:
    """How sending one message went."""

    message: OutboxMessage
    error: str | None = None
    status_code: int | None = None
    final: bool = False  # the error is not worth another attempt


def _record_result(
    session: Session,
    attempt: _Attempt,
    worker: str,
    following: OutboxMessage | None,
) -> tuple[str | None, bool | None]:
    """Store the outcome of one attempt and renew the claim on the message
    to send next, in one transaction (two cost a sixth of a message's time).

    Return the outcome (None: nothing stored, another worker's attempt
    decides) and whether the claim on ``following`` was renewed (None: no
    ``following``).
    """
    db.begin_write(session)
    if attempt.error is None:
        outcome = _record_sent(session, attempt.message, attempt.status_code)
    else:
        outcome = _record_failure(session, attempt, worker)
    renewed = _renew_claim(session, following, worker) if following else None
    session.commit()  # hold no transaction while talking SMTP
    return outcome, renewed


def _record_failure(session: Session, attempt: _Attempt, worker: str) -> str | None:
    """Note a failed attempt: retry with back-off, or give up."""
    message = attempt.message
    session.refresh(message, with_for_update=True)
    if message.status != PENDING or message.claimed_by != worker:
        return None  # another worker took the message over; its attempt decides
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
    session.flush()
    return "retried"


def _record_sent(
    session: Session, message: OutboxMessage, status_code: int | None
) -> str | None:
    """Mark a message sent, whoever claims it now, unless it is no longer
    pending (another worker's attempt decided); return the outcome.

    One UPDATE, after the departure's lock (``message_settling``): reading
    the row first, then writing it, cost a third of a message's time.
    """
    message_settling.send(message, session=session)
    now = clock.now()
    marked = session.execute(
        _MARK_SENT,
        {"message_id": message.id, "now": now, "status_code": status_code},
    ).first()
    if marked is None:
        session.refresh(message)  # as the other side left it (erased, perhaps)
        return None
    for name, value in (
        ("status", SENT),
        ("sent_at", now),
        ("attempts", marked.attempts),
        ("locked_until", None),
        ("last_error", None),
        ("status_code", status_code),
    ):
        set_committed_value(message, name, value)
    message_sent.send(message, session=session)
    return SENT


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
    finishes the message in hand and leaves the rest to the next worker.
    ``worker`` is the caller's identity (``new_worker_id``; a new one when
    None), the same on each of its passes and never used by two callers at
    once: a pass takes back the messages an earlier failed pass still holds.
    """
    limit = limit or current_app.config["OUTBOX_BATCH_SIZE"]
    worker = worker or new_worker_id()
    report = DeliveryReport()
    mailer = _Mailer()
    with db.new_session() as session:
        try:
            claimed = _claim(session, limit, worker)
            _deliver_claimed(session, claimed, worker, mailer, report, should_stop)
        finally:
            mailer.close()
    return report


def _deliver_claimed(
    session: Session,
    message_ids: list[int],
    worker: str,
    mailer: _Mailer,
    report: DeliveryReport,
    should_stop: Callable[[], bool],
) -> None:
    try:
        loaded = _load(session, message_ids)
    except (SQLAlchemyError, DatabaseBusy):
        _release_if_possible(session, message_ids, worker)
        raise
    # Not those deleted since they were claimed (their webhook endpoint went).
    queue = [loaded[i] for i in message_ids if i in loaded]
    renewed: bool | None = None  # the claim on the next message, if renewed
    for index, message in enumerate(queue):
        if should_stop():
            _release(session, [m.id for m in queue[index:]], worker)
            return
        try:
            if renewed is None:
                renewed = _renew(session, message, worker)
            if not renewed:
                renewed = None
                continue
            attempt = _send(session, message, mailer)
            following = (
                queue[index + 1]
                if index + 1 < len(queue) and not should_stop()
                else None
            )
            outcome, renewed = _record_result(session, attempt, worker, following)
        except (SQLAlchemyError, DatabaseBusy):
            # The message in hand may have gone out unrecorded: sending it
            # again is the price of never losing it.
            log.warning(
                "worker %s lost the database at message %s; giving back its claims",
                worker,
                message.id,
            )
            _release_if_possible(session, [m.id for m in queue[index:]], worker)
            raise
        if outcome is None and message.recipient.endswith(ERASED_DOMAIN):
            # Erased while it was in hand: no copy of it may stay on disk.
            for path in eml_files(message.id):
                path.unlink(missing_ok=True)
        if outcome == SENT:
            report.sent += 1
        elif outcome == FAILED:
            report.failed += 1
        elif outcome is not None:
            report.retried += 1


def _send(session: Session, message: OutboxMessage, mailer: _Mailer) -> _Attempt:
    """Send one message by mail or by its kind's courier; return how it went."""
    attempt = _Attempt(message)
    try:
        if message.kind in _COURIERS:
            attempt.status_code = _COURIERS[message.kind](session, message)
        else:
            mailer.send(message)
    except DeliveryFailed as exc:
        attempt.error = str(exc)[:1000]
        attempt.status_code, attempt.final = exc.status_code, exc.final
    except (smtplib.SMTPException, OSError) as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:1000]
    except (SQLAlchemyError, DatabaseBusy):
        raise
    except Exception as exc:  # a message that cannot be built: retry, then give up
        log.exception("message %s could not be sent", message.id)
        attempt.error = f"{type(exc).__name__}: {exc}"[:1000]
    return attempt


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

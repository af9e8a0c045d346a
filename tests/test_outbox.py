"""Email through the outbox: a real SMTP server, failures, retries, many workers."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, func, select

from survey import db, outbox
from survey.branding.models import Brand
from survey.consent import ConsentEvent
from survey.outbox import OutboxMessage
from tests.conftest import SECRET, SmtpSink, free_port
from tests.factories import (
    auth,
    csrf_token,
    hidden_fields,
    make_consenting,
    make_departure,
    make_token,
    path_of,
)


def text_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode()
    raise AssertionError("no text part")


def html_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode()
    raise AssertionError("no HTML part")


def deliver(app) -> outbox.DeliveryReport:
    with app.app_context():
        return outbox.deliver_due()


WORKER = [sys.executable, "-m", "flask", "--app", "survey", "outbox", "send"]


def worker_env(database_url: str, tmp_path: Path, sink: SmtpSink, **extra: str):
    """The environment of an outbox worker run as its own process."""
    return {
        **os.environ,
        "SURVEY_DATABASE_URL": database_url,
        "SURVEY_SECRET_KEY": SECRET,
        "SURVEY_BASE_URL": "http://survey.test",
        "SURVEY_INSTANCE_PATH": str(tmp_path / "worker"),
        "SURVEY_MAIL_SERVER": sink.host,
        "SURVEY_MAIL_PORT": str(sink.port),
        **{f"SURVEY_{name}": value for name, value in extra.items()},
    }


@contextmanager
def serving(sink: SmtpSink) -> Iterator[SmtpSink]:
    """Run ``sink`` as a real SMTP server on its port for the block."""
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def start_worker(
    database_url: str,
    tmp_path: Path,
    sink: SmtpSink,
    *options: str,
    stderr: int = subprocess.DEVNULL,
    **extra: str,
) -> subprocess.Popen[str]:
    """Start ``outbox send [options]`` as its own process, sending to ``sink``."""
    return subprocess.Popen(
        [*WORKER, *options],
        env=worker_env(database_url, tmp_path, sink, **extra),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def messages(session) -> list[OutboxMessage]:
    session.rollback()
    return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_end_to_end_from_the_api_to_the_answers(mail_app, smtp):
    client = mail_app.test_client()
    token = make_token(mail_app, "departures:write", "responses:read")
    created = client.post(
        "/api/v1/departures",
        json={
            "external_id": "sub_e2e",
            "company": "Initech",
            "contact_name": "Peter Gibbons",
            "contact_email": "peter@initech.example",
            "mrr_cents": 120_000,
        },
        headers=auth(token),
    ).get_json()

    assert deliver(mail_app).sent == 1
    [received] = smtp.messages
    assert received["To"] == "peter@initech.example"
    body = text_part(received)
    assert "Hello Peter Gibbons," in body
    assert "What is the main reason you are leaving?" in body
    assert "?reason=too_expensive" in html_part(received)
    survey_link = re.search(r"^(http://survey\.test/s/[^\s?]+)\s*$", body, re.M).group(
        1
    )

    page1 = path_of(survey_link)
    page = client.get(page1).get_data(as_text=True)
    response = client.post(
        page1, data={"csrf_token": csrf_token(page), "reason": "switched"}
    )
    assert response.status_code == 303
    page2 = client.get(page1 + "/more").get_data(as_text=True)
    assert "What made the alternative better for you?" in page2
    client.post(
        page1 + "/more",
        data={
            **hidden_fields(page2),
            "factors": ["too_expensive"],
            "destination": "competitor",
            "destination_name": "Globex",
            "follow_up": "Cheaper and faster",
            "winback_consent": "y",
        },
    )

    shown = client.get(
        f"/api/v1/departures/{created['id']}", headers=auth(token)
    ).get_json()
    assert shown["first_opened_at"] is not None
    assert shown["response"]["reason"] == "switched"
    assert shown["response"]["factors"] == ["too_expensive"]
    assert shown["response"]["destination_name"] == "Globex"
    assert shown["response"]["follow_up_answer"] == "Cheaper and faster"
    assert shown["consent"]["state"] == "granted"


def test_the_invitation_has_text_and_html_and_every_link(mail_app, smtp):
    make_departure(mail_app, contact_name="Ada")
    deliver(mail_app)
    [received] = smtp.messages
    text, html = text_part(received), html_part(received)
    assert len(re.findall(r"\?reason=\w+", text)) == 10
    assert len(re.findall(r"\?reason=\w+", html)) == 10
    assert re.search(r"http://survey\.test/w/\S+", text)
    assert "Don&#39;t contact me" in html or "Don't contact me" in html


def test_the_mail_programs_unsubscribe_button_withdraws_in_one_click(
    mail_app, smtp, session
):
    make_consenting(mail_app)
    deliver(mail_app)
    [received] = smtp.messages
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(http://survey\.test/w/\S+)>", received["List-Unsubscribe"])
    assert url is not None
    assert url.group(1) in text_part(received)  # the body's own withdrawal link

    # As a mail provider posts it (RFC 8058): no cookie, no form token.
    provider = mail_app.test_client()
    done = provider.post(path_of(url.group(1)), data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    session.rollback()
    actions = session.scalars(select(ConsentEvent.action).order_by(ConsentEvent.id))
    assert actions.all() == ["granted", "withdrawn"]
    # Anything else without the form token is still refused.
    refused = provider.post(path_of(url.group(1)), data={"List-Unsubscribe": "x"})
    assert refused.status_code == 400


def test_names_and_subjects_cannot_inject_headers(mail_app, smtp, session):
    # Written past the admin page, which would not take them.
    session.merge(
        Brand(
            id=1,
            company_name="Evil\nBcc: other@example.com\nX-Injected: yes",
            sender_name="Eve\r\nBcc: victim@example.com",
            reply_to="reply@example.com\r\nX-Injected: yes",
            updated_at=datetime.now(UTC),
        )
    )
    session.commit()
    make_departure(mail_app, contact_name="Eve\r\nBcc: victim@example.com")
    assert deliver(mail_app).sent == 1
    [received] = smtp.messages
    assert received["Bcc"] is None
    assert received["X-Injected"] is None
    # Long subjects are folded (CRLF + space), which is not a new header.
    assert re.sub(r"\r\n[ \t]", " ", received["Subject"]).strip() == (
        "One question from Evil Bcc: other@example.com X-Injected: yes before you go"
    )
    # The name, whatever it holds, stays a name: mail goes from our address.
    name, address = parseaddr(received["From"])
    assert address == "survey@localhost"
    assert str(make_header(decode_header(name))) == "Eve Bcc: victim@example.com"
    assert received["X-Envelope-To"] == received["To"]


def test_a_sent_message_is_never_sent_again(mail_app, smtp, session):
    make_departure(mail_app)
    assert deliver(mail_app).sent == 1
    assert deliver(mail_app).handled == 0
    assert len(smtp.messages) == 1
    [message] = messages(session)
    assert message.status == "sent"
    assert message.attempts == 1
    assert message.sent_at is not None


def test_smtp_down_keeps_the_message_and_delivers_when_back(make_app, clock, session):
    port = free_port()
    app = make_app(
        MAIL_SERVER="127.0.0.1", MAIL_PORT=port, OUTBOX_RETRY_BASE_SECONDS=60
    )
    make_departure(app)

    assert deliver(app).retried == 1
    [message] = messages(session)
    assert message.status == "pending"
    assert message.attempts == 1
    assert "Connection refused" in message.last_error
    assert (message.next_attempt_at - clock()).total_seconds() == 60

    clock.advance(seconds=60)
    assert deliver(app).retried == 1
    [message] = messages(session)
    assert message.attempts == 2
    assert (
        message.next_attempt_at - clock()
    ).total_seconds() == 120  # back-off doubles

    with serving(SmtpSink("127.0.0.1", port)) as sink:
        assert deliver(app).handled == 0  # not due yet
        clock.advance(seconds=120)
        assert deliver(app).sent == 1
        assert len(sink.messages) == 1
        [message] = messages(session)
        assert (message.status, message.last_error) == ("sent", None)


def test_by_default_a_mail_server_down_overnight_fails_no_message(
    make_app, clock, session
):
    app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())
    make_departure(app)
    outage_ends = clock() + timedelta(hours=12)
    while clock() < outage_ends:
        deliver(app)
        [message] = messages(session)
        assert message.status == "pending", f"gave up after {message.attempts}"
        clock.advance(seconds=(message.next_attempt_at - clock()).total_seconds())


def test_it_gives_up_after_the_last_attempt_and_shows_it(make_app, clock, session):
    app = make_app(
        MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), OUTBOX_MAX_ATTEMPTS=3
    )
    make_departure(app)
    for _ in range(3):
        deliver(app)
        clock.advance(hours=1)
    [message] = messages(session)
    assert (message.status, message.attempts) == ("failed", 3)
    assert message.last_error
    clock.advance(days=1)
    assert deliver(app).handled == 0


def test_without_a_mail_server_messages_become_eml_files(app, caplog):
    departure = make_departure(app)
    with caplog.at_level(logging.INFO, logger="survey.outbox"):
        assert deliver(app).sent == 1
    [eml] = list((Path(app.instance_path) / "mail").iterdir())
    assert eml.suffix == ".eml"
    assert f"To: {departure.contact_email}" in eml.read_text()
    # The file holds the survey link; the log names the file, never the link.
    assert re.search(r"http://survey\.test/s/[\w.-]+", eml.read_text())
    logged = " ".join(r.message for r in caplog.records)
    assert str(eml) in logged and "/s/" not in logged


class _HangingSink(SmtpSink):
    """Accepts ``accept`` messages, then never answers the next DATA."""

    accept = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hanging = threading.Event()  # set once a DATA goes unanswered

    async def handle_DATA(self, server, session, envelope):
        if len(self.messages) >= self.accept:
            self.hanging.set()
            await asyncio.sleep(3600)
        return await super().handle_DATA(server, session, envelope)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    make_app, database_url, tmp_path, clock, session
):
    with serving(_HangingSink("127.0.0.1", free_port())) as sink:
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        for _ in range(8):
            make_departure(app)
        worker = start_worker(database_url, tmp_path, sink, MAIL_TIMEOUT_SECONDS="60")
        deadline = time.monotonic() + 30
        while sum(m.status == "sent" for m in messages(session)) < 3:
            assert time.monotonic() < deadline, "the worker sent nothing"
            time.sleep(0.05)
        assert sink.hanging.wait(30), "the worker never sent the fourth message"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        # Which three went first is the senders' race.
        statuses = Counter(m.status for m in messages(session))
        assert statuses == {"sent": 3, "pending": 5}

        sink.accept = 100
        # The dead worker's claim lasts a lease (a minute) from its last
        # renewal, then another worker finishes the batch.
        clock.current = datetime.now(UTC)  # the worker ran on the real time
        assert deliver(app).handled == 0
        clock.advance(seconds=61)
        assert deliver(app).sent == 5
    recipients = [m["To"] for m in sink.messages]
    assert len(recipients) == 8
    assert len(set(recipients)) == 8
    assert all(m.status == "sent" and m.attempts == 1 for m in messages(session))


@contextmanager
def hanging_pass(make_app, **config: Any) -> Iterator[tuple[Any, list[Any]]]:
    """A worker's pass over two messages, on a thread, its senders waiting
    on a mail server that never answers; yield the app (once the server
    hangs) and the pass's outcome (a report or an error), there after."""
    with serving(_HangingSink("127.0.0.1", free_port())) as sink:
        sink.accept = 0
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port, **config)
        for _ in range(2):
            make_departure(app)
        outcomes: list[Any] = []

        def work() -> None:
            try:
                outcomes.append(deliver(app))
            except Exception as error:  # the caller's to check
                outcomes.append(error)

        worker = threading.Thread(target=work)
        worker.start()
        try:
            assert sink.hanging.wait(30), "the worker sent nothing"
            yield app, outcomes
        finally:
            worker.join(timeout=30)
    assert sink.messages == []


def test_a_worker_waiting_on_a_slow_mail_server_keeps_its_claim(
    make_app, clock, session
):
    """The lease is short, so a dead worker's messages move on soon; a live
    one renews it while its senders wait, and no other worker takes over."""
    config = {"MAIL_TIMEOUT_SECONDS": 4, "OUTBOX_LEASE_SECONDS": 3}
    with hanging_pass(make_app, **config) as (app, outcomes):
        claimed = [m.locked_until for m in messages(session)]
        clock.advance(seconds=2)
        renewed_until = clock.current + timedelta(seconds=3)
        deadline = time.monotonic() + 10
        while not all(
            m.locked_until and m.locked_until >= renewed_until
            for m in messages(session)
        ):
            assert time.monotonic() < deadline, f"never renewed: {claimed}"
            time.sleep(0.05)
        clock.advance(seconds=2)  # past the first lease, within the renewed
        assert deliver(app).handled == 0
    [report] = outcomes
    assert report.retried == 2  # the mail server's time out


def test_a_renewal_the_database_refuses_is_tried_again(
    make_app, database_url, clock, caplog
):
    """The database busy when the claims are renewed: the worker goes on
    (giving them back would let another send again what it sent)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the write lock held from outside is SQLite's")
    config = {
        "MAIL_TIMEOUT_SECONDS": 6,
        "OUTBOX_LEASE_SECONDS": 3,
        "SQLITE_BUSY_TIMEOUT_SECONDS": 1,
    }
    with hanging_pass(make_app, **config) as (_app, outcomes):
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        holder.execute("BEGIN IMMEDIATE")  # the write lock, until refused
        deadline = time.monotonic() + 10
        while "could not renew its claims" not in caplog.text:
            assert time.monotonic() < deadline, "the renewal was never refused"
            time.sleep(0.05)
        holder.rollback()
        holder.close()
    [report] = outcomes
    assert isinstance(report, outbox.DeliveryReport), report
    assert report.retried == 2  # the mail server's time out, recorded


class _KillingSink(SmtpSink):
    """Keeps a message, then kills the worker (SIGKILL) before answering 250."""

    victim: int | None = None

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if self.victim is not None:
            os.kill(self.victim, signal.SIGKILL)
            self.victim = None
        return reply


def test_a_message_sent_again_after_a_worker_crash_keeps_its_message_id(
    make_app, database_url, tmp_path, clock, session
):
    """The mail server has the message, the worker dies before recording it:
    it goes out again (at least once), as the same message to mail systems."""
    with serving(_KillingSink("127.0.0.1", free_port())) as sink:
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        make_departure(app)
        worker = start_worker(database_url, tmp_path, sink)
        sink.victim = worker.pid
        try:
            assert worker.wait(timeout=30) == -signal.SIGKILL
        finally:
            worker.kill()
            worker.wait()
        [message] = messages(session)
        assert message.status == "pending"  # accepted, but never recorded as sent

        assert deliver(app).handled == 0  # the dead worker's lease
        clock.advance(hours=2)
        assert deliver(app).sent == 1
    first, again = sink.messages
    assert first["To"] == again["To"]
    assert first["Message-ID"] == again["Message-ID"]
    [message] = messages(session)
    assert first["Message-ID"] == message.msgid
    assert message.status == "sent"


class _RefusingFirstSink(SmtpSink):
    """Refuses the first message with a temporary error (451), then accepts."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.refused: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        if not self.refused:
            self.refused.append(message_from_bytes(envelope.content))
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


def test_a_message_retried_after_an_smtp_failure_keeps_its_message_id(make_app, clock):
    with serving(_RefusingFirstSink("127.0.0.1", free_port())) as sink:
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        make_departure(app)
        assert deliver(app).retried == 1
        clock.advance(hours=1)
        assert deliver(app).sent == 1
    [refused] = sink.refused
    [accepted] = sink.messages
    assert refused["Message-ID"] == accepted["Message-ID"]


class _UnknownRecipientSink(SmtpSink):
    """Refuses every recipient, quoting the address as mail servers do."""

    async def handle_RCPT(self, server, session, envelope, address, options):
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def test_a_refused_recipient_s_address_is_kept_out_of_errors_and_logs(
    make_app, session, caplog
):
    with serving(_UnknownRecipientSink("127.0.0.1", free_port())) as sink:
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        make_departure(app, contact_email="Jane.Doe@Customer.example")
        assert deliver(app).retried == 1
    [message] = messages(session)
    assert "SMTPRecipientsRefused" in message.last_error
    assert "550" in message.last_error
    assert "<the recipient>" in message.last_error
    for text in (message.last_error, caplog.text):
        assert "customer.example" not in text.lower()


def test_the_message_id_is_chosen_when_the_message_is_queued(app, session):
    make_departure(app)
    [queued] = messages(session)
    # The default sender is survey@localhost: its domain names the message.
    assert re.fullmatch(r"<[^<>@\s]+@localhost>", queued.msgid)
    assert deliver(app).sent == 1
    [eml] = list((Path(app.instance_path) / "mail").iterdir())
    written = message_from_bytes(eml.read_bytes())
    assert written["Message-ID"] == queued.msgid
    make_departure(app)
    assert len({m.msgid for m in messages(session)}) == 2


class _Locker:
    """Another client of the database, holding the outbox's write lock when
    told to: the whole database's on SQLite, the table's on PostgreSQL."""

    def __init__(self, database_url: str) -> None:
        sqlite = database_url.startswith("sqlite")
        self.engine = create_engine(
            database_url,
            isolation_level="AUTOCOMMIT",  # the statements below say it all
            connect_args={"check_same_thread": False} if sqlite else {},
        )
        self.connection = self.engine.connect()
        self.statements = (
            ["BEGIN IMMEDIATE"]
            if sqlite
            else ["BEGIN", "LOCK TABLE outbox_messages IN EXCLUSIVE MODE"]
        )
        self.holding = False

    def hold(self) -> None:
        for statement in self.statements:
            self.connection.exec_driver_sql(statement)
        self.holding = True

    def free(self) -> None:
        if self.holding:
            self.connection.exec_driver_sql("ROLLBACK")
            self.holding = False

    def close(self) -> None:
        self.free()
        self.connection.close()
        self.engine.dispose()


@contextmanager
def locker(database_url: str) -> Iterator[_Locker]:
    held = _Locker(database_url)
    try:
        yield held
    finally:
        held.close()


def impatient(database_url: str, seconds: int) -> tuple[str, dict[str, str]]:
    """Return the database URL and settings of a worker that waits at most
    ``seconds`` for a lock, then fails."""
    if database_url.startswith("sqlite"):
        return database_url, {"SQLITE_BUSY_TIMEOUT_SECONDS": str(seconds)}
    return f"{database_url}?options=-c%20lock_timeout%3D{seconds * 1000}", {}


class _LockingSink(SmtpSink):
    """Keeps a message, then has ``locker`` take the database's write lock
    before answering 250: the worker cannot record what it sent."""

    locker: _Locker | None = None

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if self.locker is not None:
            self.locker.hold()
            self.locker = None
        return reply


class _Output:
    """A process's standard error, read on a thread as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        threading.Thread(target=self._read).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr as stream:  # to its end: the process exited
            for line in stream:
                self.lines.append(line)

    def wait_for(self, text: str, seconds: float = 30) -> bool:
        """Wait until ``text`` is written; return False if the process ends first."""
        deadline = time.monotonic() + seconds
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"{text!r} never came"
            time.sleep(0.05)
        return True


def test_after_a_database_error_a_worker_takes_back_its_own_claims_at_once(
    make_app, database_url, tmp_path, session
):
    """The worker can neither record a sent message nor give its claim back
    (the database is locked): its next pass sends the message again at once,
    without waiting for its own lease (two minutes here) to run out."""
    with (
        serving(_LockingSink("127.0.0.1", free_port())) as sink,
        locker(database_url) as lock,
    ):
        sink.locker = lock
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        make_departure(app)
        url, settings = impatient(database_url, 1)
        worker = start_worker(
            url,
            tmp_path,
            sink,
            stderr=subprocess.PIPE,
            OUTBOX_POLL_SECONDS="0.1",
            **settings,
        )
        try:
            output = _Output(worker)
            assert output.wait_for("outbox pass failed"), "".join(output.lines)
            assert any("kept its claims" in line for line in output.lines)
            lock.free()
            deadline = time.monotonic() + 20
            while messages(session)[0].status != "sent":
                assert time.monotonic() < deadline, "the message waits for the lease"
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    first, again = sink.messages
    assert first["Message-ID"] == again["Message-ID"]


def test_a_worker_that_cannot_record_a_send_gives_its_claims_back(
    make_app, database_url, tmp_path, session
):
    """The database is locked while the worker records what it sent, and free
    again when it gives its claims back: another worker sends the message at
    once, without waiting for the lease (and without the clock moving)."""
    with (
        serving(_LockingSink("127.0.0.1", free_port())) as sink,
        locker(database_url) as lock,
    ):
        sink.locker = lock
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        for _ in range(2):
            make_departure(app)
        url, settings = impatient(database_url, 2)
        worker = start_worker(
            url, tmp_path, sink, "--once", stderr=subprocess.PIPE, **settings
        )
        try:
            _Output(worker).wait_for("giving back")  # its claims, if it can
            lock.free()
            assert worker.wait(timeout=30) != 0  # --once: a database error ends it
        finally:
            worker.kill()
        assert [m.status for m in messages(session)] == ["pending"] * 2
        assert deliver(app).sent == 2
    # Both were in hand (sent side by side) when the database failed: each
    # goes out again, as the same message.
    copies = Counter(m["Message-ID"] for m in sink.messages)
    assert sorted(copies.values()) == [2, 2]


class _OverlapSink(SmtpSink):
    """Takes a while over each message; notes how many it held at once."""

    holding = 0
    most_held = 0

    async def handle_DATA(self, server, session, envelope):
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        await asyncio.sleep(0.2)
        self.holding -= 1
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("senders", [1, 3])
def test_a_worker_sends_over_as_many_connections_as_it_has_senders(
    make_app, session, senders
):
    with serving(_OverlapSink("127.0.0.1", free_port())) as sink:
        app = make_app(
            MAIL_SERVER=sink.host, MAIL_PORT=sink.port, OUTBOX_SENDERS=senders
        )
        for _ in range(6):
            make_departure(app)
        assert deliver(app).sent == 6
    assert sink.most_held == senders
    assert len({m["To"] for m in sink.messages}) == 6
    assert [m.status for m in messages(session)] == ["sent"] * 6


class _SlowSink(SmtpSink):
    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.3)
        return await super().handle_DATA(server, session, envelope)


def test_a_worker_stopped_with_sigterm_finishes_what_is_in_hand_and_hands_back_the_rest(
    make_app, database_url, tmp_path, session
):
    with serving(_SlowSink("127.0.0.1", free_port())) as sink:
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port)
        for _ in range(10):
            make_departure(app)
        worker = start_worker(database_url, tmp_path, sink)
        deadline = time.monotonic() + 30
        while not any(m.status == "sent" for m in messages(session)):
            assert time.monotonic() < deadline, "the worker sent nothing"
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
        stopped_at = [m.status for m in messages(session)]
        assert 0 < stopped_at.count("sent") < 10
        # What it did not send is free at once, without waiting for a lease.
        assert deliver(app).sent == stopped_at.count("pending")
    assert len(sink.messages) == 10
    assert len({m["To"] for m in sink.messages}) == 10


def _catches_sigterm(pid: int) -> bool:
    """Return whether process ``pid`` has a handler for SIGTERM (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)[1], 16)
    return bool(caught & 1 << (signal.SIGTERM - 1))


def test_a_burst_of_sigterms_stops_a_worker(mail_app, smtp, database_url, tmp_path):
    # A second SIGTERM landing inside the first one's handler (as a shell's
    # `trap 'kill 0' TERM` sends them) used to deadlock the worker on the
    # lock inside threading.Event.set: it never exited.
    worker = start_worker(database_url, tmp_path, smtp)
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(worker.pid):  # before: SIGTERM just kills it
            assert worker.poll() is None, "the worker exited on its own"
            assert time.monotonic() < deadline, "the worker never took SIGTERM"
            time.sleep(0.05)
        with suppress(ProcessLookupError):
            for _ in range(2000):
                worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_two_workers_draining_500_messages_deliver_each_exactly_once(
    mail_app, smtp, session
):
    departure = make_departure(mail_app)  # its invitation is the first message
    with mail_app.app_context(), db.write_session() as s:
        for number in range(499):
            outbox.enqueue(
                s,
                kind="fresh_link",
                recipient=f"person{number}@example.com",
                locale=None,
                departure=departure,
                survey_url="http://survey.test/s/x",
                withdraw_url="http://survey.test/w/x",
                sender_name="Us",
            )
        s.commit()

    sent_by_worker: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        total = 0
        try:
            with mail_app.app_context():
                while (report := outbox.deliver_due(limit=10)).handled:
                    total += report.sent
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        sent_by_worker.append(total)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sum(sent_by_worker) == 500
    if session.bind.dialect.name == "postgresql":
        assert min(sent_by_worker) > 0, "both workers should have taken a share"
    recipients = [m["To"] for m in smtp.messages]
    assert len(recipients) == 500
    assert len(set(recipients)) == 500
    session.rollback()
    assert (
        session.scalar(select(func.count()).where(OutboxMessage.status == "sent"))
        == 500
    )


def test_a_worker_whose_lease_ran_out_does_not_send_what_another_took_over(
    mail_app, smtp, clock, session
):
    """Worker A claims, then stalls past its lease; B claims the same messages.

    When A wakes up it must not send them too: its claim has passed to B.
    """
    for number in range(3):
        make_departure(mail_app, external_id=f"lease_{number}")
    a_claimed, b_claimed = threading.Event(), threading.Event()
    reports: dict[str, outbox.DeliveryReport] = {}
    errors: list[BaseException] = []

    def run(name: str, claimed: threading.Event, wait_for: threading.Event) -> None:
        def pause_after_claim() -> bool:
            if not claimed.is_set():
                claimed.set()
                assert wait_for.wait(timeout=30)
            return False

        try:
            with mail_app.app_context():
                reports[name] = outbox.deliver_due(should_stop=pause_after_claim)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            claimed.set()

    a_done = threading.Event()
    worker_a = threading.Thread(target=run, args=("a", a_claimed, b_claimed))
    worker_a.start()
    assert a_claimed.wait(timeout=30)
    clock.advance(hours=2)  # A's lease has run out
    worker_b = threading.Thread(target=run, args=("b", b_claimed, a_done))
    worker_b.start()
    worker_a.join(timeout=30)  # A resumes once B holds the claims
    a_done.set()
    worker_b.join(timeout=30)

    assert errors == []
    assert (reports["a"].sent, reports["b"].sent) == (0, 3)
    assert len(smtp.messages) == 3
    assert sorted(m.status for m in messages(session)) == ["sent"] * 3


def test_the_worker_sends_only_to_a_mail_server_whose_certificate_it_trusts(
    make_app, clock, session, tmp_path, monkeypatch
):
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_tls)
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(
        sink,
        hostname=sink.host,
        port=sink.port,
        tls_context=server_tls,
        require_starttls=True,
    )
    controller.start()
    try:
        app = make_app(MAIL_SERVER=sink.host, MAIL_PORT=sink.port, MAIL_USE_TLS=True)
        make_departure(app)

        assert deliver(app).retried == 1
        [message] = messages(session)
        assert "CERTIFICATE_VERIFY_FAILED" in message.last_error
        assert sink.messages == []

        # Trusted through the standard variable, as a private CA would be.
        authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        clock.advance(hours=1)
        assert deliver(app).sent == 1
        assert len(sink.messages) == 1
    finally:
        controller.stop()


def test_the_worker_outlives_a_database_that_is_not_there_yet(make_app, smtp, tmp_path):
    """The worker starts before the database is ready, and carries on once it is."""
    url = f"sqlite:///{tmp_path / 'late.sqlite3'}"
    env = worker_env(url, tmp_path, smtp, OUTBOX_POLL_SECONDS="0.1")
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            WORKER, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True
        )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("outbox pass failed") < 3:  # no tables yet
            assert worker.poll() is None, "the worker died on a database error"
            assert time.monotonic() < deadline, "the worker made no pass"
            time.sleep(0.05)
        assert worker.poll() is None, "the worker died on a database error"
        app = make_app(DATABASE_URL=url)
        upgrade = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "survey", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upgrade.returncode == 0, upgrade.stderr[-2000:]
        make_departure(app)
        deadline = time.monotonic() + 30
        while not smtp.messages:
            assert time.monotonic() < deadline, "nothing sent once the database was up"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert worker.returncode == 0


def test_a_mail_server_that_never_answers_times_out_and_is_retried(make_app, session):
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        app = make_app(
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=silent.getsockname()[1],
            MAIL_TIMEOUT_SECONDS=1,
        )
        make_departure(app)
        started = time.monotonic()
        assert deliver(app).retried == 1
        assert time.monotonic() - started < 10
    [message] = messages(session)
    assert message.status == "pending"
    assert "timed out" in message.last_error

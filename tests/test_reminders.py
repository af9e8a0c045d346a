"""Reminders: the question again, once, to contacts who have not answered."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from survey import cli, db, outbox
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from tests.factories import (
    csrf_token,
    login,
    make_departure,
    make_user,
    set_brand,
    submit,
    survey_path,
    withdraw_path,
)


def reminders(session) -> list[OutboxMessage]:
    session.rollback()
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "reminder")
            .order_by(OutboxMessage.id)
        )
    )


def queue(app: Flask) -> int:
    with app.app_context():
        return cli.queue_reminders()


def send_all(app: Flask) -> outbox.DeliveryReport:
    with app.app_context():
        return outbox.deliver_due(limit=1000)


def test_one_reminder_goes_out_three_days_after_the_invitation(
    mail_app, smtp, clock, session, client
):
    set_brand(mail_app, company_name="Northwind")
    departure = make_departure(mail_app, company="Acme")
    assert queue(mail_app) == 0  # the invitation has not gone out yet
    assert send_all(mail_app).sent == 1
    clock.advance(days=2, hours=23, minutes=59)
    assert queue(mail_app) == 0
    clock.advance(minutes=1)
    result = mail_app.test_cli_runner().invoke(args=["reminders", "send"])
    assert result.exit_code == 0, result.output
    assert "1 reminder(s) queued" in result.output
    assert send_all(mail_app).sent == 1
    reminder = smtp.messages[-1]
    # Who asks, never the customer's own company.
    assert reminder["Subject"] == "Still one question from Northwind before you go"
    [text] = [p for p in reminder.walk() if p.get_content_type() == "text/plain"]
    body = text.get_payload(decode=True).decode()
    assert "What is the main reason you are leaving?" in body
    assert body.count("?reason=") == 10  # each reason a link, as in the invitation
    assert reminder["List-Unsubscribe"]
    clock.advance(days=30)
    assert queue(mail_app) == 0  # one by default, ever
    assert len(reminders(session)) == 1
    # The queue's timeline shows it.
    assert mail_app.test_cli_runner().invoke(args=["review", "sync"]).exit_code == 0
    make_user(mail_app, "admin", email="admin@example.com")
    login(client, "admin@example.com")
    page = client.get(f"/review/{departure.public_id}").get_data(as_text=True)
    assert "Reminder sent" in page


def test_the_mail_worker_queues_and_sends_a_due_reminder(
    mail_app, smtp, clock, session
):
    """``outbox send`` itself queues the reminders due: production needs no
    other scheduled job."""
    set_brand(mail_app, company_name="Northwind")
    departure = make_departure(mail_app)
    runner = mail_app.test_cli_runner()

    def worker_pass() -> None:
        result = runner.invoke(args=["outbox", "send", "--once"])
        assert result.exit_code == 0, result.output

    worker_pass()
    [invitation] = smtp.messages
    assert invitation["X-Envelope-To"] == departure.contact_email
    clock.advance(days=2, hours=23)
    worker_pass()
    assert reminders(session) == []  # not due yet
    clock.advance(hours=1)
    worker_pass()
    [reminder] = reminders(session)
    assert (reminder.departure_id, reminder.status) == (departure.id, outbox.SENT)
    assert [m["Subject"] for m in smtp.messages[1:]] == [
        "Still one question from Northwind before you go"
    ]
    assert smtp.messages[1]["X-Envelope-To"] == departure.contact_email


def test_two_reminders_when_asked_each_after_the_one_before(
    make_app, smtp, clock, session
):
    app = make_app(
        MAIL_SERVER=smtp.host, MAIL_PORT=smtp.port, REMINDERS=2, REMINDER_AFTER_DAYS=2
    )
    make_departure(app)
    send_all(app)
    clock.advance(days=2)
    assert queue(app) == 1
    send_all(app)
    clock.advance(days=1)
    assert queue(app) == 0
    clock.advance(days=1)
    assert queue(app) == 1
    clock.advance(days=10)
    assert queue(app) == 0
    assert len(reminders(session)) == 2


def test_no_reminders_when_set_to_none(make_app, clock, session):
    app = make_app(REMINDERS=0)
    make_departure(app)
    send_all(app)
    clock.advance(days=5)
    assert queue(app) == 0
    assert reminders(session) == []


def _answer(app, client, departure, session):
    response = submit(client, survey_path(app, departure), {"reason": "switched"})
    assert response.status_code == 303


def _withdraw(app, client, departure, session):
    path = withdraw_path(app, departure)
    page = client.get(path).get_data(as_text=True)
    assert client.post(path, data={"csrf_token": csrf_token(page)}).status_code == 200


def _erase(app, client, departure, session):
    result = app.test_cli_runner().invoke(
        args=["contacts", "erase", departure.contact_email]
    )
    assert result.exit_code == 0, result.output


def _reactivate(app, client, departure, session):
    session.execute(
        update(Departure)
        .where(Departure.id == departure.id)
        .values(reactivated_at=datetime.now(UTC))
    )
    session.commit()


def _let_the_link_expire(app, client, departure, session, clock):
    clock.advance(days=app.config["LINK_MAX_AGE_DAYS"])


@pytest.mark.parametrize(
    "stop", [_answer, _withdraw, _erase, _reactivate, _let_the_link_expire]
)
def test_no_reminder_after(stop: Callable[..., None], app, client, clock, session):
    departure = make_departure(app)
    other = make_departure(app)  # unaffected: still reminded
    send_all(app)
    clock.advance(days=1)
    if stop is _let_the_link_expire:
        stop(app, client, departure, session, clock)
        # Re-invite the other so that its link is fresh: only one link expired.
        with app.app_context(), db.write_session() as s:
            s.execute(
                update(Departure)
                .where(Departure.id == other.id)
                .values(invited_at=clock(), invitation_sent_at=clock())
            )
            s.commit()
        clock.advance(days=3)
    else:
        stop(app, client, departure, session)
        clock.advance(days=3)
    assert queue(app) == 1
    assert [m.departure_id for m in reminders(session)] == [other.id]


def _withdraw_through_another_departure(app, client, departure, session):
    _withdraw(
        app, client, make_departure(app, contact_email=departure.contact_email), session
    )


@pytest.mark.parametrize(
    "stop", [_answer, _withdraw, _withdraw_through_another_departure]
)
def test_a_reminder_queued_before_is_not_sent_after(
    stop: Callable[..., None], app, client, clock, session
):
    """The stop comes while the reminder waits its turn (an SMTP outage)."""
    departure = make_departure(app)
    other = make_departure(app)  # unaffected: still reminded
    send_all(app)
    clock.advance(days=3)
    assert queue(app) == 2
    stop(app, client, departure, session)
    send_all(app)
    statuses = {m.departure_id: m.status for m in reminders(session)}
    assert statuses == {departure.id: outbox.CANCELLED, other.id: outbox.SENT}


def test_a_reminder_being_sent_as_the_answer_comes_is_left_to_go(
    app, client, clock, session
):
    """Its worker marks it as the send ends: never cancelled yet delivered."""
    departure = make_departure(app)
    send_all(app)
    clock.advance(days=3)
    assert queue(app) == 1
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.kind == "reminder")
        .values(locked_until=clock() + timedelta(seconds=30), claimed_by="elsewhere")
    )
    session.commit()
    _answer(app, client, departure, session)
    [reminder] = reminders(session)
    assert (reminder.status, reminder.last_error) == (outbox.PENDING, None)


def test_a_withdrawal_through_another_departure_of_the_person_stops_them(
    app, client, clock, session
):
    first = make_departure(app, contact_email="same@example.com")
    second = make_departure(app, contact_email="same@example.com")
    send_all(app)
    _withdraw(app, client, first, session)
    clock.advance(days=4)
    assert queue(app) == 0
    assert second.id  # both departures of the person are left alone


def test_two_workers_at_once_queue_one_reminder_each(make_app, clock, session):
    app = make_app()
    departures = [make_departure(app) for _ in range(30)]
    send_all(app)
    clock.advance(days=3)
    workers = [make_app() for _ in range(4)]
    barrier = threading.Barrier(len(workers))
    counts: list[int] = []
    errors: list[BaseException] = []

    def work(worker: Flask) -> None:
        try:
            barrier.wait()
            counts.append(queue(worker))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(counts) == len(departures)
    sent = [message.departure_id for message in reminders(session)]
    assert sorted(sent) == sorted(d.id for d in departures)
    counted = session.scalars(select(Departure.reminders_sent)).all()
    assert counted == [1] * len(departures)

"""The weekly digest: what it says, who gets it, when, and only once a week.

The week reported is Monday 2026-03-16 to Sunday 03-22; the digest is due
from Monday 03-23, 08:00 (UTC by default). Worked out by hand:

====  ===========  ========  =======  =============  ===================
      cancelled    currency  MRR      answer         postmortem
====  ===========  ========  =======  =============  ===================
a     03-16 00:00  USD       100.00   too_expensive
b     03-18        USD        50.00   too_expensive
c     03-20        EUR        40.00   switched
d     03-22 23:59  JPY       1000     (none)
e     03-10        USD        10.00   too_expensive  (before the week)
f-h   03-02/05/08  USD        10.00   (none)         in review, poor_fit
x     03-15 23:59  USD       999.00   (none)         (the week before)
y     03-23 00:00  USD       999.00   (none)         (this week)
====  ===========  ========  =======  =============  ===================

Last week: 4 departures, $150.00, €40.00 and ¥1,000 lost. Recurring at the
week's end (30 days from 02-21): too_expensive 3 (a, b, e), none in the 90
days before: flagged, and new (a week earlier only e). poor_fit 3 (f-h) was
flagged a week earlier too: not new. f's postmortem has an open action item
for product due 03-20 (overdue on 03-23), one for sales due 03-30, and one
for support done.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from survey import db, outbox
from survey.answers.service import record_reason
from survey.cli import send_digest_if_due
from survey.config import ConfigError
from survey.insights import digest
from survey.insights.digest import DigestWeek
from survey.insights.service import Recurring, Scope, TeamActions
from survey.outbox import OutboxMessage
from survey.review.models import ActionItem
from survey.staff.access import INSIGHTS, roles_with
from survey.staff.models import StaffUser
from tests.factories import login, make_departure, make_user, submit
from tests.insights_data import at, postmortem
from tests.test_outbox import html_part, text_part

WEEK = Scope(date(2026, 3, 16), date(2026, 3, 22))
MONDAY = datetime(2026, 3, 23, 9, tzinfo=UTC)


def _week(app) -> None:
    def departure(when, currency="USD", mrr=1_000):
        return make_departure(app, cancelled_at=when, currency=currency, mrr_cents=mrr)

    answered = {
        "too_expensive": [
            departure(at(3, 16, 0), mrr=10_000),
            departure(at(3, 18), mrr=5_000),
            departure(at(3, 10)),
        ],
        "switched": [departure(at(3, 20), "EUR", 4_000)],
    }
    departure(datetime(2026, 3, 22, 23, 59, tzinfo=UTC), "JPY", 1_000)
    departure(datetime(2026, 3, 15, 23, 59, tzinfo=UTC), mrr=99_900)
    departure(at(3, 23, 0), mrr=99_900)
    reviewed = [departure(at(3, day)) for day in (2, 5, 8)]
    actions = [
        ActionItem(text="Fix the export", team="product", due_date=date(2026, 3, 20)),
        ActionItem(text="Call them", team="sales", due_date=date(2026, 3, 30)),
        ActionItem(
            text="Done",
            team="support",
            due_date=date(2026, 3, 1),
            done=True,
            done_at=at(3, 3),
        ),
    ]
    with app.app_context(), db.write_session() as session:
        for reason, departures in answered.items():
            for one in departures:
                record_reason(session.connection(), one.public_id, reason, None)
        for index, one in enumerate(reviewed):
            postmortem(
                session,
                session.merge(one),
                "in_review",
                "poor_fit",
                done=False,
                actions=actions if index == 0 else (),
            )
        session.commit()


def _readers(app) -> list[str]:
    """Staff of every kind; the two who should get the digest, by address."""
    wanted = [
        make_user(app, "csm", email="csm@staff.example", weekly_digest=True),
        make_user(app, "admin", email="admin@staff.example", weekly_digest=True),
    ]
    make_user(app, "csm")  # did not ask
    make_user(app, "marketing", weekly_digest=True)  # may not see insights
    make_user(app, "csm", weekly_digest=True, active=False)
    return sorted(user.email for user in wanted)


def _digest_rows(app):
    with app.app_context(), db.new_session() as session:
        weeks = session.scalars(select(DigestWeek)).all()
        messages = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "digest")
        ).all()
        return weeks, messages


def test_the_digest_says_last_week_s_numbers_money_per_currency(mail_app, clock, smtp):
    _week(mail_app)
    readers = _readers(mail_app)
    clock.current = MONDAY
    with mail_app.app_context():
        assert send_digest_if_due("worker a") == 2
        assert outbox.deliver_due().sent == 2
    assert sorted(m["X-Envelope-To"] for m in smtp.messages) == readers
    mail = smtp.messages[0]
    assert mail["Subject"] == (
        "Exit Survey, week of 2026-03-16: 4 departures, 1 new recurring"
    )
    text = text_part(mail).replace("\r\n", "\n")
    assert "Last week, 2026-03-16 to 2026-03-22:" in text
    assert "Departures: 4\n" in text
    # Each currency its own line; no amount that adds two of them.
    amounts = re.findall(r"Lost MRR \((\w+)\): (\S+)", text)
    assert amounts == [("EUR", "€40.00"), ("JPY", "¥1,000"), ("USD", "$150.00")]
    assert re.findall(r"[$€¥][\d,.]+", text) == ["€40.00", "¥1,000", "$150.00"]
    assert "- It costs more than it is worth to us: 2\n" in text
    assert "- We found a better alternative: 1\n" in text
    assert "- No answer: 1\n" in text
    assert (
        "New recurring:\n- It costs more than it is worth to us (stated reason):"
        " 3 in the last 30 days, against 0.0 per 30 days before\n" in text
    )
    assert "Customer should not have been sold to" not in text  # flagged before
    assert "Overdue action items:\n- Product: 1 overdue of 1 open\n" in text
    assert "Sales" not in text  # open, not overdue
    assert "http://survey.test/insights?from=2026-03-16&to=2026-03-22" in text
    html = html_part(mail)
    assert "€40.00" in html and "$150.00" in html and "¥1,000" in html
    weeks, _messages = _digest_rows(mail_app)
    assert [(w.week_start, w.recipients, w.sent_by) for w in weeks] == [
        (WEEK.start, 2, "worker a")
    ]


def test_the_worker_queues_the_week_s_digest_on_monday_and_sends_it(
    mail_app, clock, smtp
):
    """``flask --app survey outbox send --once``: the mail worker's pass."""
    _week(mail_app)
    readers = _readers(mail_app)
    clock.current = MONDAY
    worker = mail_app.test_cli_runner()
    first = worker.invoke(args=["outbox", "send", "--once"])
    assert first.exit_code == 0, first.output
    weeks, messages = _digest_rows(mail_app)
    assert [(w.week_start, w.recipients) for w in weeks] == [(WEEK.start, 2)]
    assert weeks[0].sent_by.startswith("worker ")
    assert sorted(m.recipient for m in messages) == readers
    assert {m.status for m in messages} == {"sent"}  # in the same pass
    subject = "Exit Survey, week of 2026-03-16: 4 departures, 1 new recurring"
    digests = [m for m in smtp.messages if m["Subject"] == subject]
    assert sorted(m["X-Envelope-To"] for m in digests) == readers
    # The worker's next pass that day (or another worker's) queues no more.
    clock.advance(hours=1)
    again = worker.invoke(args=["outbox", "send", "--once"])
    assert again.exit_code == 0, again.output
    weeks, messages = _digest_rows(mail_app)
    assert (len(weeks), len(messages)) == (1, 2)


def test_what_the_digest_gathers(app):
    _week(app)
    with app.app_context(), db.new_session() as session:
        gathered = digest.build(session, WEEK, today=MONDAY.date())
    assert gathered.departed == 4
    assert gathered.lost_mrr_cents == {"EUR": 4_000, "JPY": 1_000, "USD": 15_000}
    assert gathered.top_reasons[0] == ("too_expensive", 2)
    assert set(gathered.top_reasons[1:]) == {(None, 1), ("switched", 1)}
    assert gathered.new_flags == [Recurring("reason", "too_expensive", 3, 0.0)]
    assert gathered.overdue == [TeamActions("product", 1, 1)]


def test_staff_who_did_not_ask_get_nothing(app, clock):
    _week(app)
    make_user(app, "csm")
    make_user(app, "marketing", weekly_digest=True)
    clock.current = MONDAY
    with app.app_context():
        assert send_digest_if_due("worker a") == 0
    weeks, messages = _digest_rows(app)
    assert messages == []
    assert [(w.week_start, w.recipients) for w in weeks] == [(WEEK.start, 0)]


LAST = WEEK.start
BEFORE = WEEK.start - timedelta(days=7)


@pytest.mark.parametrize(
    ("now", "timezone", "week"),
    [
        # Sunday: the week before's is still due, if no worker sent it.
        (datetime(2026, 3, 22, 23, 59, tzinfo=UTC), "UTC", BEFORE),
        (datetime(2026, 3, 23, 7, 59, tzinfo=UTC), "UTC", None),  # too early
        (datetime(2026, 3, 23, 8, 0, tzinfo=UTC), "UTC", LAST),
        (datetime(2026, 3, 23, 23, 59, tzinfo=UTC), "UTC", LAST),
        # Not sent on Monday (no worker ran): late rather than never.
        (datetime(2026, 3, 24, 8, 0, tzinfo=UTC), "UTC", LAST),  # Tuesday
        (datetime(2026, 3, 29, 23, 59, tzinfo=UTC), "UTC", LAST),  # Sunday
        # New York is 4 hours behind in March: 08:00 there is 12:00 UTC.
        (datetime(2026, 3, 23, 11, 59, tzinfo=UTC), "America/New_York", None),
        (datetime(2026, 3, 23, 12, 0, tzinfo=UTC), "America/New_York", LAST),
        # Monday 00:30 in Auckland (UTC+13) is still Sunday in UTC.
        (datetime(2026, 3, 22, 19, 0, tzinfo=UTC), "Pacific/Auckland", LAST),
    ],
)
def test_the_digest_is_due_from_monday_morning_local_time(
    make_app, clock, now, timezone, week
):
    app = make_app(DIGEST_TIMEZONE=timezone)
    make_user(app, "csm", weekly_digest=True)
    clock.current = now
    with app.app_context():
        assert send_digest_if_due("worker a") == (None if week is None else 1)
    weeks, messages = _digest_rows(app)
    assert len(messages) == (0 if week is None else 1)
    assert [w.week_start for w in weeks] == ([] if week is None else [week])


def test_a_week_s_digest_is_queued_once_by_a_worker_running_all_day(app, clock):
    make_user(app, "csm", weekly_digest=True)
    clock.current = MONDAY
    with app.app_context():
        assert send_digest_if_due("worker a") == 1
        clock.advance(minutes=5)
        assert send_digest_if_due("worker a") is None
        assert send_digest_if_due("worker b") is None
        clock.advance(days=7)  # the next Monday: the next week's
        assert send_digest_if_due("worker b") == 1
    weeks, messages = _digest_rows(app)
    assert [w.week_start for w in weeks] == [WEEK.start, date(2026, 3, 23)]
    assert len(messages) == 2


def test_two_workers_at_once_queue_a_week_s_digest_once(make_app, clock):
    """Both past the first look (it is skipped here): the week's key decides."""
    apps = [make_app(), make_app()]
    readers = [make_user(apps[0], "csm", weekly_digest=True) for _ in range(3)]
    clock.current = MONDAY
    barrier = threading.Barrier(2)
    results: dict[str, int | None] = {}

    def worker(app, name: str) -> None:
        barrier.wait(timeout=10)
        with app.app_context(), db.write_session() as session:
            results[name] = digest.send(
                session, WEEK, roles=roles_with(INSIGHTS), now=MONDAY, sent_by=name
            )

    threads = [
        threading.Thread(target=worker, args=(app, f"worker {n}"))
        for n, app in enumerate(apps)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results.values(), key=str) == [3, None]
    weeks, messages = _digest_rows(apps[0])
    assert len(weeks) == 1
    assert sorted(m.recipient for m in messages) == sorted(u.email for u in readers)


def test_the_command_prints_a_dry_run_then_sends_once(app, clock, runner):
    _week(app)
    _readers(app)
    clock.current = datetime(2026, 3, 25, 15, tzinfo=UTC)  # by hand, a Wednesday
    dry = runner.invoke(args=["digest", "send", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "To: admin@staff.example, csm@staff.example\n" in dry.output
    assert "Departures: 4\n" in dry.output
    assert "Lost MRR (USD): $150.00" in dry.output
    assert _digest_rows(app) == ([], [])  # nothing queued
    sent = runner.invoke(args=["digest", "send"])
    assert sent.exit_code == 0, sent.output
    assert "Digest for the week of 2026-03-16 queued for 2 staff." in sent.output
    again = runner.invoke(args=["digest", "send"])
    assert again.exit_code == 1
    assert "The digest for the week of 2026-03-16 was queued already." in again.output
    weeks, messages = _digest_rows(app)
    assert [(w.week_start, w.sent_by) for w in weeks] == [(WEEK.start, "command")]
    assert len(messages) == 2
    # The worker, that Monday evening... it is Wednesday: not due, and done.
    with app.app_context():
        assert send_digest_if_due("worker a") is None


def _wants_digest(app, email: str) -> bool:
    with app.app_context(), db.new_session() as session:
        return session.scalars(
            select(StaffUser.weekly_digest).where(StaffUser.email == email)
        ).one()


def test_staff_ask_for_the_digest_on_their_account_page_and_stop_it(app):
    user = make_user(app, "csm")
    browser = app.test_client()
    assert login(browser, user.email).status_code == 302
    page = browser.get("/account").get_data(as_text=True)
    assert 'action="/account/digest"' in page
    assert 'id="weekly_digest" name="weekly_digest" value="y">' in page  # unchecked
    answer = submit(browser, "/account", {"weekly_digest": "y"}, "/account/digest")
    assert answer.status_code == 302
    assert _wants_digest(app, user.email)
    page = browser.get("/account").get_data(as_text=True)
    assert 'name="weekly_digest" value="y" checked>' in page
    assert "You will get the weekly digest on Monday mornings." in page
    assert submit(browser, "/account", {}, "/account/digest").status_code == 302
    assert not _wants_digest(app, user.email)


def test_the_digest_form_wants_its_csrf_token_and_the_insights_permission(app):
    csm = make_user(app, "csm")
    browser = app.test_client()
    assert login(browser, csm.email).status_code == 302
    forged = browser.post("/account/digest", data={"weekly_digest": "y"})
    assert forged.status_code == 400
    assert not _wants_digest(app, csm.email)
    marketing = make_user(app, "marketing")
    browser = app.test_client()
    assert login(browser, marketing.email).status_code == 302
    assert "weekly_digest" not in browser.get("/account").get_data(as_text=True)
    refused = submit(browser, "/account", {"weekly_digest": "y"}, "/account/digest")
    assert refused.status_code == 403
    assert not _wants_digest(app, marketing.email)
    stranger = submit(
        app.test_client(), "/login", {"weekly_digest": "y"}, "/account/digest"
    )
    assert stranger.status_code == 302
    assert "/login" in stranger.headers["Location"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DIGEST_HOUR", "24", "SURVEY_DIGEST_HOUR must be a whole number from 0 to 23"),
        ("DIGEST_HOUR", "true", "SURVEY_DIGEST_HOUR must be"),
        ("DIGEST_TIMEZONE", "Mars/Olympus", "SURVEY_DIGEST_TIMEZONE must be"),
        ("DIGEST_TIMEZONE", "../../etc/passwd", "SURVEY_DIGEST_TIMEZONE must be"),
    ],
)
def test_a_bad_digest_schedule_is_refused_clearly(
    make_app, monkeypatch, name, value, message
):
    monkeypatch.setenv(f"SURVEY_{name}", value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_app()

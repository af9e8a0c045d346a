"""Writes about one person, sent at once to a served app: an erasure and the
answers racing it, and consent changes racing each other.

Real concurrent HTTP requests (threads released by a barrier) against the app
served with threads, as gunicorn's gthread workers serve it; several rounds
each. PostgreSQL is where these races were seen: every write there runs at
READ COMMITTED, in parallel.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from sqlalchemy import delete, select

from survey.branding.models import Brand
from survey.consent import ConsentEvent
from survey.departures.models import Departure
from survey.review.models import Postmortem
from survey.staff.models import StaffUser
from survey.wording.models import SurveyVersion
from tests.factories import (
    PASSWORD,
    auth,
    everything_as_text,
    hidden_fields,
    make_consenting,
    make_departure,
    make_token,
    make_user,
    survey_path,
    withdraw_path,
)

ROUNDS = 4


@pytest.fixture
def served(app: Flask, served_by) -> tuple[str, int]:
    """The test's ``app``, served."""
    return served_by(app)


def call(
    address: tuple[str, int],
    method: str,
    path: str,
    form: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Make one HTTP request (redirects not followed); return status and body.

    A browser's ``headers`` take the session cookie the answer sets.
    """
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        body = urlencode(form, doseq=True) if form is not None else None
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=sent)
        answer = connection.getresponse()
        if (
            headers is not None
            and "Cookie" in headers
            and answer.getheader("Set-Cookie")
        ):
            headers["Cookie"] = answer.getheader("Set-Cookie", "").split(";")[0]
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def signed_in(address: tuple[str, int], email: str) -> dict[str, str]:
    """Sign in through the login page; return the headers of that browser."""
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        connection.request("GET", "/login")
        page = connection.getresponse()
        cookie = page.getheader("Set-Cookie", "").split(";")[0]
        fields = hidden_fields(page.read().decode())
        body = urlencode({**fields, "email": email, "password": PASSWORD})
        connection.request(
            "POST",
            "/login",
            body=body,
            headers={
                "Cookie": cookie,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 302, "sign-in failed"
        return {"Cookie": answer.getheader("Set-Cookie", "").split(";")[0]}
    finally:
        connection.close()


def at_once(requests: list[Callable[[], tuple[int, str]]]) -> list[int]:
    """Run the requests on threads released together; return their statuses."""
    barrier = threading.Barrier(len(requests))
    statuses: list[int] = [0] * len(requests)

    def run(index: int) -> None:
        barrier.wait()
        statuses[index] = requests[index]()[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return statuses


def form_of(address: tuple[str, int], path: str) -> dict[str, str]:
    """Open a page as a browser would; return its hidden fields."""
    status, page = call(address, "GET", path)
    assert status == 200, path
    fields = hidden_fields(page)
    assert fields["csrf_token"]
    return fields


def answered(
    app: Flask, address: tuple[str, int], **fields: Any
) -> tuple[Departure, str, dict[str, str]]:
    """Record a departure whose customer answered page 1 (through the page);
    return it, its survey path and page 1's form."""
    departure = make_departure(app, **fields)
    page1 = survey_path(app, departure)
    first = form_of(address, page1)
    assert call(address, "POST", page1, {**first, "reason": "switched"})[0] == 303
    return departure, page1, first


def events(session, departure: Departure) -> list[ConsentEvent]:
    session.rollback()  # a fresh snapshot
    return list(
        session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.departure_id == departure.id)
            .order_by(ConsentEvent.id)
        )
    )


def test_answers_racing_an_erasure_do_not_survive_it(app, served, session):
    """Every other round the first answer itself races the erasure; in the
    others, page 1 changed and page 2 (with a consent grant) race it."""
    eraser = auth(make_token(app, "contacts:erase"))
    for round_ in range(ROUNDS):
        email = f"racer{round_}@example.com"
        name = f"Ada Racer{round_}"
        words = f"{name} wrote this in round {round_}"
        erase = f"/api/v1/contacts/{quote(email)}"
        if round_ % 2:
            departure, page1, first = answered(
                app, served, contact_email=email, contact_name=name
            )
            second = form_of(served, page1 + "/more")
            details = {**second, "details": words, "winback_consent": "y"}
            writes = [partial(call, served, "POST", page1 + "/more", details)] * 15
        else:  # not answered yet
            departure = make_departure(app, contact_email=email, contact_name=name)
            page1 = survey_path(app, departure)
            first, writes = form_of(served, page1), []
        answer = {**first, "reason": "other", "reason_other": words}
        writes += [partial(call, served, "POST", page1, answer)] * 15
        statuses = at_once(
            [*writes, partial(call, served, "DELETE", erase, None, eraser)]
        )
        assert statuses[-1] == 200, "the erasure"
        assert set(statuses[:-1]) <= {303, 410}, statuses
        session.rollback()
        erased = session.get(Departure, departure.id, populate_existing=True)
        assert erased.erased_at is not None
        # Nothing of theirs anywhere: answers, consent wording, queue, emails.
        everything = everything_as_text(session)
        for personal in (email, name.lower(), words.lower()):
            assert personal not in everything, f"round {round_}: {personal}"
        # Nothing can be written about them any more, and a second erasure
        # finds nothing left.
        assert call(served, "GET", page1)[0] == 410
        again = call(served, "DELETE", erase, None, eraser)
        assert again == (200, '{"erased_departures":0}\n')


def test_simultaneous_withdrawals_record_one_event(app, served, session):
    staff = signed_in(served, make_user(app, "csm").email)
    for _round in range(ROUNDS):
        departure, page1, _first = answered(app, served)
        page2 = page1 + "/more"
        granted = call(
            served, "POST", page2, {**form_of(served, page2), "winback_consent": "y"}
        )
        assert granted[0] == 303
        assert [e.action for e in events(session, departure)] == ["granted"]
        withdraw = withdraw_path(app, departure)
        confirm = form_of(served, withdraw)
        one_click = {"List-Unsubscribe": "One-Click"}
        # And a CSM recording the customer's written request, at the same time.
        item = f"/review/{departure.public_id}"
        status, html = call(served, "GET", item, headers=staff)
        assert status == 200
        request = {**hidden_fields(html), "note": "Asked by email today"}
        statuses = at_once(
            [
                *[partial(call, served, "POST", withdraw, one_click)] * 40,
                *[partial(call, served, "POST", withdraw, confirm)] * 20,
                *[partial(call, served, "POST", f"{item}/consent", request, staff)]
                * 10,
            ]
        )
        assert statuses == [200] * 60 + [302] * 10
        assert [e.action for e in events(session, departure)] == [
            "granted",
            "withdrawn",
        ]


def test_racing_grants_and_withdrawals_never_repeat_an_event(app, served, session):
    for _round in range(ROUNDS):
        departure, page1, _first = answered(app, served)
        page2 = page1 + "/more"
        grant = {**form_of(served, page2), "winback_consent": "y"}
        assert grant["consent_shown"] == ""  # the page showed no consent
        withdraw = withdraw_path(app, departure)
        one_click = {"List-Unsubscribe": "One-Click"}
        statuses = at_once(
            [
                *[partial(call, served, "POST", page2, grant)] * 20,
                *[partial(call, served, "POST", withdraw, one_click)] * 20,
            ]
        )
        assert set(statuses) <= {200, 303}, statuses
        actions = [e.action for e in events(session, departure)]
        assert actions, "nothing was recorded"
        repeats = [a for a, b in itertools.pairwise(actions) if a == b]
        assert repeats == [], actions


def test_one_person_saying_yes_and_no_through_two_departures_at_once(
    app, served, session
):
    from survey import db
    from survey.consent import rebuild_winback_list

    eraser = auth(make_token(app, "contacts:erase"))
    for round_ in range(ROUNDS):
        email = f"both{round_}@x.example"
        sides = []
        for side in ("a", "b"):
            departure, page1, _first = answered(
                app, served, contact_email=email, external_id=f"{side}-{round_}"
            )
            page2 = page1 + "/more"
            grant = {**form_of(served, page2), "winback_consent": "y"}
            assert call(served, "POST", page2, grant)[0] == 303
            # The box unticked on a page that showed it ticked: a withdrawal
            # from a request that locked its departure first.
            untick = form_of(served, page2)
            assert untick["consent_shown"] == "y"
            withdraw = withdraw_path(app, departure)
            sides.append((departure, page2, grant, untick, withdraw))
        one_click = {"List-Unsubscribe": "One-Click"}
        # Every other round, their erasure too.
        erasing = round_ % 2 == 1
        erasure = partial(
            call, served, "DELETE", f"/api/v1/contacts/{quote(email)}", None, eraser
        )
        statuses = at_once(
            [
                request
                for _departure, page2, grant, untick, withdraw in sides
                for request in (
                    *[partial(call, served, "POST", page2, grant)] * 6,
                    *[partial(call, served, "POST", page2, untick)] * 6,
                    *[partial(call, served, "POST", withdraw, one_click)] * 6,
                )
            ]
            + ([erasure] if erasing else [])
        )
        # No deadlock (a 503 asking to retry): the person's departures are
        # locked in one order by every write. A request the erasure went
        # first answers 410.
        assert set(statuses) <= {200, 303, 410}, statuses
        assert (410 in statuses) <= erasing
        if erasing:
            assert statuses[-1] == 200
        session.rollback()
        if erasing:
            for departure, *_ in sides:
                erased = session.get(Departure, departure.id, populate_existing=True)
                assert erased.erased_at is not None
                assert (erased.winback_grant_id, erased.withdraw_token) == (None, None)
        for departure, *_ in sides:
            latest = events(session, departure)[-1]
            listed = latest.action == "granted" and not erasing
            grant_id = session.scalar(
                select(Departure.winback_grant_id).where(Departure.id == departure.id)
            )
            assert grant_id == (latest.id if listed else None)
        kept = dict(
            session.execute(select(Departure.id, Departure.winback_grant_id)).all()
        )
        with app.app_context(), db.write_session() as writer:
            rebuild_winback_list(writer)
            rebuilt = dict(
                writer.execute(select(Departure.id, Departure.winback_grant_id)).all()
            )
            writer.rollback()
        assert rebuilt == kept


def test_two_admins_demoting_each_other_at_once_leave_one(app, served, session):
    for round_ in range(ROUNDS):
        session.rollback()
        for user in session.scalars(select(StaffUser)):
            user.role = "csm"  # the admins of earlier rounds step aside
        session.commit()
        admins = [make_user(app, "admin") for _ in range(2)]
        browsers = [signed_in(served, admin.email) for admin in admins]
        forms = []
        for browser in browsers:
            status, page = call(served, "GET", "/admin/users", headers=browser)
            assert status == 200
            forms.append(hidden_fields(page))
        action = "deactivate" if round_ % 2 else "role"
        requests = [
            partial(
                call,
                served,
                "POST",
                f"/admin/users/{other.id}",
                {**form, "action": action, "role": "csm"},
                browser,
            )
            for browser, form, other in zip(
                browsers, forms, reversed(admins), strict=True
            )
        ]
        # 403: the other was quicker, and this one is no admin any more.
        assert set(at_once(requests)) <= {302, 403}
        session.rollback()
        left = session.scalars(
            select(StaffUser).where(StaffUser.role == "admin", StaffUser.active)
        ).all()
        assert len(left) == 1, f"round {round_}: {action}"


def forms_on(
    address: tuple[str, int], browsers: list[dict[str, str]], path: str
) -> list[dict[str, str]]:
    """Open ``path`` in each browser; return each page's hidden fields."""
    forms = []
    for browser in browsers:
        status, page = call(address, "GET", path, headers=browser)
        assert status == 200, path
        forms.append(hidden_fields(page))
    return forms


def test_admins_saving_the_survey_at_once_make_one_version(app, served, session):
    """Each admin changed the version they opened; one change is saved, the
    others are told someone saved meanwhile, none is silently lost."""
    browsers = [signed_in(served, make_user(app, "admin").email) for _ in range(4)]
    for round_ in range(ROUNDS):
        forms = forms_on(served, browsers, "/admin/survey/wording/en")
        requests = [
            partial(
                call,
                served,
                "POST",
                "/admin/survey/wording/en",
                {**form, "text_0": f"Round {round_}, admin {number}?"},
                browser,
            )
            for number, (browser, form) in enumerate(zip(browsers, forms, strict=True))
        ]
        assert set(at_once(requests)) == {303}
        session.rollback()
        saved = session.scalars(select(SurveyVersion).order_by(SurveyVersion.id)).all()
        assert len(saved) == round_ + 1, f"round {round_}"
        assert saved[-1].based_on == (saved[-2].id if round_ else 0)
        assert (
            saved[-1]
            .definition["texts"]["en"]["question"]
            .startswith(f"Round {round_}, admin ")
        )


def test_admins_saving_the_brand_at_once_leave_one_whole_brand(app, served, session):
    browsers = [signed_in(served, make_user(app, "admin").email) for _ in range(4)]
    for round_ in range(ROUNDS):
        session.rollback()
        session.execute(delete(Brand))  # the row made again by the first save
        session.commit()
        forms = forms_on(served, browsers, "/admin/survey")
        requests = [
            partial(
                call,
                served,
                "POST",
                "/admin/survey",
                {**form, "company_name": f"Co {number}", "sender_name": f"Co {number}"},
                browser,
            )
            for number, (browser, form) in enumerate(zip(browsers, forms, strict=True))
        ]
        assert set(at_once(requests)) == {303}, f"round {round_}"
        session.rollback()
        [brand] = session.scalars(select(Brand)).all()
        assert brand.company_name == brand.sender_name  # one admin's, whole


def purge_now(app: Flask, purged: list[int]) -> tuple[int, str]:
    """Run the retention purge as the mail worker does; note how many it erased."""
    from survey import contacts, db

    with app.app_context(), db.write_session() as writing:
        count, erasure = contacts.purge_expired(writing)
        writing.commit()
    erasure.remove_files()
    purged.append(count)
    return 200, ""


def test_the_retention_purge_and_an_erasure_of_one_person_both_finish(
    make_app, served_by, clock, session
):
    """The purge carries a withdrawal over to the person's newer departure, which
    has the lower id here (imported late): it must lock in the erasure's order."""
    from survey import db
    from survey.consent import record_consent, withdrawal_wording

    app = make_app(RETENTION_DAYS=30)
    address = served_by(app)
    eraser = auth(make_token(app, "contacts:erase"))
    for round_ in range(ROUNDS * 4):  # a narrow window: more rounds
        email = f"kept{round_}@example.com"
        newer = make_consenting(app, contact_email=email, cancelled_at=clock())
        older = make_departure(
            app, contact_email=email, cancelled_at=clock() - timedelta(days=90)
        )
        with app.app_context(), db.write_session() as writing:
            record_consent(
                writing,
                writing.merge(older),
                granted=False,
                channel="withdrawal_link",
                wording=withdrawal_wording(),
            )
            writing.commit()
        assert newer.id < older.id
        purged: list[int] = []
        erase = f"/api/v1/contacts/{email}"
        requests = [
            partial(purge_now, app, purged),
            partial(call, address, "DELETE", erase, None, eraser),
        ]
        assert at_once(requests) == [200, 200], f"round {round_}"
        assert purged in ([1], [0])  # 0: the erasure came first and took both
        session.rollback()
        left = session.scalars(
            select(Departure).where(Departure.id.in_([newer.id, older.id]))
        ).all()
        assert all(d.erased_at is not None for d in left)


@pytest.mark.parametrize("action", ["postmortem", "notes"])
def test_staff_writing_racing_an_erasure_does_not_bring_it_back(
    app, served, session, action
):
    """Ten sends of one editor, drawn before the erasure, racing it."""
    from survey.review.models import Note, Postmortem

    text = {"postmortem": "what_happened", "notes": "body"}[action]
    column = {"postmortem": Postmortem.what_happened, "notes": Note.body}[action]
    eraser = auth(make_token(app, "contacts:erase"))
    browser = signed_in(served, make_user(app, "csm").email)
    for round_ in range(ROUNDS):
        email = f"analysed{round_}@example.com"
        departure, _page1, _first = answered(
            app, served, contact_email=email, contact_name="Bea Racer"
        )
        page = f"/review/{departure.public_id}"
        status, html = call(served, "GET", page, headers=browser)
        assert status == 200
        editor = {**hidden_fields(html), text: "Bea Racer left", "intent": "save"}
        send = partial(call, served, "POST", f"{page}/{action}", editor, browser)
        erase = f"/api/v1/contacts/{quote(email)}"
        statuses = at_once(
            [*[send] * 10, partial(call, served, "DELETE", erase, None, eraser)]
        )
        assert statuses[-1] == 200, "the erasure"
        assert set(statuses[:-1]) <= {302, 409}, statuses
        session.rollback()
        kept = session.scalars(
            select(column).where(column.table.c.departure_id == departure.id)
        ).all()
        assert not [t for t in kept if t and "Bea Racer" in t], f"round {round_}"


def test_editors_saving_one_postmortem_at_once_never_overwrite_each_other(
    app, served, session
):
    """Each CSM saved the version they opened: one save goes in, the others
    are shown their text beside the one saved (409), none silently lost; and
    a save that takes the other version in part goes in whole."""
    csms = [signed_in(served, make_user(app, "csm").email) for _ in range(4)]
    departure, _page1, _first = answered(app, served)
    item = f"/review/{departure.public_id}"
    for round_ in range(ROUNDS):
        forms = forms_on(served, csms, item)
        assert len({form["version"] for form in forms}) == 1
        requests = [
            partial(
                call,
                served,
                "POST",
                f"{item}/postmortem",
                {
                    **form,
                    "lessons": f"Round {round_}, CSM {number}",
                    "what_happened": f"Seen by CSM {number}",
                    "intent": "save",
                },
                browser,
            )
            for number, (browser, form) in enumerate(zip(csms, forms, strict=True))
        ]
        statuses = at_once(requests)
        assert sorted(statuses) == [302, 409, 409, 409], f"round {round_}"
        winner = statuses.index(302)
        session.rollback()
        saved = session.scalar(select(Postmortem))
        assert saved is not None and saved.version == round_ + 1
        assert saved.lessons == f"Round {round_}, CSM {winner}"

    # A refused editor keeps their account, takes the winner's lessons.
    loser = next(i for i in range(4) if i != winner)
    status, page = call(
        served,
        "POST",
        f"{item}/postmortem",
        {**forms_on(served, [csms[loser]], item)[0], "version": str(ROUNDS - 1)}
        | {"what_happened": "Mine, kept", "lessons": "mine", "intent": "save"},
        csms[loser],
    )
    assert status == 409
    assert (
        call(
            served,
            "POST",
            f"{item}/postmortem",
            hidden_fields(page)
            | {
                "what_happened": "Mine, kept",
                "lessons": "mine",
                "resolve-lessons": "theirs",
                "intent": "save",
            },
            csms[loser],
        )[0]
        == 302
    )
    session.rollback()
    saved = session.scalar(select(Postmortem))
    assert (saved.what_happened, saved.lessons) == (
        "Mine, kept",
        f"Round {ROUNDS - 1}, CSM {winner}",
    )

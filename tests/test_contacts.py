"""People's data rights: export everything held, erase it everywhere, retention."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from survey import db, outbox
from survey.answers.models import Response
from survey.audit import AuditEvent
from survey.consent import ConsentEvent
from survey.contacts import ERASED
from survey.departures.models import Departure
from survey.review.models import ActionItem, Note, Postmortem, RootCause
from tests.factories import (
    auth,
    everything_as_text,
    hidden_fields,
    login,
    make_consenting,
    make_departure,
    make_token,
    make_user,
    submit,
    survey_path,
    withdraw_path,
)

EMAIL = "Peter.Gibbons@Initech.example"
NAME = "Peter Gibbons"


def aggregates(session) -> tuple:
    session.rollback()
    by_reason = dict(
        session.execute(
            select(Response.reason, func.count()).group_by(Response.reason)
        ).all()
    )
    lost = session.scalar(select(func.sum(Departure.mrr_cents)))
    return by_reason, lost, session.scalar(select(func.count()).select_from(Departure))


def signed_in_csm(app):
    """Return a client signed in as a new CSM."""
    staff = app.test_client()
    assert login(staff, make_user(app, "csm").email).status_code == 302
    return staff


def staff_saves(staff, page: str, action: str, data: dict) -> None:
    """Post ``data`` from the review page ``page`` to its ``action``: it is taken."""
    response = submit(staff, page, data, action=f"{page}/{action}")
    assert response.status_code == 302, response.status_code


@pytest.fixture
def person(app, session):
    """Peter, who left twice, answered, consented, and is in notes and postmortems."""
    first = make_consenting(
        app, contact_email=EMAIL, contact_name=NAME, company="Initech", external_id="p1"
    )
    second = make_departure(
        app, contact_email=EMAIL.lower(), contact_name=NAME, external_id="p2"
    )
    customer = app.test_client()
    answered = submit(
        customer,
        survey_path(app, second),
        {"reason": "other", "reason_other": f"Ask {NAME}"},
    )
    assert answered.status_code == 303
    # "Other" has no follow-up question: page 2 takes the details alone.
    more = submit(
        customer,
        survey_path(app, second) + "/more",
        {"details": f"Write to {EMAIL} please"},
    )
    assert more.status_code == 303
    staff = signed_in_csm(app)
    page = f"/review/{first.public_id}"
    staff_saves(staff, page, "notes", {"body": f"Called {NAME} today"})
    staff_saves(
        staff,
        page,
        "postmortem",
        {
            "what_happened": f"{NAME} ({EMAIL.lower()}) lost his stapler",
            "intent": "save",
        },
    )
    make_consenting(
        app, contact_email="someone.else@x.example", contact_name="Milton W"
    )
    with app.app_context():
        # No mail server: .eml files in the instance folder.
        report = outbox.deliver_due()
    assert (report.sent, report.handled) == (3, 3)  # the three invitations
    session.rollback()
    answer = session.scalar(select(Response).where(Response.departure_id == second.id))
    assert (answer.reason, answer.reason_other, answer.details) == (
        "other",
        f"Ask {NAME}",
        f"Write to {EMAIL} please",
    )
    assert session.scalars(select(Note.body)).all() == [f"Called {NAME} today"]
    assert session.scalars(select(Postmortem.what_happened)).all() == [
        f"{NAME} ({EMAIL.lower()}) lost his stapler"
    ]
    session.rollback()
    return first, second


def test_export_shows_everything_held(app, runner, person):
    result = runner.invoke(args=["contacts", "export", EMAIL.lower()])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [d["external_id"] for d in data["departures"]] == ["p1", "p2"]
    first, second = data["departures"]
    assert first["contact_name"] == NAME
    assert first["consent_events"][0]["action"] == "granted"
    assert first["emails"][0]["kind"] == "invitation"
    assert first["staff_notes"][0]["body"] == f"Called {NAME} today"
    assert second["response"]["details"] == f"Write to {EMAIL} please"


def test_the_personal_export_streams_each_departures_records_as_indented_json(
    app, session, person
):
    first, second = person
    # A third departure with nothing recorded yet, and another person's records
    # between Peter's in every table.
    third = make_departure(app, contact_email=EMAIL.lower(), external_id="p3")
    make_consenting(app, contact_email="bill@initech.example", external_id="b1")
    admin = app.test_client()
    login(admin, make_user(app, "admin").email)
    page = admin.get("/admin/contacts").get_data(as_text=True)
    download = admin.post(
        "/admin/contacts",
        data=hidden_fields(page) | {"email": EMAIL, "action": "export"},
    )
    assert download.status_code == 200
    assert "Content-Length" not in download.headers  # streamed, not built first
    assert download.headers["Cache-Control"] == "no-store"
    body = download.get_data(as_text=True)
    with app.app_context():  # the database connection it read from is back
        assert db.engine().pool.checkedout() == 0
    data = json.loads(body)
    assert body == json.dumps(data, indent=2, ensure_ascii=False)
    session.rollback()
    held = [first.id, second.id, third.id]
    assert [d["public_id"] for d in data["departures"]] == [
        session.get(Departure, key).public_id for key in held
    ]
    for key, exported in zip(held, data["departures"], strict=True):
        events = session.scalars(
            select(ConsentEvent.action)
            .where(ConsentEvent.departure_id == key)
            .order_by(ConsentEvent.id)
        ).all()
        assert [e["action"] for e in exported["consent_events"]] == events
        subjects = session.scalars(
            select(outbox.OutboxMessage.subject)
            .where(outbox.OutboxMessage.departure_id == key)
            .order_by(outbox.OutboxMessage.id)
        ).all()
        assert [m["subject"] for m in exported["emails"]] == subjects
        notes = session.scalars(
            select(Note.body).where(Note.departure_id == key).order_by(Note.id)
        ).all()
        assert [n["body"] for n in exported["staff_notes"]] == notes
    assert data["departures"][0]["consent_events"]  # the checks above compare
    assert data["departures"][0]["staff_notes"]  # something on the first ...
    assert data["departures"][1]["response"]["reason"] == "other"  # the second
    assert data["departures"][2]["response"] is None  # ... and nothing
    assert "bill@initech.example" not in body
    kinds = session.scalars(select(AuditEvent.kind)).all()
    assert kinds.count("contact.exported") == 1


def test_erasure_leaves_no_trace_but_keeps_the_numbers(
    app, runner, client, session, person
):
    first, second = person
    before = aggregates(session)
    text = everything_as_text(session)
    assert EMAIL.lower() in text and NAME.lower() in text
    message_ids = session.scalars(
        select(outbox.OutboxMessage.id).where(
            outbox.OutboxMessage.departure_id.in_([first.id, second.id])
        )
    ).all()
    with app.app_context():
        emls = [path for m in message_ids for path in outbox.eml_files(m)]
    assert len(emls) == 2

    result = runner.invoke(args=["contacts", "erase", EMAIL])
    assert result.exit_code == 0, result.output
    assert "Erased 2 departure(s)" in result.stdout

    text = everything_as_text(session)
    assert EMAIL.lower() not in text
    assert NAME.lower() not in text
    assert "milton w" in text  # someone else's data stays
    assert aggregates(session) == before
    assert not any(path.exists() for path in emls)
    for path in (
        survey_path(app, first),
        survey_path(app, second) + "/more",
        withdraw_path(app, first),
    ):
        assert client.get(path).status_code == 410
    [event] = session.scalars(
        select(AuditEvent).where(AuditEvent.kind == "contact.erased")
    ).all()
    assert len(event.detail["email_hash"]) == 64
    assert event.detail["departures"] == 2
    listed = client.get(
        "/api/v1/winback/contacts", headers=auth(make_token(app, "winback:read"))
    ).get_json()["contacts"]
    assert [row["contact_email"] for row in listed] == ["someone.else@x.example"]


def test_erasure_through_the_api_needs_its_scope(app, client, session, person):
    path = f"/api/v1/contacts/{EMAIL}"
    assert client.delete(path).status_code == 401
    other = auth(make_token(app, "winback:read", "departures:write"))
    assert client.delete(path, headers=other).status_code == 403
    eraser = auth(make_token(app, "contacts:erase"))
    done = client.delete(path, headers=eraser)
    assert done.status_code == 200
    assert done.get_json() == {"erased_departures": 2}
    assert EMAIL.lower() not in everything_as_text(session)
    assert client.delete(path, headers=eraser).get_json() == {"erased_departures": 0}
    session.rollback()
    vias = session.scalars(
        select(AuditEvent.detail).where(AuditEvent.kind == "contact.erased")
    ).all()
    assert {detail["via"] for detail in vias} == {"api:test"}


def test_erasure_also_takes_a_first_or_last_name_alone_from_their_own_notes(
    app, runner, session
):
    departure = make_consenting(
        app, contact_email="pat.smith@x.example", contact_name="Pat de la Smith"
    )
    staff = app.test_client()
    login(staff, make_user(app, "csm").email)
    page = f"/review/{departure.public_id}"
    note = "Called Pat on Monday; Ms Smith said la facture de mars was late."
    staff.post(
        f"{page}/notes",
        data=hidden_fields(staff.get(page).get_data(as_text=True)) | {"body": note},
    )
    assert (
        runner.invoke(args=["contacts", "erase", "pat.smith@x.example"]).exit_code == 0
    )
    session.rollback()
    body = session.scalar(select(Note.body))
    assert body == (
        "Called [erased] on Monday; Ms [erased] said la facture de mars was late."
    )


def test_retention_erases_departures_older_than_the_period(make_app, clock, session):
    app = make_app(RETENTION_DAYS=30)
    runner = app.test_cli_runner()
    long_ago = clock() - timedelta(days=40)
    make_departure(app, contact_email="old@x.example", cancelled_at=long_ago)
    old_one = make_departure(
        app,
        contact_email="both@x.example",
        contact_name="Bo Both",
        cancelled_at=long_ago,
        external_id="b1",
    )
    recent = make_departure(
        app,
        contact_email="both@x.example",
        contact_name="Bo Both",
        cancelled_at=clock() - timedelta(days=2),
        external_id="b2",
    )
    make_departure(app, contact_email="new@x.example", cancelled_at=clock())
    session.rollback()
    stored = session.execute(
        select(Departure.contact_email, Departure.cancelled_at).order_by(Departure.id)
    ).all()
    assert [tuple(row) for row in stored] == [
        ("old@x.example", long_ago),
        ("both@x.example", long_ago),
        ("both@x.example", clock() - timedelta(days=2)),
        ("new@x.example", clock()),
    ]
    result = runner.invoke(args=["contacts", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert "2 departure(s) erased" in result.stdout
    text = everything_as_text(session)
    assert "old@x.example" not in text
    assert "new@x.example" in text
    session.rollback()
    kept = session.get(Departure, recent.id)
    gone = session.get(Departure, old_one.id)
    assert (kept.contact_email, kept.contact_name) == ("both@x.example", "Bo Both")
    assert gone.erased_at is not None and gone.contact_name is None
    assert "both@x.example" not in gone.contact_email
    again = runner.invoke(args=["contacts", "purge-expired"])
    assert again.exit_code == 0, again.output
    assert "0 departure(s)" in again.stdout


def test_a_withdrawal_outlives_the_erasure_of_the_departure_it_came_through(
    make_app, clock, session
):
    app = make_app(RETENTION_DAYS=30)
    client = app.test_client()
    reader = auth(make_token(app, "winback:read"))

    def listed() -> list[str]:
        body = client.get("/api/v1/winback/contacts", headers=reader).get_json()
        return [contact["contact_email"] for contact in body["contacts"]]

    old = make_departure(
        app, contact_email="pat@x.example", cancelled_at=clock() - timedelta(days=40)
    )
    make_consenting(app, contact_email="pat@x.example")  # a newer departure
    assert listed() == ["pat@x.example"]
    withdrawn = submit(client, withdraw_path(app, old), {})  # the old email's link
    assert withdrawn.status_code == 200
    session.rollback()
    events = select(ConsentEvent.action).where(ConsentEvent.departure_id == old.id)
    assert session.scalars(events).all() == ["withdrawn"]
    assert listed() == []

    result = app.test_cli_runner().invoke(args=["contacts", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert "1 departure(s) erased" in result.stdout
    assert listed() == []


def test_retrying_failed_mail_never_sends_an_erased_persons(app, runner, session):
    make_departure(app, contact_email="gone@x.example")  # its invitation is pending
    assert runner.invoke(args=["contacts", "erase", "gone@x.example"]).exit_code == 0
    result = runner.invoke(args=["outbox", "retry", "--all-failed"])
    assert "0 message(s) queued again." in result.stdout
    session.rollback()
    assert session.scalars(select(outbox.OutboxMessage.status)).all() == [outbox.FAILED]


def test_an_erasure_takes_the_address_out_of_a_kept_delivery_error(
    app, runner, session
):
    """An earlier release kept a refusal quoting the address in last_error."""
    departure = make_departure(app, contact_email=EMAIL)
    quoted = f"Refused: {{'{EMAIL.lower()}': (550, b'<{EMAIL}> unknown')}}"
    session.execute(
        update(outbox.OutboxMessage)
        .where(outbox.OutboxMessage.departure_id == departure.id)
        .values(status=outbox.FAILED, last_error=quoted)
    )
    session.commit()
    assert EMAIL.lower() in everything_as_text(session).lower()
    assert runner.invoke(args=["contacts", "erase", EMAIL]).exit_code == 0
    session.rollback()
    [kept] = session.scalars(select(outbox.OutboxMessage.last_error)).all()
    assert kept == "Refused: {'<the recipient>': (550, b'<<the recipient>> unknown')}"
    assert EMAIL.lower() not in everything_as_text(session).lower()


def test_without_retention_nothing_is_purged(runner):
    result = runner.invoke(args=["contacts", "purge-expired"])
    assert "everything is kept" in result.stdout


def test_an_admin_erases_only_after_typing_the_address_again(
    app, session, person, clock
):
    admin = app.test_client()
    login(admin, make_user(app, "admin").email)
    page = admin.get("/admin/contacts").get_data(as_text=True)
    download = admin.post(
        "/admin/contacts",
        data=hidden_fields(page) | {"email": EMAIL, "action": "export"},
    )
    assert download.mimetype == "application/json"
    assert len(download.get_json()["departures"]) == 2
    # Named after whose data it is and when: downloads stay apart.
    today = clock().date().isoformat()
    assert download.headers["Content-Disposition"] == (
        f'attachment; filename="personal-data-{EMAIL.lower()}-{today}.json"'
    )
    # Both fields filled at once, but the count never shown: nothing goes.
    skipped = admin.post(
        "/admin/contacts",
        data=hidden_fields(page)
        | {"email": EMAIL, "confirm": EMAIL.lower(), "action": "erase"},
    )
    assert skipped.status_code == 200
    assert EMAIL.lower() in everything_as_text(session)
    preview = admin.post(
        "/admin/contacts",
        data=hidden_fields(page) | {"email": EMAIL, "action": "preview"},
    ).get_data(as_text=True)
    # What it would remove, said before anything goes.
    assert "removes the personal data of <strong>2 departures</strong>" in preview
    assert preview == skipped.get_data(as_text=True)
    refused = admin.post(
        "/admin/contacts",
        data=hidden_fields(preview) | {"confirm": "", "action": "erase"},
    )
    assert "Type the same address again" in refused.get_data(as_text=True)
    assert EMAIL.lower() in everything_as_text(session)
    # A third departure arrives meanwhile: the count shown is no longer true.
    make_departure(app, contact_email=EMAIL.lower(), external_id="p3")
    changed = admin.post(
        "/admin/contacts",
        data=hidden_fields(preview) | {"confirm": EMAIL.lower(), "action": "erase"},
    ).get_data(as_text=True)
    assert "holds has changed" in changed
    assert "<strong>3 departures</strong>" in changed
    assert EMAIL.lower() in everything_as_text(session)
    done = admin.post(
        "/admin/contacts",
        data=hidden_fields(changed) | {"confirm": EMAIL.lower(), "action": "erase"},
        follow_redirects=True,
    )
    assert "Erased 3 departure(s)" in done.get_data(as_text=True)
    assert EMAIL.lower() not in everything_as_text(session)


def test_exporting_an_address_nobody_has_says_nothing_is_held(app, session):
    admin = app.test_client()
    login(admin, make_user(app, "admin").email)
    page = admin.get("/admin/contacts").get_data(as_text=True)
    answer = admin.post(
        "/admin/contacts",
        data=hidden_fields(page) | {"email": "nobody@example.com", "action": "export"},
    )
    assert answer.mimetype == "text/html"  # no empty document to download
    assert "Nothing held about nobody@example.com" in answer.get_data(as_text=True)


def test_erasing_an_address_that_is_also_a_staff_login_keeps_the_account(
    app, runner, client
):
    colleague = make_user(app, "csm", email="dana@us.example", name="Dana Colleague")
    make_consenting(app, contact_email="dana@us.example", contact_name="Dana Colleague")
    assert runner.invoke(args=["contacts", "erase", "dana@us.example"]).exit_code == 0
    assert login(client, colleague.email).status_code == 302


def test_erasure_touches_only_the_person_and_never_codes(app, client, session):
    make_consenting(app, contact_email="jimbob@example.com", contact_name="Jim Bob")
    other = make_departure(app, contact_email="tom.other@example.com")
    submit(
        app.test_client(),
        survey_path(app, other),
        {
            "reason": "other",
            "reason_other": "Our customer success person, May, left; write to "
            "tom.other@example.com",
        },
    )
    for name, email in (
        ("Tom", "bob@example.com"),
        ("May", "may@x.example"),
        ("New", "new@x.example"),
        ("Bo", "bo@x.example"),
    ):
        make_consenting(app, contact_email=email, contact_name=name)
    before = everything_as_text(session)
    assert "bo" in before
    eraser = auth(make_token(app, "contacts:erase"))
    for email in ("bob@example.com", "may@x.example", "new@x.example", "bo@x.example"):
        response = client.delete(f"/api/v1/contacts/{email}", headers=eraser)
        assert response.status_code == 200, response.get_data(as_text=True)
    text = everything_as_text(session)
    assert "jimbob@example.com" in text and "jim bob" in text
    assert "tom.other@example.com" in text
    # A one-word name could be anybody's word: others' texts keep it.
    assert "our customer success person, may, left" in text
    assert "write to tom.other@example.com" in text  # not Tom's
    assert "yes, you may contact me later" in text  # the consent wording stays
    assert "you [erased] contact" not in text  # nor the "may" in others' emails
    session.rollback()
    assert (
        session.scalar(
            select(func.count())
            .select_from(Response)
            .where(Response.reason == "switched")
        )
        == 5
    )  # codes untouched
    assert "bo@x.example" not in text


@pytest.mark.parametrize("target", ["price", "not an address", "@", "a@"])
def test_erasing_something_that_is_not_an_address_is_refused(
    app, client, runner, target
):
    eraser = auth(make_token(app, "contacts:erase"))
    response = client.delete(f"/api/v1/contacts/{target}", headers=eraser)
    assert response.status_code == 422
    assert response.get_json()["fields"]["email"]
    assert runner.invoke(args=["contacts", "erase", target]).exit_code == 1


def test_a_postmortem_opened_before_an_erasure_cannot_write_it_back(
    app, runner, session, person
):
    first, _second = person
    staff = signed_in_csm(app)
    page = f"/review/{first.public_id}"
    editor = hidden_fields(staff.get(page).get_data(as_text=True))
    assert editor["version"]
    assert runner.invoke(args=["contacts", "erase", EMAIL]).exit_code == 0
    stale = staff.post(
        f"{page}/postmortem",
        data=editor | {"what_happened": f"{NAME} lost his stapler", "intent": "save"},
    )
    assert stale.status_code == 409  # the erasure's rewrite counts as a save
    session.rollback()
    assert session.scalars(select(Postmortem.what_happened)).all() == [
        f"{ERASED} ({ERASED}) lost his stapler"
    ]


def test_a_new_postmortem_begun_before_an_erasure_is_saved_only_knowingly(
    app, runner, session
):
    departure = make_consenting(app, contact_email="bea@x.example")
    staff = signed_in_csm(app)
    page = f"/review/{departure.public_id}"
    before = hidden_fields(staff.get(page).get_data(as_text=True))
    assert runner.invoke(args=["contacts", "erase", "bea@x.example"]).exit_code == 0
    text = {"what_happened": "Bea left", "intent": "save"}
    stale = staff.post(f"{page}/postmortem", data=before | text)
    assert stale.status_code == 409
    assert "Changed by an erasure of the person" in stale.get_data(as_text=True)
    session.rollback()
    assert session.scalars(select(Postmortem)).all() == []
    # Saved again from the conflict page, after reading it: it goes in.
    knowingly = hidden_fields(stale.get_data(as_text=True))
    assert staff.post(f"{page}/postmortem", data=knowingly | text).status_code == 302
    # An editor opened after the erasure saves at once.
    other = make_consenting(app, contact_email="cy@x.example")
    assert runner.invoke(args=["contacts", "erase", "cy@x.example"]).exit_code == 0
    staff_saves(staff, f"/review/{other.public_id}", "postmortem", text)


def test_a_note_begun_before_an_erasure_is_added_only_knowingly(app, runner, session):
    departure = make_consenting(app, contact_email="dee@x.example")
    staff = signed_in_csm(app)
    page = f"/review/{departure.public_id}"
    before = hidden_fields(staff.get(page).get_data(as_text=True))
    assert runner.invoke(args=["contacts", "erase", "dee@x.example"]).exit_code == 0
    stale = staff.post(f"{page}/notes", data=before | {"body": "Dee called"})
    assert stale.status_code == 409
    assert "erased while you were writing" in stale.get_data(as_text=True)
    session.rollback()
    assert session.scalars(select(Note)).all() == []
    knowingly = hidden_fields(stale.get_data(as_text=True))
    added = staff.post(f"{page}/notes", data=knowingly | {"body": "Erased on request"})
    assert added.status_code == 302
    staff_saves(staff, page, "notes", {"body": "Nothing more to do"})
    session.rollback()
    assert session.scalars(select(Note.body).order_by(Note.id)).all() == [
        "Erased on request",
        "Nothing more to do",
    ]


def test_erasure_finds_names_however_they_are_written(app, runner, session):
    departure = make_consenting(
        app, contact_email="emile@zola.example", contact_name="Émile Zola"
    )
    staff = app.test_client()
    login(staff, make_user(app, "csm").email)
    page = f"/review/{departure.public_id}"
    html = staff.get(page).get_data(as_text=True)
    staff.post(
        f"{page}/notes",
        data=hidden_fields(html) | {"body": "Spoke to Émile\nZola and ÉMILE  ZOLA"},
    )
    html = staff.get(page).get_data(as_text=True)
    staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html)
        | {
            "root_causes": ["other"],
            "primary_cause": "other",
            "other_cause": "Émile Zola left",
            "action_items-0-text": "Call Émile Zola",
            "action_items-0-team": "sales",
            "action_items-0-owner": "emile@zola.example",
            "intent": "save",
        },
    )
    assert (
        runner.invoke(args=["contacts", "erase", "emile@zola.example"]).exit_code == 0
    )
    text = everything_as_text(session)
    assert "zola" not in text and "émile" not in text


def test_a_one_word_or_placeholder_name_stays_within_the_persons_rows(
    app, runner, session
):
    sam = make_consenting(app, contact_email="sam@x.example", contact_name="Sam Other")
    staff = app.test_client()
    login(staff, make_user(app, "csm").email)
    page = f"/review/{sam.public_id}"
    html = staff.get(page).get_data(as_text=True)
    staff.post(
        f"{page}/notes", data=hidden_fields(html) | {"body": "N/A: admin said new"}
    )
    for email, name in (
        ("billing@acme.example", "N/A"),
        ("admin@acme.example", "admin"),
    ):
        make_consenting(app, contact_email=email, contact_name=name)
        assert runner.invoke(args=["contacts", "erase", email]).exit_code == 0
    text = everything_as_text(session)
    assert "n/a: admin said new" in text  # Sam's note is Sam's
    session.rollback()
    roles = session.scalars(
        select(AuditEvent.detail).where(AuditEvent.kind == "user.created")
    ).all()
    assert [detail["role"] for detail in roles] == ["csm"]  # codes stay


def test_retention_cleans_everything_tied_to_the_expired_departure(
    make_app, clock, session
):
    app = make_app(RETENTION_DAYS=30)
    old = make_consenting(
        app,
        contact_email="old@x.example",
        contact_name="Olga Oldfield",
        company="Olga Oldfield Consulting",
        cancelled_at=clock() - timedelta(days=40),
    )
    page = f"/review/{old.public_id}"
    staff_saves(
        signed_in_csm(app),
        page,
        "postmortem",
        {
            "what_happened": "Olga Oldfield (old@x.example) wanted SSO",
            "root_causes": ["other"],
            "primary_cause": "other",
            "other_cause": "Olga Oldfield's budget",
            "action_items-0-text": "Ask Olga Oldfield again",
            "action_items-0-team": "sales",
            "action_items-0-owner": "old@x.example",
            "intent": "save",
        },
    )
    session.rollback()
    assert session.scalars(select(Postmortem.what_happened)).all() == [
        "Olga Oldfield (old@x.example) wanted SSO"
    ]
    assert session.scalars(select(RootCause.note)).all() == ["Olga Oldfield's budget"]
    assert session.execute(select(ActionItem.text, ActionItem.owner)).all() == [
        ("Ask Olga Oldfield again", "old@x.example")
    ]
    result = app.test_cli_runner().invoke(args=["contacts", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert "1 departure(s) erased" in result.stdout
    text = everything_as_text(session)
    assert "olga oldfield" not in text and "old@x.example" not in text


def test_staff_read_an_erased_contact_as_erased_person(app, runner):
    departure = make_departure(app, company="Gone Corp")
    assert (
        submit(
            app.test_client(), survey_path(app, departure), {"reason": "switched"}
        ).status_code
        == 303
    )
    assert (
        runner.invoke(args=["contacts", "erase", departure.contact_email]).exit_code
        == 0
    )
    staff = app.test_client()
    login(staff, make_user(app, "admin").email)
    for path in ("/review?status=", f"/review/{departure.public_id}"):
        page = staff.get(path).get_data(as_text=True)
        assert "Gone Corp" in page, path
        assert "erased person" in page, path
        assert "@erased.invalid" not in page, path

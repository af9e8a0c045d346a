"""The win-back list: who is on it, pages, CSV, scopes, formula cells, memory."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy import text as sql

from survey import db
from survey.audit import AuditEvent
from survey.departures.models import Departure
from tests.factories import (
    auth,
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


@pytest.fixture
def reader(app):
    return auth(make_token(app, "winback:read"))


def listed(client, reader, **filters) -> list[str]:
    """Return the addresses on the list, following every page."""
    emails, cursor = [], None
    while True:
        query = filters | ({"cursor": cursor} if cursor else {})
        body = client.get(
            "/api/v1/winback/contacts", query_string=query, headers=reader
        )
        assert body.status_code == 200, body.get_json()
        data = body.get_json()
        emails += [row["contact_email"] for row in data["contacts"]]
        cursor = data["next_cursor"]
        if cursor is None:
            return emails


def test_a_row_has_every_field_and_a_working_unsubscribe_link(app, client, reader):
    departure = make_consenting(
        app,
        reason="too_expensive",
        company="Acme",
        contact_name="Ada",
        contact_email="ada@acme.example",
        plan="growth",
        segment="smb",
        mrr_cents=12_300,
        currency="EUR",
    )
    [row] = client.get("/api/v1/winback/contacts", headers=reader).get_json()[
        "contacts"
    ]
    assert row | {"consented_at": None, "unsubscribe_url": None} == {
        "contact_email": "ada@acme.example",
        "contact_name": "Ada",
        "company": "Acme",
        "plan": "growth",
        "segment": "smb",
        "mrr_cents": 12_300,
        "currency": "EUR",
        "primary_reason": "too_expensive",
        "postmortem_recommendation": None,
        "consented_at": None,
        "consent_wording_version": row["consent_wording_version"],
        "unsubscribe_url": None,
    }
    assert row["consented_at"].endswith("Z")
    assert row["unsubscribe_url"] == "http://survey.test" + withdraw_path(
        app, departure
    )
    # One click shows a confirmation; the POST withdraws.
    page = client.get(withdraw_path(app, departure))
    assert page.status_code == 200
    assert listed(client, reader) == ["ada@acme.example"]
    submit(client, withdraw_path(app, departure), {})
    assert listed(client, reader) == []


def test_consent_over_time_decides(app, client, reader):
    never = make_departure(app, contact_email="never@x.example")
    survey_no = make_consenting(app, contact_email="survey@x.example")
    link_no = make_consenting(app, contact_email="link@x.example")
    back = make_consenting(app, contact_email="back@x.example")
    assert sorted(listed(client, reader)) == [
        "back@x.example",
        "link@x.example",
        "survey@x.example",
    ]
    # Withdrawn on the survey page (the box unticked)...
    submit(client, survey_path(app, survey_no) + "/more", {"details": "no thanks"})
    # ...and through the one-click link.
    submit(client, withdraw_path(app, link_no), {})
    submit(client, withdraw_path(app, back), {})
    assert listed(client, reader) == []
    # Re-granted on the survey page: back on the list.
    submit(client, survey_path(app, back) + "/more", {"winback_consent": "y"})
    assert listed(client, reader) == ["back@x.example"]
    del never


def test_a_withdrawal_through_another_departure_of_the_person_counts(
    app, client, reader
):
    make_consenting(app, contact_email="twice@x.example", external_id="first")
    second = make_consenting(app, contact_email="twice@x.example", external_id="second")
    assert listed(client, reader) == ["twice@x.example", "twice@x.example"]
    assert listed(client, reader, distinct="email") == ["twice@x.example"]
    submit(client, withdraw_path(app, second), {})
    assert listed(client, reader) == []


def test_an_address_in_other_case_is_the_same_person(app, client, reader):
    make_consenting(app, contact_email="Twice@X.example", external_id="upper")
    second = make_consenting(app, contact_email="twice@x.example", external_id="lower")
    assert listed(client, reader, distinct="email") == ["twice@x.example"]
    submit(client, withdraw_path(app, second), {})
    assert listed(client, reader) == []


def test_distinct_email_keeps_the_latest_departure(app, client, reader):
    make_consenting(
        app,
        contact_email="p@x.example",
        plan="old",
        cancelled_at="2026-01-01T00:00:00Z",
    )
    make_consenting(
        app,
        contact_email="p@x.example",
        plan="new",
        cancelled_at="2026-06-01T00:00:00Z",
    )
    rows = client.get(
        "/api/v1/winback/contacts?distinct=email", headers=reader
    ).get_json()["contacts"]
    assert [row["plan"] for row in rows] == ["new"]


def test_staff_withdraw_on_written_request_with_a_note(app, client, reader, session):
    departure = make_consenting(app, contact_email="asked@x.example")
    staff = app.test_client()
    login(staff, make_user(app, "csm").email)
    page = f"/review/{departure.public_id}"
    html = staff.get(page).get_data(as_text=True)
    refused = staff.post(f"{page}/consent", data=hidden_fields(html) | {"note": ""})
    assert refused.status_code == 422
    assert listed(client, reader) == ["asked@x.example"]
    staff.post(
        f"{page}/consent",
        data=hidden_fields(html) | {"note": "Email of 3 March asking us to stop"},
    )
    assert listed(client, reader) == []
    html = staff.get(page).get_data(as_text=True)
    assert "Withdrawn through staff, on request" in html
    assert "Email of 3 March asking us to stop" in html
    status = client.get(
        f"/api/v1/departures/{departure.public_id}",
        headers=auth(make_token(app, "responses:read")),
    ).get_json()["consent"]
    assert status["state"] == "withdrawn" and status["since"]


def test_staff_withdraw_from_any_departure_of_the_person(app, client, reader):
    make_consenting(app, contact_email="two@x.example", company="First Co")
    later = make_departure(app, contact_email="two@x.example", company="Second Co")
    submit(app.test_client(), survey_path(app, later), {"reason": "switched"})
    staff = app.test_client()
    login(staff, make_user(app, "csm").email)
    page = f"/review/{later.public_id}"
    html = staff.get(page).get_data(as_text=True)
    assert "On the win-back list: <strong>yes</strong>" in html
    assert "Withdraw consent for them" in html
    staff.post(
        f"{page}/consent",
        data=hidden_fields(html) | {"note": "Phone call of 3 March: stop"},
    )
    assert listed(client, reader) == []
    html = staff.get(page).get_data(as_text=True)
    assert "On the win-back list: <strong>no</strong>" in html
    assert "Withdraw consent for them" not in html


def test_marketing_sees_the_list_and_downloads_it(app):
    make_consenting(app, contact_email="m@x.example", company="=SUM(A1)")
    marketing = app.test_client()
    login(marketing, make_user(app, "marketing").email)
    html = marketing.get("/winback").get_data(as_text=True)
    assert "m@x.example" in html
    assert "Download the whole list as CSV" in html
    # The intro says where the no-thanks link is: in the CSV, not on the page.
    assert "The CSV download gives each person a link where they can say no" in html
    download = marketing.get("/winback/contacts.csv")
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    # For people: named columns, labels and amounts, not codes and cents.
    [row] = csv.DictReader(io.StringIO(download.get_data(as_text=True), newline=""))
    assert row["Email"] == "m@x.example"
    assert row["Company"] == "'=SUM(A1)"  # a formula is kept as text
    assert (row["Lost MRR"], row["Currency"]) == ("199.00", "USD")
    assert row["Stated reason"] == "We found a better alternative"
    assert row["Postmortem recommendation"] == ""  # no postmortem yet
    assert row["Unsubscribe link"].startswith("http://survey.test/w/")
    assert marketing.get("/review").status_code == 403


def test_a_filtered_list_downloads_as_the_filtered_list(app):
    make_consenting(app, segment="smb")
    marketing = app.test_client()
    login(marketing, make_user(app, "marketing").email)
    html = marketing.get("/winback?segment=smb").get_data(as_text=True)
    assert "Download this filtered list as CSV" in html
    assert "Download the whole list" not in html
    assert 'href="/winback/contacts.csv?segment=smb"' in html


def test_an_inverted_date_range_is_explained_not_shown_empty(app, client, reader):
    make_consenting(app)
    marketing = app.test_client()
    login(marketing, make_user(app, "marketing").email)
    page = marketing.get("/winback?since=2026-12-01&until=2026-11-01")
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "not after “from”" in html
    # Summed up above the filters, with a way to the date to change.
    assert re.search(
        r'class="error-summary"[^>]*autofocus.*?'
        r'<a href="#until">Consented until \(before\) — ',
        html,
        re.S,
    )
    api = client.get(
        "/api/v1/winback/contacts?since=2026-12-01&until=2026-11-01", headers=reader
    )
    assert api.status_code == 422
    assert "until" in api.get_json()["fields"]


def test_a_refused_filter_keeps_the_valid_ones_and_a_download_that_works(app):
    make_consenting(app, segment="smb", contact_email="smb@x.example")
    make_consenting(app, segment="enterprise", contact_email="big@x.example")
    marketing = app.test_client()
    login(marketing, make_user(app, "marketing").email)
    page = marketing.get(
        "/winback?segment=smb&reason=nope&since=2020-01-01&until=2019-06-01"
    )
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    # Both refusals explained, each beside the value given.
    assert "not after “from”" in html
    assert "Unknown reason code" in html
    assert 'value="2019-06-01"' in html
    # The valid filters still apply: the segment, and the date from.
    assert "smb@x.example" in html
    assert "big@x.example" not in html
    # The download is the list shown: the valid filters only.
    [link] = re.findall(r'href="(/winback/contacts\.csv[^"]*)"', html)
    assert link.replace("&amp;", "&") == (
        "/winback/contacts.csv?segment=smb&since=2020-01-01"
    )
    assert "Download this filtered list as CSV" in html
    download = marketing.get(link.replace("&amp;", "&"))
    assert download.status_code == 200
    assert download.mimetype == "text/csv"
    rows = csv.DictReader(io.StringIO(download.get_data(as_text=True), newline=""))
    assert [row["Email"] for row in rows] == ["smb@x.example"]


def test_do_not_contact_takes_a_contact_off_the_list(app, client, reader):
    departure = make_consenting(app)
    staff = app.test_client()
    login(staff, make_user(app, "csm").email)
    page = f"/review/{departure.public_id}"
    html = staff.get(page).get_data(as_text=True)
    staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html)
        | {"winback_recommendation": "do_not_contact", "intent": "save"},
    )
    assert listed(client, reader) == []
    html = staff.get(page).get_data(as_text=True)
    staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html)
        | {"winback_recommendation": "offer", "intent": "save"},
    )
    [row] = client.get("/api/v1/winback/contacts", headers=reader).get_json()[
        "contacts"
    ]
    assert row["postmortem_recommendation"] == "offer"
    # The people's CSV says it in words.
    marketing = app.test_client()
    login(marketing, make_user(app, "marketing").email)
    download = marketing.get("/winback/contacts.csv").get_data(as_text=True)
    [row] = csv.DictReader(io.StringIO(download, newline=""))
    assert row["Postmortem recommendation"] == "Make an offer"


def test_filters(app, client, reader, clock):
    make_consenting(
        app,
        reason="too_expensive",
        segment="smb",
        plan="a",
        contact_email="a@x.example",
    )
    clock.advance(days=2)
    make_consenting(
        app,
        reason="switched",
        segment="enterprise",
        plan="b",
        contact_email="b@x.example",
    )
    assert listed(client, reader, reason="switched") == ["b@x.example"]
    assert listed(client, reader, segment="smb") == ["a@x.example"]
    assert listed(client, reader, plan="b") == ["b@x.example"]
    since = (clock() - __import__("datetime").timedelta(days=1)).isoformat()
    assert listed(client, reader, since=since) == ["b@x.example"]
    assert listed(client, reader, until=since) == ["a@x.example"]
    bad = client.get("/api/v1/winback/contacts?reason=nope&since=soon", headers=reader)
    assert bad.status_code == 422
    assert set(bad.get_json()["fields"]) == {"reason", "since"}


def test_1001_contacts_page_by_page_each_exactly_once(app, client, reader):
    from survey import db
    from survey.consent import consent_wording, record_consent
    from survey.departures.schemas import DepartureIn
    from survey.departures.service import record_departure

    with app.app_context(), db.write_session() as session:
        for number in range(1001):
            departure, _ = record_departure(
                session,
                DepartureIn(
                    external_id=f"w{number}", contact_email=f"c{number}@x.example"
                ),
                source="api",
            )
            record_consent(
                session,
                departure,
                granted=True,
                channel="survey",
                wording=consent_wording(),
            )
        session.commit()
    pages, cursor, emails = 0, None, []
    while True:
        query = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        data = client.get(
            "/api/v1/winback/contacts", query_string=query, headers=reader
        ).get_json()
        emails += [row["contact_email"] for row in data["contacts"]]
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert pages == 11
    assert len(emails) == len(set(emails)) == 1001


# The cursor is a consent event's id, an INTEGER column: 2147483648 is one past
# it (PostgreSQL refused to compare it: a 500); a fullwidth 1 is a digit to
# str.isdecimal, but not one we ever write.
@pytest.mark.parametrize("cursor", ["2147483648", "999999999999999999", "\uff11"])
def test_a_cursor_out_of_range_is_refused(app, client, reader, cursor):
    make_consenting(app, contact_email="a@x.example")
    refused = client.get(
        "/api/v1/winback/contacts", query_string={"cursor": cursor}, headers=reader
    )
    assert refused.status_code == 422
    assert refused.get_json()["fields"] == {"cursor": ["Not a valid cursor."]}
    marketing = app.test_client()
    assert login(marketing, make_user(app, "marketing").email).status_code == 302
    page = marketing.get("/winback", query_string={"cursor": cursor})
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "Not a valid cursor." in html
    assert "a@x.example" in html  # the first page instead


def test_the_largest_cursor_is_the_end_of_the_list(app, client, reader):
    make_consenting(app)
    last = client.get(
        "/api/v1/winback/contacts",
        query_string={"cursor": "2147483647"},
        headers=reader,
    )
    assert last.status_code == 200
    assert last.get_json() == {"contacts": [], "next_cursor": None}


@pytest.mark.parametrize(
    "limit", ["0", "10001", "\uff11\uff10", "99999999999999999999", "-1"]
)
def test_a_limit_out_of_range_is_refused(client, reader, limit):
    refused = client.get(
        "/api/v1/winback/contacts", query_string={"limit": limit}, headers=reader
    )
    assert refused.status_code == 422
    assert list(refused.get_json()["fields"]) == ["limit"]


def test_scopes(app, client):
    assert client.get("/api/v1/winback/contacts").status_code == 401
    other = auth(make_token(app, "responses:read", "departures:write"))
    assert client.get("/api/v1/winback/contacts", headers=other).status_code == 403
    assert client.get("/api/v1/winback/contacts.csv", headers=other).status_code == 403


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_that_look_like_formulas_are_neutralized(app, client, reader, start):
    departure = make_consenting(app)
    # Stored as is (input is trimmed, but older or imported rows may not be).
    with app.app_context(), db.write_session() as session:
        session.execute(
            update(Departure)
            .where(Departure.id == departure.id)
            .values(contact_name=f"{start}HYPERLINK(1)", company=f"{start}cmd|calc")
        )
        session.commit()
    response = client.get("/api/v1/winback/contacts.csv", headers=reader)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    [row] = list(
        csv.DictReader(io.StringIO(response.get_data(as_text=True), newline=""))
    )
    assert row["contact_name"] == f"'{start}HYPERLINK(1)"
    assert row["company"] == f"'{start}cmd|calc"


AWKWARD_TEXT = [
    "Comma, Inc.",
    'The "Quoted" Company',
    "Two\nlines",
    "Carriage\rreturn",
    "\rStarts with CR, and a comma",
    '=HYPERLINK("x", "y")',
    "-42",
    "Ünïcødé ✓ 株式会社",
    " padded ",
    "''",
    '"',
    "Back\\slash and\ttab",
    "Control \x01\x1f characters",
    "Line\u2028separator, emoji \U0001f600",
]


def python_rows(app) -> list[dict]:
    """The list as the staff page reads it: rows through Python, one
    ``row_dict`` each (what the database-made JSON and CSV must equal)."""
    from survey import links
    from survey.winback.service import WinbackFilter, eligible, row_dict

    with app.app_context(), db.new_session() as session:
        prefix = links.withdraw_url_prefix()
        return [
            row_dict(row, prefix)
            for row in session.execute(eligible(WinbackFilter())).all()
        ]


def make_awkward_contacts(app) -> None:
    """One consenting contact per ``AWKWARD_TEXT``, the text in its fields."""
    for number, text in enumerate(AWKWARD_TEXT):
        departure = make_consenting(app, contact_email=f"p{number}@x.example")
        with app.app_context(), db.write_session() as session:
            session.execute(
                update(Departure)
                .where(Departure.id == departure.id)
                .values(
                    contact_name=text,
                    company=text[::-1],
                    plan=text if number % 2 else None,
                    segment="," if number % 3 else "",
                )
            )
            session.commit()


@pytest.mark.parametrize("base_url", ["http://survey.test", 'http://x.test/a,"b"'])
def test_the_databases_csv_is_what_the_csv_module_writes(app, client, reader, base_url):
    from survey.spreadsheets import neutral
    from survey.winback.service import COLUMNS

    app.config["BASE_URL"] = base_url
    make_awkward_contacts(app)
    rows = python_rows(app)
    assert len(rows) == len(AWKWARD_TEXT)
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(neutral([row[name] for name in COLUMNS]) for row in rows)
    response = client.get("/api/v1/winback/contacts.csv", headers=reader)
    assert response.status_code == 200
    assert response.get_data(as_text=True) == expected.getvalue()


@pytest.mark.parametrize("base_url", ["http://survey.test", 'http://x.test/a"b\\'])
def test_the_databases_json_is_what_python_writes(app, client, reader, base_url):
    """A JSON page is made by the database, a row a string: it must decode
    (strictly: no raw control characters) to what Python makes of the same
    rows, fields in the same order."""
    app.config["BASE_URL"] = base_url
    make_awkward_contacts(app)
    answer = client.get(
        "/api/v1/winback/contacts", query_string={"limit": 100}, headers=reader
    )
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    page = json.loads(answer.get_data(as_text=True), strict=True)
    assert list(page) == ["contacts", "next_cursor"]
    assert page["next_cursor"] is None
    expected = python_rows(app)
    assert len(expected) == len(AWKWARD_TEXT)
    assert page["contacts"] == expected
    assert [list(row) for row in page["contacts"]] == [list(row) for row in expected]
    # 12300 == 12300.0 in Python: the types must match too.
    assert [[type(v) for v in row.values()] for row in page["contacts"]] == [
        [type(v) for v in row.values()] for row in expected
    ]
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    # Compact, as both databases write it: byte for byte what Python writes
    # without spaces, ending with a newline as jsonify ends.
    compact = json.dumps(page, ensure_ascii=False, separators=(",", ":"))
    assert answer.get_data(as_text=True) == compact + "\n"


def test_a_page_holds_up_to_ten_thousand_contacts_and_says_where_to_go_on(
    app, client, reader
):
    for number in range(3):
        make_consenting(app, contact_email=f"p{number}@x.example")
    whole = client.get(
        "/api/v1/winback/contacts", query_string={"limit": 10_000}, headers=reader
    )
    assert whole.status_code == 200
    assert len(whole.get_json()["contacts"]) == 3
    assert whole.get_json()["next_cursor"] is None
    first = client.get(
        "/api/v1/winback/contacts", query_string={"limit": 2}, headers=reader
    ).get_json()
    rest = client.get(
        "/api/v1/winback/contacts",
        query_string={"limit": 2, "cursor": first["next_cursor"]},
        headers=reader,
    ).get_json()
    assert [row["contact_email"] for row in first["contacts"] + rest["contacts"]] == [
        f"p{number}@x.example" for number in range(3)
    ]
    assert rest["next_cursor"] is None
    # A last page the list fills exactly is still the last.
    full = client.get(
        "/api/v1/winback/contacts", query_string={"limit": 3}, headers=reader
    ).get_json()
    assert len(full["contacts"]) == 3 and full["next_cursor"] is None


def test_every_export_is_audited_with_who_filters_and_rows(
    app, client, reader, session
):
    make_consenting(app, segment="smb")
    make_consenting(app, segment="smb")
    client.get("/api/v1/winback/contacts.csv?segment=smb", headers=reader).get_data()
    session.rollback()
    [event] = session.scalars(
        select(AuditEvent).where(AuditEvent.kind == "winback.export")
    ).all()
    assert event.detail["filters"] == {"segment": "smb"}
    assert event.detail["rows"] == 2
    assert event.detail["finished"] is True
    assert event.detail["format"] == "csv"
    assert event.detail["token"]


def test_a_json_page_is_audited_with_the_contacts_it_holds(
    app, client, reader, session
):
    for _ in range(3):
        make_consenting(app, segment="smb")
    first = client.get(
        "/api/v1/winback/contacts?segment=smb&limit=2", headers=reader
    ).get_json()
    last = client.get(
        f"/api/v1/winback/contacts?segment=smb&limit=2&cursor={first['next_cursor']}",
        headers=reader,
    ).get_json()
    assert (len(first["contacts"]), len(last["contacts"])) == (2, 1)
    session.rollback()
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.kind == "winback.export")
        .order_by(AuditEvent.id)
    ).all()
    assert [event.detail["rows"] for event in events] == [2, 1]
    assert {event.detail["format"] for event in events} == {"json"}
    assert events[0].detail["filters"] == {"segment": "smb"}


def test_a_json_page_left_midway_is_audited_unfinished_and_frees_its_read(
    app, client, reader, session
):
    """A page goes out as the database sends it: a client that leaves midway
    stops the read (PostgreSQL: the query is cancelled), the page is audited
    with what was written, and the connection serves the next request."""
    from survey.winback.service import JSON_CHUNK

    _bulk_consenting(app, 3 * JSON_CHUNK)
    read: list[bytes] = []

    def leave_midway() -> None:
        response = client.get(
            "/api/v1/winback/contacts",
            query_string={"limit": 3 * JSON_CHUNK},
            headers=reader,
            buffered=False,
        )
        assert response.status_code == 200
        chunks = iter(response.response)
        read.extend([next(chunks), next(chunks)])
        response.close()

    # In a thread: a page that kept its read would wait for it forever.
    client_thread = threading.Thread(target=leave_midway, daemon=True)
    client_thread.start()
    client_thread.join(timeout=30)
    if client_thread.is_alive():  # stuck on the read it left: free the tables
        session.execute(
            sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        pytest.fail("closing the page waited forever on its own unfinished read")
    assert read[0] == b'{"contacts":['
    assert read[1].count(b'"contact_email":') == JSON_CHUNK
    session.rollback()
    [event] = session.scalars(
        select(AuditEvent).where(AuditEvent.kind == "winback.export")
    ).all()
    assert (event.detail["rows"], event.detail["finished"]) == (JSON_CHUNK, False)
    for _ in range(3):  # more than once: every pooled connection must be fit
        whole = client.get(
            "/api/v1/winback/contacts",
            query_string={"limit": 3 * JSON_CHUNK},
            headers=reader,
        )
        assert whole.status_code == 200
        assert len(whole.get_json()["contacts"]) == 3 * JSON_CHUNK


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _bulk_consenting(app, count: int) -> None:
    """Insert ``count`` consenting departures fast (Core, in batches)."""
    from survey.consent import ConsentEvent, rebuild_winback_list

    now = datetime.now(UTC)
    with app.app_context(), db.write_session() as session:
        connection = session.connection()
        for start in range(0, count, 10_000):
            numbers = range(start, min(start + 10_000, count))
            connection.execute(
                Departure.__table__.insert(),
                [
                    {
                        "public_id": f"bulk{n:012d}",
                        "external_id": f"bulk-{n}",
                        "contact_email": f"person{n}@bulk.example",
                        "contact_name": f"Person {n}",
                        "company": f"Company {n}",
                        "mrr_cents": n,
                        "currency": "USD",
                        "cancelled_at": now,
                        "created_at": now,
                        "source": "csv",
                    }
                    for n in numbers
                ],
            )
        ids = dict(
            connection.execute(
                select(Departure.public_id, Departure.id).where(
                    Departure.public_id.like("bulk%")
                )
            ).all()
        )
        events = [
            {
                "departure_id": departure_id,
                "action": "granted",
                "channel": "survey",
                "wording": "Yes",
                "wording_version": "v1",
                "created_at": now,
            }
            for departure_id in ids.values()
        ]
        for start in range(0, len(events), 10_000):
            connection.execute(
                ConsentEvent.__table__.insert(), events[start : start + 10_000]
            )
        assert rebuild_winback_list(session) == count
        session.commit()


def test_exporting_200000_contacts_streams_in_constant_memory(app, reader):
    _bulk_consenting(app, 200_000)
    client = app.test_client()
    response = client.get(
        "/api/v1/winback/contacts.csv", headers=reader, buffered=False
    )
    assert response.status_code == 200
    chunks = iter(response.response)
    header = next(chunks)
    assert header.startswith(b"contact_email,")
    baseline = peak = _rss_bytes()
    rows = 0
    for number, chunk in enumerate(chunks):
        rows += chunk.count(b"\r\n")
        if number % 10 == 0:
            peak = max(peak, _rss_bytes())
    response.close()
    assert rows == 200_000
    growth = (peak - baseline) / 2**20
    assert growth < 50, f"memory grew by {growth:.0f} MB while streaming"


def _listing(session) -> dict[int, tuple[int | None, bool]]:
    """Each departure's listing grant, and whether it holds a withdrawal link."""
    session.rollback()  # a fresh snapshot
    return {
        id: (grant, token is not None)
        for id, grant, token in session.execute(
            select(
                Departure.id, Departure.winback_grant_id, Departure.withdraw_token
            ).order_by(Departure.id)
        )
    }


def test_the_list_kept_with_each_consent_change_is_the_ledgers(
    app, client, reader, session
):
    from survey.consent import ConsentEvent, rebuild_winback_list

    first = make_consenting(app, contact_email="pat@x.example", external_id="p1")
    second = make_consenting(app, contact_email="pat@x.example", external_id="p2")
    erased = make_consenting(app, contact_email="gone@x.example")
    stays = make_consenting(app, contact_email="stays@x.example")
    make_departure(app, contact_email="never@x.example")
    # Pat says no through the second departure: both leave the list; then yes
    # again on the first one's page: that one is back.
    assert submit(client, withdraw_path(app, second), {}).status_code == 200
    page2 = survey_path(app, first) + "/more"
    assert submit(client, page2, {"winback_consent": "y"}).status_code == 303
    eraser = auth(make_token(app, "contacts:erase"))
    assert (
        client.delete("/api/v1/contacts/gone@x.example", headers=eraser).status_code
        == 200
    )
    regrant = session.scalar(
        select(func.max(ConsentEvent.id)).where(ConsentEvent.departure_id == first.id)
    )
    kept = _listing(session)
    assert kept[first.id] == (regrant, True)
    assert kept[second.id] == kept[erased.id] == (None, False)
    assert kept[stays.id][0] is not None
    assert sorted(listed(client, reader)) == ["pat@x.example", "stays@x.example"]
    # Worked out again from the ledger alone, the list is the same.
    with app.app_context(), db.write_session() as writer:
        writer.execute(update(Departure).values(winback_grant_id=None))
        assert rebuild_winback_list(writer) == 2
        writer.commit()
    assert _listing(session) == kept


def test_the_lists_links_outlive_a_key_rotation_once_rebuilt(app, client, reader):
    make_consenting(app, contact_email="kim@x.example")

    def link() -> str:
        [row] = client.get("/api/v1/winback/contacts", headers=reader).get_json()[
            "contacts"
        ]
        return row["unsubscribe_url"].removeprefix("http://survey.test")

    signed_then = link()
    old_key = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "a new key of more than thirty-two characters"
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    assert client.get(signed_then).status_code == 200
    app.config["SECRET_KEY_FALLBACKS"] = []  # the old key dropped
    assert client.get(signed_then).status_code == 404
    done = app.test_cli_runner().invoke(args=["contacts", "rebuild-winback"])
    assert done.exit_code == 0, done.output
    assert "1 contact(s) on the win-back list" in done.output
    signed_now = link()
    assert signed_now != signed_then
    assert client.get(signed_now).status_code == 200

"""Command line: CSV import, tokens, demo, the outbox worker."""

from __future__ import annotations

import _thread
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from survey import db
from survey.api.auth import ApiToken
from survey.branding.models import Brand
from survey.departures.models import Departure
from survey.outbox import OutboxMessage
from survey.staff.models import StaffUser
from tests.factories import auth, login, make_departure

HEADER = (
    "external_id,company,contact_name,contact_email,plan,mrr_cents,currency,segment,"
    "cancelled_at\n"
)


def count(session, model) -> int:
    session.rollback()
    return session.scalar(select(func.count()).select_from(model))


def write_csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "departures.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_import_takes_good_rows_and_reports_bad_ones_by_line(runner, tmp_path, session):
    path = write_csv(
        tmp_path,
        "c1,Acme,Ada,ada@acme.example,growth,29900,EUR,smb,2026-11-01T09:00:00Z\n"
        "c2,Bad Mail,Bob,not-an-email,growth,100,USD,smb,\n"
        'c3,"Multi\nline Inc",Cy,cy@multi.example,,,,,\n'
        "c4,Neg,Di,di@neg.example,growth,-5,USD,smb,\n"
        "c5,Money,Ed,ed@money.example,growth,12,XXX1,smb,yesterday\n"
        ",NoId,Fay,fay@noid.example,,,,,\n",
    )
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert "2 imported, 0 already known, 4 rejected." in result.stdout
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"{path}:3: contact_email: Not a valid email address")
    assert errors[1].startswith(f"{path}:6: mrr_cents: Must be 0 or more.")
    assert errors[2].startswith(f"{path}:7: currency: Unknown currency")
    assert "cancelled_at: Not an ISO 8601" in errors[2]
    assert errors[3] == f"{path}:8: external_id: This field is required."
    imported = session.scalars(select(Departure).order_by(Departure.external_id)).all()
    assert [(d.external_id, d.source) for d in imported] == [
        ("c1", "csv"),
        ("c3", "csv"),
    ]
    assert imported[0].mrr_cents == 29900 and imported[0].currency == "EUR"
    assert imported[1].company == "Multi\nline Inc"
    assert count(session, OutboxMessage) == 2


def test_line_numbers_count_blank_lines_and_unknown_columns_are_reported(
    runner, tmp_path, session
):
    path = write_csv(
        tmp_path,
        "\n"
        "c1,Acme,Ada,ada@acme.example,growth,1,EUR,smb,,x\n"
        "\n\n"
        "c2,Old,Bo,bo@old.example,growth,1,EUR,smb,0001-01-01T00:00:00+05:00,y\n",
        header=HEADER.strip() + ",favourite_colour\n",
    )
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert "1 imported, 0 already known, 1 rejected." in result.stdout
    errors = result.stderr.splitlines()
    assert errors[0] == (
        f"{path}: note: columns not imported (not departure fields): favourite_colour"
    )
    assert errors[1].startswith(f"{path}:6: cancelled_at: Must be between")


def test_a_cell_holding_a_nul_rejects_its_row_alone(runner, tmp_path, session):
    path = write_csv(
        tmp_path,
        "n1,Null\x00Co,Ada,ada@acme.example,growth,100,USD,smb,\n"
        "n2,Fine,Bob,bob@acme.example,growth,100,USD,smb,\n",
    )
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert "1 imported, 0 already known, 1 rejected." in result.stdout
    assert result.stderr.startswith(f"{path}:2: company: Must not contain control")
    assert session.scalars(select(Departure.external_id)).all() == ["n2"]


def test_a_quote_left_open_stops_the_import_and_says_so(runner, tmp_path, session):
    path = write_csv(
        tmp_path,
        "q1,Fine,Ada,ada@acme.example,,,,,\n"
        'q2,"Open quote,Bob,bob@acme.example,,,,,\n'
        "q3,Never read,Cy,cy@acme.example,,,,,\n",
    )
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert "1 imported, 0 already known, 1 rejected." in result.stdout
    assert result.stderr.startswith(
        f"{path}:3: unreadable row (unexpected end of data)"
    )
    assert "nothing from here on was imported" in result.stderr
    assert session.scalars(select(Departure.company)).all() == ["Fine"]


def test_a_stray_quote_rejects_its_row_alone(runner, tmp_path, session):
    path = write_csv(
        tmp_path,
        'r1,"Acme" Inc,Ada,ada@acme.example,,,,,\nr2,Fine,Bob,bob@acme.example,,,,,\n',
    )
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert "1 imported, 0 already known, 1 rejected." in result.stdout
    assert result.stderr.startswith(f"{path}:2: unreadable row (")
    assert "nothing from here on" not in result.stderr
    assert session.scalars(select(Departure.external_id)).all() == ["r2"]


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ("company\n", "Acme\n", "lacks external_id, contact_email"),
        (
            "external_id,contact_email,contact_email\n",
            "c1,a@b.example,x@y.example\n",
            "contact_email more than once",
        ),
        # A quote left open in the header: no column names at all.
        ('"external_id,contact\n', "c1,a@b.example\n", "the header row cannot be read"),
    ],
)
def test_a_header_without_the_columns_needed_is_refused(
    runner, tmp_path, session, header, body, message
):
    path = write_csv(tmp_path, body, header=header)
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert message in result.stderr
    assert count(session, Departure) == 0


def test_a_long_import_commits_as_it_goes(runner, tmp_path, session):
    rows = "".join(f"r{n},Co,Na,p{n}@example.com,,,,,\n" for n in range(1203))
    result = runner.invoke(
        args=["departures", "import", str(write_csv(tmp_path, rows))]
    )
    assert result.exit_code == 0, result.output
    assert "1203 imported" in result.stdout
    assert count(session, Departure) == 1203


def test_reimporting_the_same_file_creates_nothing(runner, tmp_path, session):
    path = write_csv(tmp_path, "c1,Acme,Ada,ada@acme.example,growth,100,USD,smb,\n")
    assert runner.invoke(args=["departures", "import", str(path)]).exit_code == 0
    again = runner.invoke(args=["departures", "import", str(path)])
    assert again.exit_code == 0
    assert "0 imported, 1 already known, 0 rejected." in again.stdout
    assert count(session, Departure) == 1
    assert count(session, OutboxMessage) == 1


def test_a_file_that_is_not_text_is_refused(runner, tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x00garbage")
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 1
    assert "not a UTF-8 text file" in result.output


def good_rows(first: int, last: int) -> str:
    return "".join(f"r{n},Co,Na,p{n}@example.com,,,,,\n" for n in range(first, last))


def assert_stopped(result, imported: int, where: str) -> None:
    """The import stopped as ``where`` says, after committing ``imported`` rows."""
    assert result.exit_code == 1, result.output
    assert f"{imported} imported, 0 already known, 0 rejected." in result.stdout
    assert "invitations queued" in result.stdout
    assert result.stderr.startswith(where)


def departures_and_invitations(session) -> tuple[int, int]:
    return count(session, Departure), count(session, OutboxMessage)


def test_a_byte_that_is_not_utf8_stops_the_import_on_its_line(
    runner, tmp_path, session
):
    path = tmp_path / "departures.csv"
    # Lines 2 to 601 are good, line 602 holds a Latin-1 "é", 603 is never read.
    path.write_bytes(
        (HEADER + good_rows(0, 600)).encode()
        + "x1,Café,Na,x1@example.com,,,,,\n".encode("latin-1")
        + good_rows(600, 601).encode()
    )
    result = runner.invoke(args=["departures", "import", str(path)])
    assert_stopped(
        result,
        600,
        f"{path}:602: import stopped: not UTF-8 text: byte 0xE9 at column 7",
    )
    assert "Stopped at line 602" in result.stdout
    assert departures_and_invitations(session) == (600, 600)
    assert session.scalar(select(func.max(OutboxMessage.kind))) == "invitation"


def test_a_byte_order_mark_is_not_part_of_the_first_column(runner, tmp_path, session):
    path = tmp_path / "departures.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + good_rows(0, 1)).encode())
    result = runner.invoke(args=["departures", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert session.scalars(select(Departure.external_id)).all() == ["r0"]


@pytest.fixture
def refused_company(app, session) -> Iterator[str]:
    """Have the database, not validation, refuse departures of one company."""
    with app.app_context(), db.engine().begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER test_refused BEFORE INSERT ON departures "
                    "WHEN NEW.company = 'Refused' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
            undo = "DROP TRIGGER test_refused"
        else:
            connection.execute(
                text(
                    "ALTER TABLE departures ADD CONSTRAINT test_refused "
                    "CHECK (company <> 'Refused')"
                )
            )
            undo = "ALTER TABLE departures DROP CONSTRAINT test_refused"
    yield "Refused"
    session.rollback()  # its reads would hold up the ALTER TABLE
    with app.app_context(), db.engine().begin() as connection:
        connection.execute(text(undo))


def test_a_database_error_reports_what_was_committed_before_it(
    runner, tmp_path, session, refused_company
):
    # Rows on lines 2-501 are the first chunk; line 552 fails in the second.
    rows = good_rows(0, 550) + f"x1,{refused_company},Na,x1@example.com,,,,,\n"
    path = write_csv(tmp_path, rows + good_rows(550, 600))
    result = runner.invoke(args=["departures", "import", str(path)])
    assert_stopped(
        result, 500, f"{path}:502: import stopped: database error at line 552 ("
    )
    assert departures_and_invitations(session) == (500, 500)


def test_a_busy_database_stops_the_import_between_chunks(make_app, tmp_path):
    app = make_app(SQLITE_BUSY_TIMEOUT_SECONDS=0.2)
    with app.app_context():
        if db.engine().dialect.name != "sqlite":
            pytest.skip("the write queue exists on SQLite only")
    fifo = tmp_path / "departures.csv"
    os.mkfifo(fifo)
    done = threading.Event()

    def feed() -> None:
        """Send the first chunk; hold the write lock while the second comes."""
        with fifo.open("w") as pipe:
            pipe.write(HEADER + good_rows(0, 500))
            pipe.flush()
            with app.app_context():
                deadline = time.monotonic() + 10
                with db.new_session() as session:
                    while count(session, Departure) < 500:
                        assert time.monotonic() < deadline, "no first chunk"
                        time.sleep(0.01)
                # The import waits for its next line: it must not hold the
                # lock meanwhile, so another writer can take it.
                with db.write_session():
                    pipe.write(good_rows(500, 600))
                    pipe.close()
                    done.wait(10)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    result = app.test_cli_runner().invoke(args=["departures", "import", str(fifo)])
    done.set()
    feeder.join(10)
    assert_stopped(
        result, 500, f"{fifo}:502: import stopped: database error at line 502 ("
    )
    with app.app_context(), db.new_session() as session:
        assert departures_and_invitations(session) == (500, 500)


def test_ctrl_c_stops_the_import_with_what_was_committed(make_app, tmp_path):
    app = make_app()
    fifo = tmp_path / "departures.csv"
    os.mkfifo(fifo)

    def feed() -> None:
        """Send the first chunk; once it is in, press Ctrl-C and send more."""
        with fifo.open("w") as pipe:
            pipe.write(HEADER + good_rows(0, 500))
            pipe.flush()
            with app.app_context(), db.new_session() as session:
                deadline = time.monotonic() + 10
                while count(session, Departure) < 500:
                    assert time.monotonic() < deadline, "no first chunk"
                    time.sleep(0.01)
            _thread.interrupt_main()  # as a terminal's Ctrl-C reaches the import
            pipe.write(good_rows(500, 600))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    result = app.test_cli_runner().invoke(args=["departures", "import", str(fifo)])
    feeder.join(10)
    assert_stopped(result, 500, f"{fifo}:502: import stopped: interrupted (Ctrl-C);")
    with app.app_context(), db.new_session() as session:
        assert departures_and_invitations(session) == (500, 500)


def test_tokens_create_prints_the_secret_once_and_stores_a_hash(
    runner, client, session
):
    result = runner.invoke(
        args=["tokens", "create", "--name", "reports", "--scope", "responses:read"]
    )
    assert result.exit_code == 0
    secret = result.stdout.strip()
    assert secret.startswith("es_")
    [token] = session.scalars(select(ApiToken)).all()
    assert token.token_hash != secret and secret not in token.token_hash
    assert token.scopes == ["responses:read"]
    response = client.get("/api/v1/departures/none", headers=auth(secret))
    assert response.status_code == 404  # authenticated: the departure is what's missing


def test_tokens_create_gives_the_insights_scope(runner, client, session):
    result = runner.invoke(
        args=["tokens", "create", "--name", "bi", "--scope", "insights:read"]
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert session.scalars(select(ApiToken.scopes)).one() == ["insights:read"]
    answer = client.get("/api/v1/insights", headers=auth(secret))
    assert answer.status_code == 200
    assert answer.get_json()["funnel"]["departed"] == 0


def test_tokens_create_refuses_unknown_scopes(runner, session):
    result = runner.invoke(args=["tokens", "create", "--name", "x", "--scope", "root"])
    assert result.exit_code == 2
    assert "Unknown scope(s): root" in result.output
    assert count(session, ApiToken) == 0


def test_tokens_create_refuses_a_name_too_long_to_store(runner, session):
    result = runner.invoke(
        args=["tokens", "create", "--name", "x" * 201, "--scope", "winback:read"]
    )
    assert result.exit_code == 2
    assert "at most 200 characters" in result.output
    assert count(session, ApiToken) == 0


def test_demo_fills_an_empty_database_once_and_prints_two_links(runner, session):
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0
    links = [line.strip() for line in first.stdout.splitlines() if "/s/" in line]
    assert len(links) == 2
    filled = count(session, Departure)
    assert filled >= 20
    # Who is asking: the demo's own brand, logo included.
    brand = session.scalar(select(Brand))
    assert (brand.company_name, brand.sender_name) == (
        "Northwind Analytics",
        "Priya at Northwind Analytics",
    )
    assert brand.logo is not None
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0
    assert count(session, Departure) == filled


def test_demo_leaves_a_database_with_real_departures_alone(app, runner, session):
    make_departure(app, external_id="real-customer-1")
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0
    assert "not demo data" in result.stdout
    assert "/s/" not in result.stdout  # no real customer's link
    assert "password" not in result.stdout
    assert count(session, Departure) == 1
    assert count(session, StaffUser) == 0


def test_demo_prints_an_admin_who_can_sign_in_and_finds_a_queue(runner, client):
    printed = runner.invoke(args=["demo"]).stdout
    email = re.search(r"email:\s+(\S+)", printed).group(1)
    password = re.search(r"password:\s+(\S+)", printed).group(1)
    assert login(client, email, password).headers["Location"] == "/review"
    queue = client.get("/review").get_data(as_text=True)
    assert queue.count('<input type="checkbox" name="items"') >= 5
    # Each run gives a new password; the old one stops working.
    runner.invoke(args=["demo"])
    assert login(app_client(client), email, password).status_code == 200


def app_client(client):
    return client.application.test_client()


def test_outbox_send_once_drains_and_exits(runner, app, session):
    assert runner.invoke(args=["demo"]).exit_code == 0
    pending = select(func.count()).where(OutboxMessage.status != "sent")
    queued = session.scalar(pending)
    assert queued
    sent = select(func.count()).where(OutboxMessage.status == "sent")
    sent_before = session.scalar(sent)
    result = runner.invoke(args=["outbox", "send", "--once"])
    assert result.exit_code == 0
    session.rollback()
    assert session.scalar(pending) == 0
    # With no mail server, each message sent is an .eml file (the reminders
    # the worker queued on its way included).
    sent_now = session.scalar(sent) - sent_before
    assert sent_now >= queued
    assert len(list((Path(app.instance_path) / "mail").glob("*.eml"))) == sent_now


def test_tokens_list_and_revoke(runner, client, session):
    secret = runner.invoke(
        args=["tokens", "create", "--name", "reports", "--scope", "responses:read"]
    ).stdout.strip()
    listed = runner.invoke(args=["tokens", "list"])
    assert listed.exit_code == 0
    assert f"{secret[:10]}…  reports  responses:read" in listed.stdout
    assert secret not in listed.stdout

    too_short = runner.invoke(args=["tokens", "revoke", secret[:4]])
    assert too_short.exit_code == 1
    revoked = runner.invoke(args=["tokens", "revoke", secret[:10]])
    assert revoked.exit_code == 0, revoked.output
    answer = client.get("/api/v1/departures/none", headers=auth(secret))
    assert answer.status_code == 401
    assert "revoked" in runner.invoke(args=["tokens", "list"]).stdout
    again = runner.invoke(args=["tokens", "revoke", secret[:10]])
    assert again.exit_code == 1
    assert "No live token" in again.output


def test_outbox_list_and_retry_of_failed_messages(make_app, session):
    from tests.conftest import free_port
    from tests.factories import make_departure

    app = make_app(
        MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), OUTBOX_MAX_ATTEMPTS=1
    )
    runner = app.test_cli_runner()
    departure = make_departure(app)
    with app.app_context():  # the commands run in the current app's context
        sent = runner.invoke(args=["outbox", "send", "--once"])
        assert "0 sent, 0 to retry, 1 failed." in sent.stdout, sent.output
        failed = runner.invoke(args=["outbox", "list", "--status", "failed"])
        assert failed.exit_code == 0
        assert f"invitation  {departure.contact_email}  attempts=1" in failed.stdout
        assert "Connection refused" in failed.stdout
        assert "/s/" not in failed.stdout  # no bodies, no links
        assert runner.invoke(args=["outbox", "list", "--status", "sent"]).stdout == ""

        assert runner.invoke(args=["outbox", "retry"]).exit_code == 2
        retried = runner.invoke(args=["outbox", "retry", "--all-failed"])
        assert "1 message(s) queued again." in retried.stdout
        [message] = messages_in(session)
        assert (message.status, message.attempts) == ("pending", 0)
        # A pending or sent message is never "retried" into a second send.
        again = runner.invoke(args=["outbox", "retry", str(message.id)])
        assert "0 message(s)" in again.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["outbox", "retry", "2147483648"],
        ["outbox", "retry", "0"],
        ["outbox", "list", "--limit", "99999999999"],
        ["outbox", "list", "--limit", "0"],
    ],
)
def test_outbox_commands_refuse_numbers_out_of_range(runner, args):
    result = runner.invoke(args=args)
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.output


def messages_in(session) -> list[OutboxMessage]:
    session.rollback()
    return list(session.scalars(select(OutboxMessage)))

"""Staff accounts: the users commands, signing in and out, throttling, admins."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import func, select

from survey.staff.models import LoginFailure, StaffUser
from tests.factories import (
    PASSWORD,
    csrf_token,
    hidden_fields,
    login,
    make_consenting,
    make_user,
    submit,
)

HOME = "/review"  # where a CSM lands after signing in


def user_named(session, email: str) -> StaffUser:
    session.rollback()
    return session.scalar(select(StaffUser).where(StaffUser.email == email))


def without_csrf(html: str) -> str:
    return re.sub(r'name="csrf_token" type="hidden" value="[^"]+"', "", html)


# --- command line -----------------------------------------------------------


def test_users_create_prints_a_generated_password_once(runner, client, session):
    result = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "Ann@Staff.Example",
            "--name",
            "Ann",
            "--role",
            "csm",
        ]
    )
    assert result.exit_code == 0, result.output
    password = result.stdout.strip()
    assert len(password) >= 16
    user = user_named(session, "ann@staff.example")
    assert user.role == "csm" and user.active
    assert password not in user.password_hash
    assert user.password_hash.startswith("$argon2id$")
    assert login(client, "ann@staff.example", password).status_code == 302


def test_users_create_reads_the_password_from_stdin(runner, client):
    result = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "bo@staff.example",
            "--name",
            "Bo",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input="a long enough secret\n",
    )
    assert result.exit_code == 0, result.output
    assert "a long enough secret" not in result.stdout
    assert login(client, "bo@staff.example", "a long enough secret").status_code == 302


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "nope", "--name", "X", "--role", "csm"], "Not a valid email"),
        (
            ["--email", "x@staff.example", "--name", "X", "--role", "root"],
            "Invalid value",
        ),
        (
            ["--email", "x@staff.example", "--name", "X" * 201, "--role", "csm"],
            "at most 200 characters",
        ),
    ],
)
def test_users_create_refuses_bad_input(runner, args, message):
    result = runner.invoke(args=["users", "create", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_users_create_refuses_a_short_password(runner):
    result = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "c@staff.example",
            "--name",
            "C",
            "--role",
            "csm",
            "--password-stdin",
        ],
        input="short\n",
    )
    assert result.exit_code == 1
    assert "at least 12 characters" in result.output


def test_users_list_and_deactivate_end_the_sessions(app, runner, client):
    user = make_user(app, "csm")
    login(client, user.email)
    assert client.get("/account").status_code == 200
    listed = runner.invoke(args=["users", "list"]).stdout
    assert f"{user.email}  {user.name}  csm  active" in listed
    result = runner.invoke(args=["users", "deactivate", user.email])
    assert result.exit_code == 0
    assert client.get("/account").status_code == 302  # signed out
    assert "deactivated" in runner.invoke(args=["users", "list"]).stdout
    assert login(client, user.email).status_code == 200  # refused


# --- signing in ---------------------------------------------------------------


def test_signing_in_and_out(app, client):
    user = make_user(app, "csm")
    assert client.get("/account").status_code == 302
    response = login(client, user.email)
    assert response.status_code == 302
    assert response.headers["Location"] == HOME
    page = client.get("/account").get_data(as_text=True)
    assert user.email in page
    kept = client.get_cookie("session").value
    client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert client.get("/account").status_code == 302
    # The cookie from before signing out is worth nothing: the session ended
    # on the server.
    other = app.test_client()
    other.set_cookie("session", kept)
    assert other.get("/account").status_code == 302


def test_the_session_cookie_is_http_only_and_same_site(app, client):
    user = make_user(app, "csm")
    response = login(client, user.email)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_the_session_changes_at_sign_in(app, client):
    user = make_user(app, "csm")
    page = client.get("/login").get_data(as_text=True)
    before = client.get_cookie("session").value
    client.post(
        "/login",
        data={
            "csrf_token": csrf_token(page),
            "email": user.email,
            "password": PASSWORD,
        },
    )
    after = client.get_cookie("session").value
    assert after != before
    stale = app.test_client()
    stale.set_cookie("session", before)
    assert stale.get("/account").status_code == 302


def test_unknown_address_and_wrong_password_look_the_same(app, client):
    user = make_user(app, "csm")
    unknown = login(client, "nobody@staff.example", "whatever it is")
    wrong = login(client, user.email, "not the password")
    assert unknown.status_code == wrong.status_code == 200
    # Same page, but for the address typed back into the form.
    assert without_csrf(unknown.get_data(as_text=True)).replace(
        "nobody@staff.example", user.email
    ) == without_csrf(wrong.get_data(as_text=True))
    assert "Wrong email address or password." in unknown.get_data(as_text=True)


def test_ten_failures_lock_the_address_until_the_window_passes(app, client, clock):
    user = make_user(app, "csm")
    for _ in range(10):
        assert "Wrong email" in login(client, user.email, "guess").get_data(
            as_text=True
        )
    locked = login(client, user.email)
    assert locked.status_code == 200
    assert "Too many failed sign-ins for this address" in locked.get_data(as_text=True)
    clock.advance(minutes=14)
    assert login(client, user.email).status_code == 200  # still locked
    clock.advance(minutes=1, seconds=1)
    assert login(client, user.email).status_code == 302


def test_a_lock_out_looks_the_same_for_an_unknown_address(app, client):
    for _ in range(10):
        login(client, "ghost@staff.example", "guess")
    page = login(client, "ghost@staff.example", "guess").get_data(as_text=True)
    assert "Too many failed sign-ins for this address" in page


def test_too_many_failures_from_one_address_answer_429(make_app, clock):
    app = make_app(LOGIN_IP_MAX_FAILURES=3)
    client = app.test_client()
    for number in range(3):
        assert login(client, f"guess{number}@staff.example", "guess").status_code == 200
    refused = login(client, "other@staff.example", "guess")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    clock.advance(minutes=16)
    assert login(client, "other@staff.example", "guess").status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "/\tevil",
        "evil.example",
    ],
)
def test_next_only_leads_to_our_own_pages(app, client, target):
    user = make_user(app, "csm")
    response = login(client, user.email, next=target)
    assert response.headers["Location"] == HOME


def test_next_leads_back_to_the_page_asked_for(app, client):
    user = make_user(app, "csm")
    sent = client.get("/account")
    assert sent.headers["Location"].startswith("/login?next=")
    response = login(client, user.email, next="/account?tab=1")
    assert response.headers["Location"] == "/account?tab=1"


def test_an_old_hash_is_replaced_at_sign_in(make_app, session):
    old_app = make_app(PASSWORD_TIME_COST=1, PASSWORD_MEMORY_KIB=8 * 1024)
    user = make_user(old_app, "csm")
    new_app = make_app(PASSWORD_TIME_COST=2, PASSWORD_MEMORY_KIB=16 * 1024)
    assert login(new_app.test_client(), user.email).status_code == 302
    renewed = user_named(session, user.email).password_hash
    assert renewed != user.password_hash
    assert "m=16384,t=2" in renewed
    assert login(new_app.test_client(), user.email).status_code == 302


def test_changing_ones_password(app, client):
    user = make_user(app, "marketing")
    login(client, user.email)
    wrong = submit(
        client,
        "/account",
        {"current_password": "nope", "new_password": "another long secret"},
    )
    assert "not your current password" in wrong.get_data(as_text=True)
    done = submit(
        client,
        "/account",
        {"current_password": PASSWORD, "new_password": "another long secret"},
    )
    assert done.status_code == 302
    assert (
        login(app.test_client(), user.email, "another long secret").status_code == 302
    )


def test_changing_ones_password_signs_out_every_other_session(app, client):
    user = make_user(app, "csm")
    elsewhere = app.test_client()
    login(elsewhere, user.email)
    login(client, user.email)
    changed = submit(
        client,
        "/account",
        {"current_password": PASSWORD, "new_password": "a brand new secret"},
    )
    assert changed.status_code == 302
    assert client.get("/account").status_code == 200  # this one goes on
    assert elsewhere.get("/account").status_code == 302  # that one is out


# --- admins manage users --------------------------------------------------------


def test_a_new_user_is_offered_the_csm_role_not_admin(app, client):
    login(client, make_user(app, "admin").email)
    page = client.get("/admin/users").get_data(as_text=True)
    form = page[page.index("Add a staff user") :]
    assert re.search(r'<option value="csm" selected>', form)
    assert not re.search(r'<option value="admin" selected>', form)


def test_an_admin_adds_a_user_and_sees_the_password_once(app, client):
    admin = make_user(app, "admin")
    login(client, admin.email)
    page = submit(
        client,
        "/admin/users",
        {
            "email": "new@staff.example",
            "name": "New <b>Person</b>",
            "role": "marketing",
        },
    ).get_data(as_text=True)
    password = re.search(r'<code class="secret">([^<]+)</code>', page).group(1)
    assert "New &lt;b&gt;Person&lt;/b&gt;" in page
    assert password not in client.get("/admin/users").get_data(as_text=True)
    assert login(app.test_client(), "new@staff.example", password).status_code == 302


def test_an_admin_deactivates_a_user_who_is_signed_out_at_once(app, client):
    admin = make_user(app, "admin")
    csm = make_user(app, "csm")
    csm_client = app.test_client()
    login(csm_client, csm.email)
    login(client, admin.email)
    page = client.get("/admin/users").get_data(as_text=True)
    client.post(
        f"/admin/users/{csm.id}",
        data={"csrf_token": csrf_token(page), "action": "deactivate", "role": "csm"},
    )
    assert csm_client.get("/account").status_code == 302
    assert "deactivated" in client.get("/admin/users").get_data(as_text=True)


def test_the_last_admin_stays(app, client, session):
    admin = make_user(app, "admin")
    login(client, admin.email)
    page = client.get("/admin/users").get_data(as_text=True)
    for action, role in (("deactivate", "admin"), ("role", "csm")):
        client.post(
            f"/admin/users/{admin.id}",
            data={"csrf_token": csrf_token(page), "action": action, "role": role},
        )
    kept = user_named(session, admin.email)
    assert (kept.active, kept.role) == (True, "admin")


def test_the_command_line_keeps_the_last_admin_too(app, runner, session):
    admin = make_user(app, "admin")
    make_user(app, "csm")
    refused = runner.invoke(args=["users", "deactivate", admin.email])
    assert refused.exit_code == 1
    assert "last active admin" in refused.output
    assert user_named(session, admin.email).active
    make_user(app, "admin")
    done = runner.invoke(args=["users", "deactivate", admin.email])
    assert done.exit_code == 0, done.output
    assert not user_named(session, admin.email).active


def test_the_last_admin_is_told_why_they_stay(app, client, session):
    admin = make_user(app, "admin")
    assert login(client, admin.email).status_code == 302
    page = client.get("/admin/users").get_data(as_text=True)
    refused = client.post(
        f"/admin/users/{admin.id}",
        data={"csrf_token": csrf_token(page), "action": "role", "role": "csm"},
        follow_redirects=True,
    )
    assert "The last active admin cannot be deactivated" in refused.get_data(
        as_text=True
    )
    assert user_named(session, admin.email).role == "admin"


def test_parallel_guesses_cannot_slip_past_the_lock_out(app, session):
    user = make_user(app, "csm")
    pages = []
    for _ in range(30):
        guesser = app.test_client()
        pages.append(
            (guesser, csrf_token(guesser.get("/login").get_data(as_text=True)))
        )
    barrier = threading.Barrier(len(pages))
    answers: list[str] = []

    def guess(client, token) -> None:
        barrier.wait()
        answer = client.post(
            "/login",
            data={"csrf_token": token, "email": user.email, "password": "guess"},
        )
        answers.append(answer.get_data(as_text=True))

    threads = [threading.Thread(target=guess, args=pair) for pair in pages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    checked = sum("Wrong email address or password." in page for page in answers)
    assert checked == 10
    session.rollback()
    assert (
        session.scalar(select(func.count()).where(LoginFailure.email == user.email))
        == 10
    )


def test_an_admin_gives_a_user_a_new_password_shown_once(app, client):
    admin = make_user(app, "admin")
    forgetful = make_user(app, "marketing")
    signed_in = app.test_client()
    login(signed_in, forgetful.email)
    login(client, admin.email)
    page = client.get("/admin/users").get_data(as_text=True)
    shown = client.post(
        f"/admin/users/{forgetful.id}",
        data={"csrf_token": csrf_token(page), "action": "reset", "role": "marketing"},
    ).get_data(as_text=True)
    password = re.search(r'<code class="secret">([^<]+)</code>', shown).group(1)
    assert password not in client.get("/admin/users").get_data(as_text=True)
    assert signed_in.get("/account").status_code == 302  # old sessions end
    assert login(app.test_client(), forgetful.email, password).status_code == 302
    assert login(app.test_client(), forgetful.email).status_code == 200  # old one


def test_an_unknown_role_is_refused_clearly(app, client, session):
    admin = make_user(app, "admin")
    csm = make_user(app, "csm")
    login(client, admin.email)
    page = client.get("/admin/users").get_data(as_text=True)
    refused = client.post(
        f"/admin/users/{csm.id}",
        data={"csrf_token": csrf_token(page), "action": "role", "role": "root"},
    )
    assert refused.status_code == 422
    assert "Choose a role" in refused.get_data(as_text=True)
    assert user_named(session, csm.email).role == "csm"


def test_staff_errors_keep_the_staff_navigation(app, client):
    login(client, make_user(app, "csm").email)
    forbidden = client.get("/admin/users")
    assert forbidden.status_code == 403
    html = forbidden.get_data(as_text=True)
    assert "Not open to your role" in html
    assert 'href="/review"' in html  # the way back, not a dead end
    missing = client.get("/review/not-an-item")
    assert missing.status_code == 404
    assert 'href="/review"' in missing.get_data(as_text=True)
    # A customer's page stays the customer's, whoever opens it.
    link = client.get("/s/not-a-real-link")
    assert link.status_code == 404
    assert 'href="/review"' not in link.get_data(as_text=True)


def test_a_failure_on_a_staff_page_keeps_the_staff_navigation(make_app):
    app = make_app()

    @app.get("/review/fails")
    def fails():
        raise RuntimeError("kaboom")

    client = app.test_client()
    login(client, make_user(app, "csm").email)
    failed = client.get("/review/fails")
    assert failed.status_code == 500
    html = failed.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in html
    assert 'href="/review"' in html and "kaboom" not in html


def test_an_error_for_someone_signed_out_has_no_staff_navigation(client):
    page = client.get("/no-such-page")
    assert page.status_code == 404
    html = page.get_data(as_text=True)
    assert "Page not found" in html
    assert 'href="/review"' not in html


@pytest.mark.parametrize(
    ("change", "then"),
    [({"action": "role", "role": "csm"}, "csm"), ({"action": "deactivate"}, None)],
)
def test_an_admin_confirms_before_giving_up_their_own_access(
    app, client, session, change, then
):
    me = make_user(app, "admin", name="Ada Admin")
    make_user(app, "admin")  # someone to give it back
    login(client, me.email)
    page = client.get("/admin/users").get_data(as_text=True)
    asked = client.post(
        f"/admin/users/{me.id}", data={"csrf_token": csrf_token(page), **change}
    )
    assert asked.status_code == 200
    html = asked.get_data(as_text=True)
    assert "Give up your own admin access?" in html
    if then:  # the role by its label, not its code
        assert "make yourself <strong>CSM (review queue, insights)</strong>" in html
        assert ">Make me CSM</button>" in html
    assert user_named(session, me.email).role == "admin"  # nothing yet
    assert user_named(session, me.email).active
    done = client.post(
        f"/admin/users/{me.id}",
        data={**hidden_fields(html), **change, "confirmed": "yes"},
    )
    assert done.status_code == 302
    assert done.headers["Location"] != "/admin/users"  # not onto a 403
    user = user_named(session, me.email)
    if then:
        assert user.role == then
    else:
        assert not user.active


def test_an_admin_changes_someone_elses_role_without_a_question(app, client, session):
    csm = make_user(app, "csm")
    login(client, make_user(app, "admin").email)
    page = client.get("/admin/users").get_data(as_text=True)
    done = client.post(
        f"/admin/users/{csm.id}",
        data={"csrf_token": csrf_token(page), "action": "role", "role": "marketing"},
    )
    assert done.status_code == 302
    assert user_named(session, csm.email).role == "marketing"
    users = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "is now Marketing (win-back list)." in users


@pytest.mark.parametrize(
    ("page", "data", "link"),
    [
        (
            "/admin/users",
            {"email": "not an address", "name": "Nora", "role": "csm"},
            "email",
        ),
        (
            "/admin/webhooks",
            {"url": "ftp://x", "events": ["departure.recorded"]},
            "url",
        ),
        ("/account", {"current_password": "", "new_password": "x"}, "current_password"),
        ("/admin/contacts", {"email": "", "action": "export"}, "email"),
    ],
)
def test_a_refused_staff_form_is_summarised_at_its_top(app, client, page, data, link):
    login(client, make_user(app, "admin").email)
    refused = submit(client, page, data)
    html = refused.get_data(as_text=True)
    summary = re.search(r'<div class="error-summary"([^>]*)>(.*?)</div>', html, re.S)
    assert summary, f"no error summary on {page} ({refused.status_code})"
    assert "autofocus" in summary.group(1)
    links = re.findall(r'<a href="#([\w-]+)">', summary.group(2))
    assert link in links
    assert f'id="{link}"' in html  # the link leads to the field


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("since=notadate", "since", None),
        ("until=yesterday&segment=smb", "until", None),
        ("reason=nope", "reason", "Unknown reason code"),
        ("since=2026-12-01&until=2026-11-01", "until", "not after “from”"),
    ],
)
def test_a_hand_typed_csv_link_with_bad_filters_gets_the_win_back_page(
    app, query, field, message
):
    """Not a bare 422 outside the staff layout: the list's own page, with its
    filter form, the summary linking to the field and the field's message."""
    make_consenting(app, segment="smb", contact_email="smb@x.example")
    make_consenting(app, segment="enterprise", contact_email="big@x.example")
    marketing = app.test_client()
    login(marketing, make_user(app, "marketing").email)
    answer = marketing.get(f"/winback/contacts.csv?{query}")
    assert answer.status_code == 422
    assert answer.mimetype == "text/html"
    assert "attachment" not in answer.headers.get("Content-Disposition", "")
    html = answer.get_data(as_text=True)
    assert 'aria-label="Staff"' in html  # the staff layout, its navigation
    assert "<h1>Win-back list</h1>" in html
    assert 'action="/winback" class="filters"' in html
    summary = re.search(r'<div class="error-summary"([^>]*)>(.*?)</div>', html, re.S)
    assert summary and "autofocus" in summary.group(1)
    assert f'<a href="#{field}">' in summary.group(2)
    assert re.search(rf'<ul class="errors" id="{field}-errors">\s*<li>', html)
    if message:
        assert message in html
    # The valid filters still apply, and the download offered works.
    listed = set(re.findall(r"(smb|big)@x\.example", html))
    assert listed == ({"smb"} if "segment=smb" in query else {"smb", "big"})
    [link] = re.findall(r'href="(/winback/contacts\.csv[^"]*)"', html)
    download = marketing.get(link.replace("&amp;", "&"))
    assert download.status_code == 200 and download.mimetype == "text/csv"

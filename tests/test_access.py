"""Who may open what: every staff URL, for every role and for anonymous visitors."""

from __future__ import annotations

import re

import pytest

from tests.factories import (
    csrf_token,
    login,
    make_departure,
    make_user,
    submit,
    survey_path,
)

EVERYONE = {"admin", "csm", "marketing"}
REVIEWERS = {"admin", "csm"}

#: (method, path) -> roles allowed. Placeholders: {item}, {action}, {user}.
ROUTES: dict[tuple[str, str], set[str]] = {
    ("GET", "/account"): EVERYONE,
    ("POST", "/account"): EVERYONE,
    ("POST", "/account/digest"): REVIEWERS,
    ("GET", "/admin/users"): {"admin"},
    ("POST", "/admin/users"): {"admin"},
    ("POST", "/admin/users/{user}"): {"admin"},
    ("GET", "/admin/contacts"): {"admin"},
    ("POST", "/admin/contacts"): {"admin"},
    ("GET", "/review"): REVIEWERS,
    ("POST", "/review/bulk"): REVIEWERS,
    ("GET", "/review/actions"): REVIEWERS,
    ("POST", "/review/actions/{action}/done"): REVIEWERS,
    ("GET", "/review/{item}"): REVIEWERS,
    ("POST", "/review/{item}/assign"): REVIEWERS,
    ("POST", "/review/{item}/status"): REVIEWERS,
    ("POST", "/review/{item}/notes"): REVIEWERS,
    ("POST", "/review/{item}/postmortem"): REVIEWERS,
    ("POST", "/review/{item}/consent"): REVIEWERS,
    # Each form's address, opened (a reload of a refused form): the item page.
    ("GET", "/review/{item}/assign"): REVIEWERS,
    ("GET", "/review/{item}/status"): REVIEWERS,
    ("GET", "/review/{item}/notes"): REVIEWERS,
    ("GET", "/review/{item}/postmortem"): REVIEWERS,
    ("GET", "/review/{item}/consent"): REVIEWERS,
    ("GET", "/winback"): {"admin", "marketing"},
    ("GET", "/winback/contacts.csv"): {"admin", "marketing"},
}

#: Open to all: signing in and out.
PUBLIC_STAFF_ENDPOINTS = {"staff.login", "staff.logout"}
PLACEHOLDERS = {"public_id": "{item}", "action_id": "{action}", "user_id": "{user}"}


def test_every_staff_url_is_in_the_table(app):
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in {"staff", "admin", "review", "winback"}:
            continue
        if rule.endpoint in PUBLIC_STAFF_ENDPOINTS:
            continue
        path = re.sub(
            r"<(?:[^:>]+:)?(\w+)>", lambda m: PLACEHOLDERS[m.group(1)], rule.rule
        )
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((method, path))
    assert found == set(ROUTES)


@pytest.fixture
def world(app):
    """A departure in the queue with a postmortem action item, and a user."""
    departure = make_departure(app)
    submit(app.test_client(), survey_path(app, departure), {"reason": "switched"})
    admin = make_user(app, "admin")
    client = app.test_client()
    login(client, admin.email)
    page = f"/review/{departure.public_id}"
    html = client.get(page).get_data(as_text=True)
    client.post(
        f"{page}/postmortem",
        data={
            "csrf_token": csrf_token(html),
            "action_items-0-text": "Fix it",
            "action_items-0-team": "product",
            "intent": "save",
        },
    )
    action = re.search(
        r'action="/review/actions/(\d+)/done"',
        client.get("/review/actions").get_data(as_text=True),
    ).group(1)
    target = make_user(app, "csm")
    return {"item": departure.public_id, "action": action, "user": str(target.id)}


@pytest.mark.parametrize("role", ["anonymous", "admin", "csm", "marketing"])
@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_access_matrix(app, world, role, method, path):
    client = app.test_client()
    if role != "anonymous":
        assert login(client, make_user(app, role).email).status_code == 302
    token = (
        csrf_token(client.get("/login").get_data(as_text=True))
        if role == "anonymous"
        else None
    )
    url = path.format(**world)
    if method == "GET":
        response = client.get(url)
    else:
        token = token or csrf_token(client.get("/account").get_data(as_text=True))
        response = client.post(url, data={"csrf_token": token})
    if role == "anonymous":
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    elif role in ROUTES[(method, path)]:
        assert response.status_code not in (401, 403), response.status_code
        assert not response.headers.get("Location", "").startswith("/login")
    else:
        assert response.status_code == 403


def test_a_post_without_the_csrf_token_is_refused(app, world):
    client = app.test_client()
    login(client, make_user(app, "csm").email)
    response = client.post(f"/review/{world['item']}/notes", data={"body": "hello"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("role", "home"),
    [("admin", "/review"), ("csm", "/review"), ("marketing", "/winback")],
)
def test_each_role_lands_on_its_page(app, role, home):
    client = app.test_client()
    assert login(client, make_user(app, role).email).headers["Location"] == home

"""The review queue, the item page, postmortems and action items."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from survey import db
from survey.review.models import Postmortem
from survey.review_items import ReviewItem
from tests.factories import (
    csrf_token,
    hidden_fields,
    login,
    make_departure,
    make_user,
    submit,
    survey_path,
)


@pytest.fixture
def csm(app):
    return make_user(app, "csm", name="Casey Csm")


@pytest.fixture
def staff(app, csm):
    """A client signed in as the CSM."""
    client = app.test_client()
    assert login(client, csm.email).status_code == 302
    return client


def answered(app, reason="too_expensive", **fields):
    """Record a departure and answer its page 1, as the customer would."""
    departure = make_departure(app, **fields)
    customer = app.test_client()
    response = submit(customer, survey_path(app, departure), {"reason": reason})
    assert response.status_code == 303
    return departure


def items(session) -> list[ReviewItem]:
    session.rollback()
    return list(session.scalars(select(ReviewItem).order_by(ReviewItem.id)))


def companies(html: str) -> list[str]:
    return re.findall(r'<a class="company" href="/review/[\w-]{16}">([^<]+)</a>', html)


def page_of(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def post(client, page: str, action: str, data: dict, follow=False):
    """Post ``data`` with the hidden fields of ``page`` (CSRF token, version...)."""
    html = page_of(client, page)
    return client.post(
        action, data={**hidden_fields(html), **data}, follow_redirects=follow
    )


def opened_by_two(app, staff, page: str):
    """Open ``page`` as ``staff`` and as another admin (Olga Other); return
    her client and the hidden fields of each one's page."""
    other = app.test_client()
    login(other, make_user(app, "admin", name="Olga Other").email)
    return (
        other,
        hidden_fields(page_of(staff, page)),
        hidden_fields(page_of(other, page)),
    )


# --- entering the queue --------------------------------------------------------


def test_every_answer_becomes_one_new_item_and_keeps_the_latest_reason(app, session):
    departure = answered(app, "too_expensive")
    [item] = items(session)
    assert (item.departure_id, item.status, item.reason) == (
        departure.id,
        "new",
        "too_expensive",
    )
    assert item.mrr_cents == departure.mrr_cents
    submit(app.test_client(), survey_path(app, departure), {"reason": "switched"})
    [item] = items(session)
    assert item.reason == "switched"


def test_an_erased_departure_is_not_queued_as_unanswered(make_app, clock, session):
    app = make_app(REVIEW_UNANSWERED_AFTER_DAYS=7)
    make_departure(app, contact_email="gone@x.example")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["contacts", "erase", "gone@x.example"]).exit_code == 0
    clock.advance(days=8)
    assert "0 unanswered" in runner.invoke(args=["review", "sync"]).stdout
    assert items(session) == []


def test_an_unanswered_departure_is_queued_after_the_days_when_it_is_worth_it(
    make_app, clock, session
):
    app = make_app(REVIEW_UNANSWERED_AFTER_DAYS=7, REVIEW_MIN_MRR_CENTS=50_000)
    big = make_departure(app, mrr_cents=90_000)
    make_departure(app, mrr_cents=10_000)  # too small to chase
    runner = app.test_cli_runner()
    clock.advance(days=6, hours=23)
    assert "0 unanswered" in runner.invoke(args=["review", "sync"]).stdout
    clock.advance(hours=1)
    assert "1 unanswered" in runner.invoke(args=["review", "sync"]).stdout
    [item] = items(session)
    assert (item.departure_id, item.origin, item.reason) == (big.id, "unanswered", None)
    assert "0 unanswered" in runner.invoke(args=["review", "sync"]).stdout  # once
    # The customer answers late: the same item shows the reason.
    submit(app.test_client(), survey_path(app, big), {"reason": "poor_service"})
    [item] = items(session)
    assert item.reason == "poor_service"


# --- the queue page -------------------------------------------------------------


def test_the_queue_shows_the_columns_lost_mrr_first(app, staff):
    answered(app, company="Small Co", mrr_cents=1_000, segment="smb", plan="starter")
    answered(
        app,
        company="Big Co",
        contact_name="Bea Big",
        mrr_cents=250_000,
        currency="EUR",
        segment="enterprise",
        plan="scale",
        csm_email="carl@us.example",
    )
    html = page_of(staff, "/review")
    assert companies(html) == ["Big Co", "Small Co"]
    for shown in (
        "Bea Big",
        "It costs more than it is worth to us",
        "€2,500.00",
        "enterprise",
        "scale",
        "New",
    ):
        assert shown in html
    # Status and Age last, after fewer, denser columns; the CSM is on the item.
    headers = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', html)
    assert headers[-2:] == ["Status", "Age"]
    assert len(headers) <= 8
    big = re.search(r'href="(/review/[\w-]{16})">Big Co<', html)
    assert big and "carl@us.example" in page_of(staff, big.group(1))


def test_the_bulk_bar_sits_above_the_list_and_rarer_filters_fold_away(app, staff):
    answered(app, company="Acme", segment="smb")
    html = page_of(staff, "/review")
    assert html.index('class="bulk-bar"') < html.index('<table class="queue')
    assert re.search(r'<details class="more">\s*<summary>More filters</summary>', html)
    # A rarer filter set (or refused) keeps them open, and says how many.
    filtered = page_of(staff, "/review?segment=smb&mrr_min=x")
    assert re.search(
        r'<details class="more" open>\s*<summary>More filters \(2 set\)</summary>',
        filtered,
    )


def test_lost_mrr_is_shown_in_the_currencys_own_minor_units(app, staff):
    answered(app, company="Yen Co", mrr_cents=500_000, currency="JPY")
    answered(app, company="Dinar Co", mrr_cents=12_345, currency="KWD")
    html = page_of(staff, "/review")
    assert "¥500,000" in html
    assert "KWD12.345" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=open", ["Gamma", "Beta", "Alpha"]),
        ("status=in_review", ["Beta"]),
        ("assignee=mine", ["Beta"]),
        ("assignee=unassigned", ["Gamma", "Alpha"]),
        ("reason=switched", ["Gamma"]),
        ("reason=none", []),
        ("segment=enterprise", ["Gamma"]),
        ("plan=starter", ["Alpha"]),
        ("mrr_min=150&mrr_max=2500", ["Beta"]),
        ("cancelled_from=2026-03-01&cancelled_to=2026-03-31", ["Beta"]),
        ("q=gamma", ["Gamma"]),
        ("q=ROSA", ["Alpha"]),  # the contact's name, any case
        ("q=needed%20sso", ["Beta"]),  # words from the answers
        ("q=100%25", []),  # a literal percent sign matches nothing here
        ("sort=oldest&status=", ["Alpha", "Beta", "Gamma"]),
        ("sort=newest&status=", ["Gamma", "Beta", "Alpha"]),
    ],
)
def test_each_filter_and_sort(app, staff, csm, query, expected):
    alpha = answered(
        app,
        company="Alpha",
        contact_name="Rosa Alpha",
        mrr_cents=10_000,
        plan="starter",
        segment="smb",
        cancelled_at="2026-01-10T00:00:00Z",
    )
    beta = answered(
        app,
        reason="missing_features",
        company="Beta",
        mrr_cents=20_000,
        plan="growth",
        segment="smb",
        cancelled_at="2026-03-10T00:00:00Z",
    )
    answered(
        app,
        reason="switched",
        company="Gamma",
        mrr_cents=300_000,
        plan="growth",
        segment="enterprise",
        cancelled_at="2026-05-10T00:00:00Z",
    )
    customer = app.test_client()
    submit(customer, survey_path(app, beta) + "/more", {"details": "We needed SSO"})
    item_page = f"/review/{beta.public_id}"
    post(staff, item_page, f"{item_page}/assign", {"to_me": "1"})
    post(staff, item_page, f"{item_page}/status", {"status": "in_review"})
    del alpha
    assert companies(page_of(staff, f"/review?{query}")) == expected


def test_bad_filters_are_explained_not_crashed_on(staff):
    html = page_of(staff, "/review?mrr_min=lots&cancelled_from=yesterday")
    assert "Not a valid decimal value" in html
    assert "Not a valid date value" in html


def test_keyset_pages_show_every_row_once_even_when_rows_arrive_between(
    app, staff, session
):
    for number in range(110):
        answered(app, company=f"Co {number:03d}", mrr_cents=1_000 + (number % 7) * 100)
    seen: list[str] = []
    html = page_of(staff, "/review")
    pages = 1
    while True:
        seen += companies(html)
        # Newcomers, with more and with less MRR than anything on the pages.
        answered(app, company=f"Late high {pages}", mrr_cents=9_000_000)
        answered(app, company=f"Late low {pages}", mrr_cents=1)
        link = re.search(r'<a href="([^"]+)" rel="next">', html)
        if link is None:
            break
        html = page_of(staff, link.group(1).replace("&amp;", "&"))
        pages += 1
    originals = [name for name in seen if name.startswith("Co ")]
    assert len(originals) == len(set(originals)) == 110
    assert len(seen) == len(set(seen))
    assert pages >= 3


def test_paging_keeps_any_status_and_a_bad_filter_drops_only_itself(
    app, staff, session
):
    closed = answered(app, company="Closed Co", mrr_cents=999_999)
    with app.app_context(), db.write_session() as s:
        s.execute(
            update(ReviewItem)
            .where(ReviewItem.departure_id == closed.id)
            .values(status="closed")
        )
        s.commit()
    for number in range(51):
        answered(app, company=f"Open {number:02d}", mrr_cents=1_000)
    html = page_of(staff, "/review?status=&sort=oldest")
    link = re.search(r'<a href="([^"]+)" rel="next">', html).group(1)
    assert "status=&amp;" in link or link.endswith("status=")
    everything = companies(html) + companies(page_of(staff, link.replace("&amp;", "&")))
    assert "Closed Co" in everything and len(everything) == 52
    only_closed = page_of(staff, "/review?status=closed&mrr_min=-1")
    assert companies(only_closed) == ["Closed Co"]
    assert "Number must be between 0" in only_closed


# 2147483648 is one past an INTEGER id, 9223372036854775808 one past a BIGINT
# amount; a fullwidth 1 is a digit to str.isdecimal, but not one we ever write.
@pytest.mark.parametrize(
    "cursor", ["abc", "1.2147483648", "9223372036854775808.1", "\uff11.1"]
)
def test_a_damaged_cursor_is_a_clear_error(staff, cursor):
    response = staff.get("/review", query_string={"after": cursor})
    assert response.status_code == 422
    assert "page link is damaged" in response.get_data(as_text=True)


# WTForms' DecimalField takes all of these; NumberRange raises on a signalling
# NaN, and 1e30 in cents would not fit the BIGINT column.
@pytest.mark.parametrize(
    "value", ["sNaN", "-sNaN", "NaN", "-NaN", "Infinity", "-Infinity", "1e30"]
)
@pytest.mark.parametrize("field", ["mrr_min", "mrr_max"])
def test_an_amount_filter_that_is_no_amount_drops_only_itself(app, staff, field, value):
    answered(app, company="Kept Co", mrr_cents=1_000)
    answered(app, company="Other Co", reason="switched", mrr_cents=1_000)
    response = staff.get(
        "/review", query_string={field: value, "reason": "too_expensive"}
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert companies(html) == ["Kept Co"]
    assert f'<ul class="errors" id="{field}-errors">' in html


# --- changing items ---------------------------------------------------------------


def test_allowed_and_refused_status_changes(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    html = post(staff, page, f"{page}/status", {"status": "closed"}, follow=True)
    assert "cannot move to “Closed”" in html.get_data(as_text=True)
    assert items(session)[0].status == "new"
    post(staff, page, f"{page}/status", {"status": "in_review"})
    refused = post(
        staff, page, f"{page}/status", {"status": "postmortem_done"}, follow=True
    )
    assert "Finish the postmortem first" in refused.get_data(as_text=True)
    assert items(session)[0].status == "in_review"


def test_bulk_assign_and_bulk_status(app, staff, csm, session):
    first, second = answered(app, company="One"), answered(app, company="Two")
    other = make_user(app, "admin", name="Ada Admin")
    html = page_of(staff, "/review")
    data = {
        "csrf_token": csrf_token(html),
        "items": [first.public_id, second.public_id],
        "action": "assign",
        "assignee": str(other.id),
        "back": "/review?status=open",
    }
    response = staff.post("/review/bulk", data=data)
    assert response.headers["Location"] == "/review?status=open"
    assert {item.assignee_id for item in items(session)} == {other.id}
    # Saying what changed, not only that something did.
    assert "2 items assigned to Ada Admin." in page_of(staff, "/review")

    post(
        staff,
        f"/review/{first.public_id}",
        f"/review/{first.public_id}/status",
        {"status": "in_review"},
    )
    result = staff.post(
        "/review/bulk",
        data=data | {"action": "status", "status": "in_review"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "1 item moved to “In review”." in result
    assert "One: “In review” cannot move to “In review”" in result
    assert {item.status for item in items(session)} == {"in_review"}


def test_customer_and_staff_text_comes_back_escaped(app, staff):
    departure = make_departure(app, company="<script>alert(1)</script> Inc")
    customer = app.test_client()
    page1 = survey_path(app, departure)
    submit(
        customer,
        page1,
        {"reason": "other", "reason_other": "<img src=x onerror=alert(2)>"},
    )
    submit(customer, page1 + "/more", {"details": "<script>alert(3)</script>"})
    page = f"/review/{departure.public_id}"
    post(staff, page, f"{page}/notes", {"body": "<img src=y onerror=alert(4)>"})
    for html in (page_of(staff, "/review"), page_of(staff, page)):
        assert "<script>alert" not in html
        assert "<img src=" not in html
    html = page_of(staff, page)
    assert "&lt;img src=y onerror=alert(4)&gt;" in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html


def test_the_item_page_has_answers_consent_facts_timeline_and_notes(app, staff, csm):
    departure = make_departure(app, company="Initech", billing_reason="downgrade")
    customer = app.test_client()
    page1 = survey_path(app, departure)
    submit(customer, page1, {"reason": "switched"})
    submit(
        customer,
        page1 + "/more",
        {
            "destination": "competitor",
            "destination_name": "Globex",
            "winback_consent": "y",
            "follow_up": "Cheaper",
        },
    )
    page = f"/review/{departure.public_id}"
    post(staff, page, f"{page}/assign", {"to_me": "1"})
    post(staff, page, f"{page}/notes", {"body": "Called them; polite but firm."})
    html = page_of(staff, page)
    for shown in (
        # Each answer under the question the customer was asked.
        "What is the main reason you are leaving?</dt>",
        "What made the alternative better for you?</dt>",
        "We found a better alternative",
        "Globex",
        "Cheaper",
        "This departure: <strong>Granted</strong>",
        "Granted through the survey",
        "downgrade",
        "Cancelled",
        "Survey link opened",
        "Answered the question",
        "Win-back consent granted (survey)",
        f"Assigned to {csm.name}",
        "Called them; polite but firm.",
        "Casey Csm",
    ):
        assert shown in html, shown


# --- postmortems ---------------------------------------------------------------------


FULL = {
    "what_happened": "Renewal doubled in price; no one warned them.",
    "root_causes": ["oversold", "other"],
    "primary_cause": "oversold",
    "other_cause": "Champion left",
    "preventable": "partly",
    "winback_recommendation": "offer",
    "lessons": "Warn before renewals.",
    "action_items-0-text": "Renewal warning 60 days ahead",
    "action_items-0-team": "customer_success",
    "action_items-0-owner": "Dana",
    "action_items-0-due_date": "2026-01-15",
}


def test_a_draft_saves_anything_and_done_needs_the_essentials(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    draft = post(
        staff,
        page,
        f"{page}/postmortem",
        {"lessons": "Half a thought", "intent": "save"},
    )
    assert draft.status_code == 302
    assert items(session)[0].status == "in_review"  # work has started
    refused = post(
        staff,
        page,
        f"{page}/postmortem",
        {"lessons": "Half a thought", "intent": "finish"},
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert "A finished postmortem names its root causes." in html
    assert "Say whether it was preventable." in html
    assert "Say what happened before finishing." in html
    assert "Half a thought" in html  # what was typed stays

    done = post(staff, page, f"{page}/postmortem", FULL | {"intent": "finish"})
    assert done.status_code == 302
    session.rollback()
    postmortem = session.scalar(select(Postmortem))
    assert postmortem.done_at is not None
    assert [(c.code, c.is_primary) for c in postmortem.root_causes] == [
        ("oversold", True),
        ("other", False),
    ]
    [action] = postmortem.action_items
    assert (action.team, action.owner, str(action.due_date)) == (
        "customer_success",
        "Dana",
        "2026-01-15",
    )
    assert items(session)[0].status == "postmortem_done"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"primary_cause": ""}, "Mark exactly one of the chosen root causes"),
        ({"primary_cause": "poor_fit"}, "Mark exactly one of the chosen root causes"),
        ({"other_cause": ""}, "Say what the “other” root cause was."),
        ({"root_causes": ["oversold", "made_up"]}, "is not a valid choice"),
    ],
)
def test_root_causes_need_one_primary_and_other_needs_text(app, staff, change, message):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    refused = post(
        staff, page, f"{page}/postmortem", FULL | change | {"intent": "finish"}
    )
    assert refused.status_code == 422
    assert message in refused.get_data(as_text=True)
    if "made_up" not in str(change):  # a draft may be half-way
        draft = post(
            staff, page, f"{page}/postmortem", FULL | change | {"intent": "save"}
        )
        assert draft.status_code == 302


def test_an_action_item_without_its_text_is_explained_at_the_field(app, staff):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    refused = post(
        staff,
        page,
        f"{page}/postmortem",
        {
            "action_items-0-owner": "Dana",
            "action_items-0-team": "product",
            "intent": "save",
        },
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert re.search(
        r'id="action_items-0-text-errors">\s*<li>Say what is to be done.', html
    )
    assert 'value="Dana"' in html  # what was typed stays


def test_an_action_item_without_a_team_is_explained_at_its_own_row(app, staff):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    refused = post(
        staff,
        page,
        f"{page}/postmortem",
        {
            # A blank first row, then the one written in: the message goes
            # to the second row, where the team is missing.
            "action_items-0-team": "",
            "action_items-1-text": "Call them back",
            "action_items-1-team": "",
            "intent": "save",
        },
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert re.search(r'id="action_items-1-team-errors">\s*<li>Choose a team.', html)
    assert 'id="action_items-0-team-errors"' not in html
    assert 'aria-describedby="action_items-1-team-errors"' in html


def test_a_second_editor_is_refused_and_keeps_their_text(app, staff, csm, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    post(
        staff, page, f"{page}/postmortem", {"lessons": "First draft", "intent": "save"}
    )
    other, mine, theirs = opened_by_two(app, staff, page)
    assert mine["version"] == theirs["version"] == "1"
    saved = other.post(
        f"{page}/postmortem", data=theirs | {"lessons": "Olga's view", "intent": "save"}
    )
    assert saved.status_code == 302
    refused = staff.post(
        f"{page}/postmortem", data=mine | {"lessons": "Casey's view", "intent": "save"}
    )
    assert refused.status_code == 409
    html = refused.get_data(as_text=True)
    assert "Changed by Olga Other at" in html
    assert "Casey&#39;s view" in html  # kept, to re-apply
    # Their version beside mine, for the part that differs only.
    [compared] = re.findall(r'<div class="compare" id="compare-(\w+)">', html)
    assert compared == "lessons"
    assert re.search(
        r'<h4>Their version</h4><div class="version">Olga&#39;s view</div>', html
    )
    assert 'name="resolve-lessons" value="mine" checked' in html
    assert 'href="#compare-lessons"' in html  # the summary leads there
    session.rollback()
    assert session.scalar(select(Postmortem.lessons)) == "Olga's view"

    # Having compared, Casey saves from the conflict page: that save goes in.
    again = staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html) | {"lessons": "Both views", "intent": "save"},
    )
    assert again.status_code == 302
    session.rollback()
    assert session.scalar(select(Postmortem.lessons)) == "Both views"


def test_closed_reopens_and_nothing_else_after_done(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    post(staff, page, f"{page}/postmortem", FULL | {"intent": "finish"})
    post(staff, page, f"{page}/status", {"status": "closed"})
    assert items(session)[0].status == "closed"
    refused = post(staff, page, f"{page}/status", {"status": "new"}, follow=True)
    assert "cannot move to “New”" in refused.get_data(as_text=True)
    post(staff, page, f"{page}/status", {"status": "in_review"})
    assert items(session)[0].status == "in_review"


# --- action items ----------------------------------------------------------


def test_open_action_items_overdue_first_and_marking_done(app, staff, clock, session):
    late, soon = answered(app, company="Late Co"), answered(app, company="Soon Co")
    today = clock().date()
    for departure, due, team in (
        (soon, today + timedelta(days=10), "product"),
        (late, today - timedelta(days=3), "support"),
    ):
        page = f"/review/{departure.public_id}"
        post(
            staff,
            page,
            f"{page}/postmortem",
            FULL
            | {
                "action_items-0-text": f"Fix for {departure.company}",
                "action_items-0-team": team,
                "action_items-0-due_date": due.isoformat(),
                "intent": "save",
            },
        )
    html = page_of(staff, "/review/actions")
    assert html.index("Fix for Late Co") < html.index("Fix for Soon Co")
    assert "overdue" in html
    action_id = re.search(r'action="/review/actions/(\d+)/done"', html).group(1)
    staff.post(
        f"/review/actions/{action_id}/done", data={"csrf_token": csrf_token(html)}
    )
    html = page_of(staff, "/review/actions")
    assert "Fix for Late Co" not in html and "Fix for Soon Co" in html
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Postmortem)) == 2


def test_marking_an_action_done_is_not_undone_by_an_open_editor(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    post(staff, page, f"{page}/postmortem", FULL | {"intent": "save"})
    editor = hidden_fields(page_of(staff, page))  # the form, open in a tab
    actions = page_of(staff, "/review/actions")
    action_id = re.search(r'action="/review/actions/(\d+)/done"', actions).group(1)
    staff.post(
        f"/review/actions/{action_id}/done", data={"csrf_token": csrf_token(actions)}
    )
    stale = staff.post(
        f"{page}/postmortem",
        data=editor
        | {
            key: value
            for key, value in FULL.items()
            if key.startswith("action_items-0") or key == "what_happened"
        }
        | {"intent": "save"},
    )
    assert stale.status_code == 409
    session.rollback()
    postmortem = session.scalar(select(Postmortem))
    assert [item.done for item in postmortem.action_items] == [True]


def test_bulk_assign_only_to_reviewers(app, staff, session):
    departure = answered(app)
    marketing = make_user(app, "marketing")
    html = page_of(staff, "/review")
    for target in (str(marketing.id), "999999", "²"):
        result = staff.post(
            "/review/bulk",
            data={
                "csrf_token": csrf_token(html),
                "items": [departure.public_id],
                "action": "assign",
                "assignee": target,
            },
            follow_redirects=True,
        )
        assert result.status_code == 200
    assert items(session)[0].assignee_id is None


def test_an_item_is_assigned_only_to_reviewers(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    marketing = make_user(app, "marketing")
    gone = make_user(app, "csm", active=False)
    for target in (marketing, gone):
        refused = post(
            staff, page, f"{page}/assign", {"assignee": str(target.id)}, follow=True
        )
        assert "Choose someone who reviews." in refused.get_data(as_text=True)
        assert items(session)[0].assignee_id is None
    reviewer = make_user(app, "csm")
    post(staff, page, f"{page}/assign", {"assignee": str(reviewer.id)})
    assert items(session)[0].assignee_id == reviewer.id


@pytest.mark.parametrize(
    "query",
    [
        "assignee=%C2%B2",
        "assignee=99999999999999999999999",
        "mrr_min=1e30",
        "mrr_min=99999999999999999999",
        "mrr_max=Infinity",
        "cancelled_to=9999-12-31",
        "after=99999999999999999999999.1",
        "after=%C2%B2.1",
    ],
)
def test_odd_queue_parameters_are_answered_not_crashed_on(app, staff, query):
    answered(app)
    assert staff.get(f"/review?{query}").status_code in (200, 422)


def test_odd_ids_in_urls_are_not_found(staff):
    assert staff.post("/review/actions/99999999999999999999999/done").status_code in (
        400,
        404,
    )


def test_an_emptied_action_item_row_removes_it(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    post(staff, page, f"{page}/postmortem", FULL | {"intent": "save"})
    post(
        staff,
        page,
        f"{page}/postmortem",
        {
            "what_happened": "x",
            "action_items-0-text": "",
            "action_items-0-team": "",
            "intent": "save",
        },
    )
    session.rollback()
    assert session.scalar(select(Postmortem)).action_items == []


def test_simultaneous_moves_move_the_item_once(app, csm, session):
    from survey.audit import AuditEvent

    departure = answered(app)
    page = f"/review/{departure.public_id}"
    clients = []
    for _ in range(10):
        client = app.test_client()
        login(client, csm.email)
        clients.append((client, csrf_token(page_of(client, page))))
    barrier = threading.Barrier(len(clients))

    def move(client, token) -> None:
        barrier.wait()
        client.post(f"{page}/status", data={"csrf_token": token, "status": "in_review"})

    threads = [threading.Thread(target=move, args=pair) for pair in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.rollback()
    moves = session.scalars(
        select(AuditEvent).where(AuditEvent.kind == "review.status")
    ).all()
    assert [(m.detail["old"], m.detail["new"]) for m in moves] == [("new", "in_review")]


def test_the_postmortem_form_speaks_in_meanings_and_presets_no_team(app, staff):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    saved = post(
        staff,
        page,
        f"{page}/postmortem",
        {
            "root_causes": ["poor_service"],
            "primary_cause": "poor_service",
            "intent": "save",
        },
    )
    assert saved.status_code in (302, 303)
    html = page_of(staff, page)
    # Root causes by what they mean, not by their codes.
    assert "Their business or budget failed" in html
    assert ">customer_business_failure<" not in html
    assert "<strong>customer_business_failure</strong>" not in html
    # Blank action rows choose no team for the writer.
    blank_rows = re.findall(
        r'<select id="action_items-\d+-team"[^>]*>(.*?)</select>', html, re.S
    )
    assert blank_rows
    for options in blank_rows:
        assert re.findall(r'<option value="(\w*)" selected>', options) == [""]


def test_after_a_conflict_each_part_keeps_mine_or_takes_theirs(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    other, mine, theirs = opened_by_two(app, staff, page)
    saved = other.post(
        f"{page}/postmortem",
        data=theirs
        | {
            "what_happened": "Olga: the price",
            "lessons": "Olga's lessons",
            "preventable": "yes",
            "action_items-0-text": "Olga's action",
            "action_items-0-team": "sales",
            "intent": "save",
        },
    )
    assert saved.status_code == 302
    mine_now = {
        "what_happened": "Casey: the onboarding",
        "lessons": "Casey's lessons",
        "preventable": "no",
        "intent": "save",
    }
    refused = staff.post(f"{page}/postmortem", data=mine | mine_now)
    assert refused.status_code == 409
    html = refused.get_data(as_text=True)
    differing = re.findall(r'<div class="compare" id="compare-(\w+)">', html)
    assert differing == ["what_happened", "preventable", "lessons", "action_items"]
    assert "Olga&#39;s action (Sales)" in html

    # Keep my account and my answer on preventable; take their lessons and actions.
    resolved = staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html)
        | mine_now
        | {"resolve-lessons": "theirs", "resolve-action_items": "theirs"},
    )
    assert resolved.status_code == 302
    session.rollback()
    postmortem = session.scalar(select(Postmortem))
    assert postmortem.what_happened == "Casey: the onboarding"
    assert postmortem.preventable == "no"
    assert postmortem.lessons == "Olga's lessons"
    assert [(a.text, a.team) for a in postmortem.action_items] == [
        ("Olga's action", "sales")
    ]


def test_a_row_is_added_without_saving_and_what_was_typed_stays(app, staff, session):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    html = page_of(staff, page)
    rows = len(re.findall(r'id="action_items-\d+-text"', html))
    added = staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html)
        | {
            "what_happened": "Typed, not saved",
            "action_items-0-text": "First",
            "action_items-0-team": "product",
            "action_items-1-text": "Second",
            "action_items-1-team": "sales",
            "intent": "add_row",
        },
    )
    assert added.status_code == 200
    html = added.get_data(as_text=True)
    assert len(re.findall(r'id="action_items-\d+-text"', html)) == rows + 1
    assert re.search(rf'id="action_items-{rows}-text"[^>]*autofocus', html)
    assert "Typed, not saved" in html and 'value="Second"' in html
    assert 'class="errors"' not in html  # nothing was checked: nothing refused
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Postmortem)) == 0


@pytest.mark.parametrize(
    ("action", "data", "status", "lands_at"),
    [
        ("postmortem", {"intent": "add_row"}, 200, None),
        ("postmortem", {"intent": "save", "lessons": "Some"}, 200, ""),
        ("postmortem", FULL | {"intent": "finish"}, 200, ""),
        ("postmortem", {"intent": "finish"}, 422, None),
        ("assign", {"to_me": "1"}, 200, ""),
        ("assign", {"assignee": "marketing"}, 422, None),
        ("status", {"status": "in_review"}, 200, ""),
        ("status", {"status": "closed"}, 409, None),
        ("notes", {"body": "A note"}, 200, ""),
        ("notes", {"body": ""}, 422, None),
    ],
)
def test_after_each_form_of_the_item_page_a_reload_is_harmless(
    app, staff, action, data, status, lands_at
):
    """Done, the browser is sent to a page that a GET draws (Post/Redirect/
    Get); refused, or with a row added (nothing saved), the page is drawn at
    the form's address, whose GET draws the item page (a reload or a
    restored tab lands there, not on a 405)."""
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    if data.get("assignee") == "marketing":
        data = {"assignee": str(make_user(app, "marketing").id)}
    answer = post(staff, page, f"{page}/{action}", data, follow=True)
    assert answer.status_code == status
    final = answer.request.path + (
        "?" + answer.request.query_string.decode()
        if answer.request.query_string
        else ""
    )
    if lands_at is None:  # refused or a row added: drawn at the form's address
        assert final == f"{page}/{action}" and not answer.history
    else:
        assert final == page + lands_at and answer.history
    again = staff.get(final, follow_redirects=True)
    assert again.status_code == 200
    assert again.request.path == page
    assert '<h2 id="review-heading">Review</h2>' in again.get_data(as_text=True)


def test_the_address_of_an_item_form_opens_the_item_page_at_that_form(staff, app):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    for form, place in (
        ("assign", "review"),
        ("status", "review"),
        ("notes", "notes"),
        ("consent", "consent"),
        ("postmortem", "postmortem"),
    ):
        opened = staff.get(f"{page}/{form}")
        assert opened.status_code == 303, form
        assert opened.location == f"{page}#{place}"
    html = page_of(staff, page)
    for place in ("review", "notes", "postmortem"):
        assert f'id="{place}"' in html
    assert staff.get("/review/not-an-item/postmortem").status_code == 404


@pytest.mark.parametrize(
    ("action", "data", "status", "label", "message"),
    [
        (
            "assign",
            {"assignee": "marketing"},
            422,
            "Assign to",
            "Choose someone who reviews.",
        ),
        (
            "status",
            {"status": "closed"},
            409,
            "Move to",
            "“New” cannot move to “Closed”; it can move to “In review”.",
        ),
        ("status", {"status": ""}, 422, "Move to", "Choose a status."),
        ("status", {"status": "nonsense"}, 422, "Move to", "Choose a status."),
    ],
)
def test_a_refused_assignment_or_move_is_summarised_and_shown_at_its_field(
    app, staff, session, action, data, status, label, message
):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    if data.get("assignee") == "marketing":
        data = {"assignee": str(make_user(app, "marketing").id)}
    refused = post(staff, page, f"{page}/{action}", data)
    assert refused.status_code == status
    html = refused.get_data(as_text=True)
    field = "assignee" if action == "assign" else "status"
    summary = re.search(r'<div class="error-summary"([^>]*)>(.*?)</div>', html, re.S)
    assert summary, "no error summary"
    assert 'tabindex="-1"' in summary.group(1) and "autofocus" in summary.group(1)
    assert "The item was not changed" in summary.group(2)
    links = re.findall(r'<a href="#([\w-]+)">([^<]+)</a>', summary.group(2))
    assert links == [(field, f"{label} — {message}")]
    # The link leads to the field, which is tied to its message.
    assert re.search(
        rf'<ul class="errors" id="{field}-errors">\s*<li>{re.escape(message)}</li>',
        html,
    )
    assert re.search(
        rf'<select id="{field}" name="{field}"\s+aria-describedby="{field}-errors"'
        r' aria-invalid="true">',
        html,
    )
    assert f'<label for="{field}">{label}</label>' in html
    assert 'class="flash' not in html  # said at the field, not in a flash
    session.rollback()
    item = items(session)[0]
    assert (item.status, item.assignee_id) == ("new", None)


def test_a_refused_save_is_summarised_at_the_top_with_links(app, staff):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    refused = post(
        staff,
        page,
        f"{page}/postmortem",
        {"action_items-0-text": "Call them", "intent": "finish"},
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    summary = re.search(r'<div class="error-summary"[^>]*>(.*?)</div>', html, re.S)
    assert summary and "autofocus" in summary.group(0)
    links = re.findall(r'<a href="#([\w-]+)">([^<]+)</a>', summary.group(1))
    assert ("action_items-0-team", "Action 1: Team — Choose a team.") in links
    assert (
        "what_happened",
        "What happened: the final straw — Say what happened before finishing.",
    ) in links
    assert "Some answers need attention" not in html.split('class="error-summary"')[0]


def test_a_finished_postmortem_reads_as_a_document_until_edit(app, staff):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    done = post(
        staff,
        page,
        f"{page}/postmortem",
        {
            "what_happened": "They <b>left</b>",
            "root_causes": ["oversold"],
            "primary_cause": "oversold",
            "preventable": "partly",
            "action_items-0-text": "Price renewals",
            "action_items-0-team": "sales",
            "intent": "finish",
        },
    )
    assert done.status_code == 302
    html = page_of(staff, page)
    assert 'class="read-view"' in html and 'id="what_happened"' not in html
    assert "They &lt;b&gt;left&lt;/b&gt;" in html
    assert "Expectations set in the sale were not real (primary)" in html
    assert "Price renewals" in html and "Partly" in html
    assert f'href="{page}?edit=1#postmortem">Edit the postmortem<' in html
    editing = page_of(staff, f"{page}?edit=1")
    assert 'class="read-view"' not in editing and 'id="what_happened"' in editing


def test_a_conflict_compares_as_saved_and_survives_adding_a_row(app, staff, session):
    """Identical action items are no difference (a blank owner is no owner);
    adding a row keeps the comparison; taking their unanswered question
    takes the blank."""
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    other, mine, theirs = opened_by_two(app, staff, page)
    same_action = {"action_items-0-text": "Call them ", "action_items-0-team": "sales"}
    saved = other.post(
        f"{page}/postmortem",
        data=theirs | same_action | {"lessons": "Olga's", "intent": "save"},
    )
    assert saved.status_code == 302
    mine_now = same_action | {"lessons": "Casey's", "preventable": "no"}
    refused = staff.post(
        f"{page}/postmortem", data=mine | mine_now | {"intent": "save"}
    )
    assert refused.status_code == 409
    html = refused.get_data(as_text=True)
    differing = re.findall(r'<div class="compare" id="compare-(\w+)">', html)
    assert differing == ["preventable", "lessons"]

    added = staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html) | mine_now | {"intent": "add_row"},
    )
    assert added.status_code == 200
    kept = re.findall(
        r'<div class="compare" id="compare-(\w+)">', added.get_data(as_text=True)
    )
    assert kept == differing

    resolved = staff.post(
        f"{page}/postmortem",
        data=hidden_fields(html)
        | mine_now
        | {"resolve-preventable": "theirs", "intent": "save"},
    )
    assert resolved.status_code == 302, resolved.get_data(as_text=True)[:2000]
    session.rollback()
    postmortem = session.scalar(select(Postmortem))
    assert (postmortem.preventable, postmortem.lessons) == (None, "Casey's")


def test_adding_a_row_past_the_last_one_is_refused_quietly(app, staff):
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    rows = {
        f"action_items-{n}-{field}": value
        for n in range(50)
        for field, value in (("text", f"Action {n}"), ("team", "sales"))
    }
    full = post(staff, page, f"{page}/postmortem", rows | {"intent": "add_row"})
    assert full.status_code == 200
    html = full.get_data(as_text=True)
    assert 'id="action_items-49-text"' in html
    assert 'id="action_items-50-text"' not in html
    assert ">Add another action<" not in html


def test_a_refused_assignment_shows_the_assignee_it_still_has(app, staff, csm, session):
    """Refused, the select is drawn at the person chosen when still offered,
    else (always, today: a refusal is of someone not offered, CSRF failures
    end before the page) at the item's assignee, never at the first option."""
    departure = answered(app)
    page = f"/review/{departure.public_id}"
    post(staff, page, f"{page}/assign", {"to_me": "1"})
    marketing = make_user(app, "marketing")
    refused = post(staff, page, f"{page}/assign", {"assignee": str(marketing.id)})
    assert refused.status_code == 422
    select_html = (
        refused.get_data(as_text=True).split('id="assignee"')[1].split("</select>")[0]
    )
    assert re.findall(r'<option value="([^"]*)" selected>', select_html) == [
        str(csm.id)
    ]
    session.rollback()
    assert items(session)[0].assignee_id == csm.id

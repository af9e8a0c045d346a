"""Fill a database with a realistic review queue: 1,000,000 departures by default.

What it writes (all reproducible from ``--seed``):

* **departures**: spread over three years, more of them lately; varied plan,
  seats (so lost MRR, with many ties), segment, currency, locale, CSM and
  source. All were invited; about 40% opened the link, about 20% answered.
* **responses** for the answered ones: a main reason (weighted), other
  factors, often details and the reason's follow-up answer.
* **consent events**: about a third of the respondents granted win-back
  consent in the survey; some withdrew later through the withdrawal link.
* **outbox messages**: one sent invitation per departure (``--no-outbox``
  leaves them out).
* **review items**: one per answered departure (origin ``answered``, with the
  response's reason) plus the unanswered departures worth at least
  ``--unanswered-min-mrr`` cents a month and invited over a week ago (origin
  ``unanswered``, no reason); each copies its departure's ``mrr_cents``.
* **reviews**: ``--postmortems`` items were reviewed, mostly the biggest losses
  (the queue is worked MRR first): finished postmortems (status
  ``postmortem_done`` or ``closed``) and drafts (``in_review``), each with root
  causes (one primary) and usually action items; some more items are
  ``in_review`` without a postmortem yet; the rest are ``new``, a few already
  assigned. Status changes, assignments and postmortem saves are in the audit
  log; staff notes sit on reviewed and on some new items.
* **staff users**: reviewers (CSMs, admins) and marketing, with an unusable
  password (``bench_review.py`` creates its own user to sign in).

The schema comes only from the project's migrations (``flask --app survey db
upgrade``). Rows go in through SQLAlchemy Core ``insert()`` executemany in
large batches, or, on PostgreSQL, through ``COPY`` (psycopg; the default
there: several times faster), in one transaction. Then ANALYZE (PostgreSQL:
``VACUUM (ANALYZE)``, as autovacuum would have done on a live database).

Target: 1,000,000 departures within a few minutes on a 2-core machine, on
SQLite and on PostgreSQL. It prints rows/s per table and the total time.

It exits 0 when the database was filled, 2 when it could not run (a database
that is not empty, a failed migration).

Usage::

    .venv/bin/python benchmarks/seed_review.py \\
        --database-url sqlite:////tmp/bench/review.sqlite3 [--departures 1000000]
    createdb -h 127.0.0.1 -U postgres bench_review
    .venv/bin/python benchmarks/seed_review.py \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_review \\
        [--method copy|insert] [--no-outbox] [--seed 1]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import math
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import bench_survey  # noqa: E402  (the benchmarks' shared set-up)

BATCH = 20_000  # rows per executemany / per generated chunk


def words(text: str) -> list[str]:
    """Return the words of ``text`` (keeps long lists of names short)."""
    return text.split()


# --- vocabulary of the fake data -------------------------------------------

#: plan -> (price per seat in cents, seats: lognormal mu, sigma)
PLANS = {
    "starter": (2_900, 0.5, 0.7),
    "growth": (9_900, 1.2, 0.8),
    "business": (29_900, 1.6, 0.9),
    "enterprise": (99_900, 2.0, 0.9),
}
#: segment -> (weight, plan weights in PLANS order, share with a CSM)
SEGMENTS = {
    "smb": (0.55, (0.55, 0.40, 0.05, 0.0), 0.15),
    "mid_market": (0.28, (0.05, 0.45, 0.45, 0.05), 0.8),
    "enterprise": (0.10, (0.0, 0.05, 0.45, 0.50), 1.0),
    None: (0.07, (0.40, 0.45, 0.15, 0.0), 0.1),
}
CURRENCIES = (("USD", 0.7), ("EUR", 0.2), ("GBP", 0.1))
LOCALES = (("en", 0.6), ("de", 0.15), ("fr", 0.1), ("es", 0.1), (None, 0.05))
SOURCES = (("stripe", 0.6), ("api", 0.3), ("csv", 0.08), ("staff", 0.02))
BILLING_REASONS = (
    ("cancellation_requested", 0.6),
    ("payment_failed", 0.25),
    ("payment_disputed", 0.05),
    (None, 0.1),
)
REASONS = (
    ("too_expensive", 0.25),
    ("missing_features", 0.15),
    ("switched", 0.12),
    ("no_longer_needed", 0.10),
    ("business_change", 0.08),
    ("hard_to_adopt", 0.08),
    ("product_issues", 0.07),
    ("not_meeting_goals", 0.06),
    ("poor_service", 0.05),
    ("other", 0.04),
)
FOLLOW_UPS = {
    "too_expensive": "Half the price would have kept us.",
    "missing_features": "Single sign-on and an audit log.",
    "product_issues": "The sync broke every other week.",
    "hard_to_adopt": "Nobody had time to set it up properly.",
    "poor_service": "Answer tickets within a day, not a week.",
    "not_meeting_goals": "We expected churn to go down.",
    "switched": "A competitor bundled it with our CRM.",
    "business_change": "Not really, the budget was cut company-wide.",
}
DESTINATIONS = (("competitor", 0.45), ("in_house", 0.15), ("none", 0.2))
COMPETITORS = ("Acme Feedback", "Churnly", "ExitPoll Pro", "Survey Monkey", "Qualtro")
ROOT_CAUSES = {
    "poor_fit": "sales",
    "oversold": "sales",
    "failed_adoption": "onboarding",
    "product_issues": "product",
    "poor_service": "support",
    "goals_not_met": "customer_success",
    "customer_business_failure": "sales",
    "competitor": "marketing",
    "other": "other",
}
ADJECTIVES = words(
    "Northwind Blue Bright Silver Rapid Quiet Green Iron Lucky Polar "
    "Crimson Golden Urban Prime Summit Coastal Alpine Clever Solid Open"
)
NOUNS = words(
    "Analytics Labs Foods Logistics Media Health Robotics Studio Systems "
    "Ventures Partners Works Energy Retail Travel Finance Design Cloud "
    "Data Goods"
)
SUFFIXES = ("Inc.", "GmbH", "Ltd", "SAS", "LLC", "S.L.", "BV", "AG")
FIRST = words(
    "Alex Sam Maria Jonas Lea Noah Emma Luca Mia Paul Sofia Ben Anna Tom "
    "Nina Omar Yuki Chen Ravi Ines Lars Eva Hugo Zoe"
)
LAST = words(
    "Smith Müller Martin García Rossi Jensen Kowalski Silva Nakamura "
    "Dubois Schmidt Brown Lopez Novak Berg Costa Wang Patel Fischer "
    "Moreau"
)
DETAILS = (
    "We tried hard to make it work, but the team kept going back to spreadsheets.",
    "The renewal quote was much higher than last year and finance said no.",
    "Support was friendly but slow, and two issues were never fixed.",
    "Our new parent company already pays for a similar tool.",
    "It did most things well; the reporting just never matched what we needed.",
    "We are shutting down the product line this was used for.",
)
CONSENT_WORDING = (
    "Yes, you may contact me later about coming back, for example with an "
    "offer. I can change my mind at any time."
)
WITHDRAWAL_WORDING = "Please do not contact me about coming back."
WORDING_VERSION = "2026-11-v1"
NOTE_BODIES = (
    "Called the champion; they confirm budget was the main issue.",
    "Left a voicemail, will try again next week.",
    "Their admin left in spring, nobody took over the rollout.",
    "Escalated the open bugs to product, see ticket.",
    "Good candidate for the annual-plan offer in Q3.",
    "Asked sales for the original deal notes.",
)
PM_TEXT = (
    "The customer's usage dropped after the second quarter and nobody noticed "
    "until the renewal. The account had no regular check-ins scheduled."
)


class Picker:
    """Fast weighted choice: ``bisect`` on cumulative weights."""

    def __init__(self, weighted: Sequence[tuple[Any, float]]) -> None:
        self.values = [value for value, _ in weighted]
        self.cumulative: list[float] = []
        total = 0.0
        for _, weight in weighted:
            total += weight
            self.cumulative.append(total)
        self.total = total

    def __call__(self, rng: random.Random) -> Any:
        index = bisect.bisect_right(self.cumulative, rng.random() * self.total)
        return self.values[min(index, len(self.values) - 1)]


# --- the data ------------------------------------------------------------------


@dataclass
class Queued:
    """What a review item needs to know about its departure."""

    departure_id: int
    queued_at: datetime
    mrr_cents: int
    reason: str | None
    origin: str
    status: str = "new"
    assignee_id: int | None = None
    updated_at: datetime | None = None
    # The departure's facts the queue keeps a copy of.
    segment: str | None = None
    plan: str | None = None
    cancelled_at: datetime | None = None
    currency: str = "USD"


@dataclass
class Plan:
    """The shape of the data set, from the command line."""

    departures: int
    seed: int
    outbox: bool
    postmortems: int
    unanswered_min_mrr: int
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Staff:
    """The staff users inserted first (ids 1..n)."""

    reviewers: list[int]
    rows: list[tuple[Any, ...]]


def staff_rows(now: datetime) -> Staff:
    """Return 20 CSMs, 3 admins and 2 marketing people with unusable passwords."""
    from argon2 import PasswordHasher

    unusable = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(
        secrets.token_urlsafe(32)
    )
    rows = []
    reviewers = []
    roles = ["csm"] * 20 + ["admin"] * 3 + ["marketing"] * 2
    for number, role in enumerate(roles, start=1):
        rows.append(
            (
                number,
                f"{role}{number}@staff.example",
                f"{FIRST[number % len(FIRST)]} {LAST[number % len(LAST)]} ({role})",
                role,
                unusable,
                True,
                now - timedelta(days=1200 - number),
                now - timedelta(hours=number),
            )
        )
        if role != "marketing":
            reviewers.append(number)
    return Staff(reviewers, rows)


STAFF_COLUMNS = words(
    "id email name role password_hash active created_at last_login_at"
)
DEPARTURE_COLUMNS = words(
    "id public_id external_id company contact_name contact_email plan "
    "mrr_cents currency segment locale csm_email cancelled_at "
    "billing_reason source created_at invited_at first_opened_at "
    "fresh_link_sent_at invitation_sent_at consent_granted answer_wait_seconds"
)
RESPONSE_COLUMNS = words(
    "id departure_id reason reason_other factors details destination "
    "destination_name follow_up_reason follow_up_answer answered_at "
    "updated_at details_saved_at"
)
OUTBOX_COLUMNS = words(
    "id departure_id kind recipient subject body_text body_html status "
    "attempts next_attempt_at locked_until claimed_by last_error "
    "created_at sent_at msgid"
)
CONSENT_COLUMNS = words(
    "id departure_id action channel wording wording_version note created_at"
)
REVIEW_COLUMNS = words(
    "id departure_id status assignee_id queued_at updated_at origin mrr_cents reason "
    "segment plan cancelled_at currency erased"
)
POSTMORTEM_COLUMNS = words(
    "id departure_id what_happened who_was_involved followed_process "
    "process_deviation immediate_steps communication sale_sticking_points "
    "conflict_cycle outside_factors customer_said preventable lessons "
    "winback_recommendation version created_at updated_at updated_by_id "
    "done_at"
)
ROOT_CAUSE_COLUMNS = words("id postmortem_id code is_primary note")
ACTION_COLUMNS = words("id postmortem_id text team owner due_date done done_at")
NOTE_COLUMNS = words("id departure_id author_id body created_at")
AUDIT_COLUMNS = words("id at actor_id departure_id kind detail")
TEXT_BODY = """Hello {name},

We are sorry to see you go. One question, and we will read every answer:

What is the main reason you are leaving?

- It costs more than it is worth to us
  {base}/s/{token}?r=too_expensive
- It is missing something we need
  {base}/s/{token}?r=missing_features
- We found a better alternative
  {base}/s/{token}?r=switched

Or open your personal survey:
{base}/s/{token}

Thank you,
our team

--
Don't want to hear from us about coming back? One click:
{base}/w/{token}
"""
HTML_BODY = (
    '<!doctype html><html lang="en"><body><p>Hello {name},</p>'
    "<p>We are sorry to see you go. One question, and we will read every "
    "answer:</p><p><strong>What is the main reason you are leaving?</strong></p>"
    '<ul><li><a href="{base}/s/{token}?r=too_expensive">It costs more than it is '
    'worth to us</a></li><li><a href="{base}/s/{token}?r=missing_features">It is '
    'missing something we need</a></li><li><a href="{base}/s/{token}?r=switched">'
    'We found a better alternative</a></li></ul><p><a href="{base}/s/{token}">'
    "Open your personal survey</a></p><p>Thank you,<br>our team</p><hr><p>"
    '<a href="{base}/w/{token}">Please do not contact me about coming back</a>'
    "</p></body></html>"
)
BASE = "https://survey.example.com"


class Generator:
    """Makes the rows, table by table, in chunks; remembers what later tables need."""

    def __init__(self, plan: Plan, staff: Staff) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.staff = staff
        self.queued: list[Queued] = []
        self.response_id = 0
        self.consent_id = 0
        self.segment = Picker([(s, w[0]) for s, w in SEGMENTS.items()])
        self.plans = {
            segment: Picker(list(zip(PLANS, weights[1], strict=True)))
            for segment, weights in SEGMENTS.items()
        }
        self.currency = Picker(CURRENCIES)
        self.locale = Picker(LOCALES)
        self.source = Picker(SOURCES)
        self.billing_reason = Picker(BILLING_REASONS)
        self.reason = Picker(REASONS)
        self.destination = Picker([*DESTINATIONS, ("unknown", 0.2)])
        self.start = plan.now - timedelta(days=3 * 365)
        self.span = (plan.now - timedelta(hours=2) - self.start).total_seconds()

    # departures, responses, consent, outbox: one chunk of departures at a time

    def departure_chunks(
        self,
    ) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list, list]]:
        """Yield (departures, responses, consent events, outbox) per chunk."""
        total = self.plan.departures
        for first in range(1, total + 1, BATCH):
            departures: list[tuple[Any, ...]] = []
            responses: list[tuple[Any, ...]] = []
            consents: list[tuple[Any, ...]] = []
            outbox: list[tuple[Any, ...]] = []
            for number in range(first, min(first + BATCH, total + 1)):
                self._one(number, departures, responses, consents, outbox)
            yield departures, responses, consents, outbox

    def _one(
        self,
        number: int,
        departures: list[tuple[Any, ...]],
        responses: list[tuple[Any, ...]],
        consents: list[tuple[Any, ...]],
        outbox: list[tuple[Any, ...]],
    ) -> None:
        rng = self.rng
        now = self.plan.now
        # More departures lately (a growing customer base): t = sqrt(u).
        fraction = math.sqrt(number / self.plan.departures)
        cancelled_at = self.start + timedelta(
            seconds=fraction * self.span - rng.random() * 600
        )
        segment = self.segment(rng)
        plan = self.plans[segment](rng)
        price, mu, sigma = PLANS[plan]
        seats = max(1, min(500, round(rng.lognormvariate(mu, sigma))))
        mrr = price * seats
        first_name, last_name = rng.choice(FIRST), rng.choice(LAST)
        company = (
            f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {number} "
            f"{rng.choice(SUFFIXES)}"
        )
        email = f"{first_name.lower()}.{number}@customer{number % 9973}.example"
        with_csm = rng.random() < SEGMENTS[segment][2]
        source = self.source(rng)
        created_at = cancelled_at + timedelta(seconds=rng.uniform(1, 900))
        invited_at = created_at + timedelta(seconds=rng.uniform(0.1, 5))
        public_id = base64.urlsafe_b64encode(rng.randbytes(9)).decode()
        opened = answered = None
        roll = rng.random()
        if roll < 0.40:
            opened = invited_at + timedelta(seconds=rng.lognormvariate(8.5, 1.5))
            if roll < 0.20 and opened < now:
                answered = opened + timedelta(seconds=rng.uniform(20, 600))
        if opened is not None and opened > now:
            opened = None
        fresh = (
            invited_at + timedelta(days=31)
            if opened is None and rng.random() < 0.02
            else None
        )
        if fresh is not None and fresh > now:
            fresh = None
        sent_at = None
        if self.plan.outbox:
            sent_at = invited_at + timedelta(seconds=rng.uniform(1, 30))
            token = f"{public_id}.{number:x}.{public_id[::-1]}"
            values = {"name": first_name, "base": BASE, "token": token}
            outbox.append(
                (
                    number,
                    number,
                    "invitation",
                    email,
                    f"One question before you go ({company})",
                    TEXT_BODY.format(**values),
                    HTML_BODY.format(**values),
                    "sent",
                    1,
                    invited_at,
                    None,
                    "a1b2c3d4",
                    None,
                    invited_at,
                    sent_at,
                    f"<seed.{number}@survey.example.com>",
                )
            )
        granted = False
        if answered is not None:
            granted = self._answer(number, answered, mrr, responses, consents)
        elif mrr >= self.plan.unanswered_min_mrr and invited_at <= now - timedelta(
            days=7
        ):
            self.queued.append(
                Queued(number, invited_at + timedelta(days=7), mrr, None, "unanswered")
            )
        currency = self.currency(rng)
        departures.append(
            (
                number,
                public_id,
                f"{source}_{number:08d}",
                company,
                f"{first_name} {last_name}",
                email,
                plan,
                mrr,
                currency,
                segment,
                self.locale(rng),
                f"csm{rng.randint(1, 20)}@staff.example" if with_csm else None,
                cancelled_at,
                self.billing_reason(rng) if source == "stripe" else None,
                source,
                created_at,
                invited_at,
                opened,
                fresh,
                sent_at,
                granted,
                int((answered - sent_at).total_seconds())
                if answered is not None and sent_at is not None and answered >= sent_at
                else None,
            )
        )
        if self.queued and self.queued[-1].departure_id == number:
            queued = self.queued[-1]
            queued.segment, queued.plan = segment, plan
            queued.cancelled_at, queued.currency = cancelled_at, currency

    def _answer(
        self,
        number: int,
        answered: datetime,
        mrr: int,
        responses: list[tuple[Any, ...]],
        consents: list[tuple[Any, ...]],
    ) -> bool:
        """Add the answer (and consent events); return whether consent stands."""
        rng = self.rng
        now = self.plan.now
        reason = self.reason(rng)
        factors = sorted(
            {self.reason(rng) for _ in range(rng.randint(0, 2))} - {reason}
        )
        second_page = rng.random() < 0.6
        saved = answered + timedelta(seconds=rng.uniform(30, 400))
        if saved > now:
            second_page = False
        destination = self.destination(rng) if second_page else None
        self.response_id += 1
        responses.append(
            (
                self.response_id,
                number,
                reason,
                "Our board decided to consolidate vendors."
                if reason == "other"
                else None,
                factors,
                rng.choice(DETAILS) if second_page and rng.random() < 0.7 else None,
                destination,
                rng.choice(COMPETITORS) if destination == "competitor" else None,
                reason if second_page and reason in FOLLOW_UPS else None,
                FOLLOW_UPS.get(reason) if second_page else None,
                answered,
                saved if second_page else answered,
                saved if second_page else None,
            )
        )
        self.queued.append(Queued(number, answered, mrr, reason, "answered"))
        if rng.random() < 0.33:
            self.consent_id += 1
            consents.append(
                (
                    self.consent_id,
                    number,
                    "granted",
                    "survey",
                    CONSENT_WORDING,
                    WORDING_VERSION,
                    None,
                    answered,
                )
            )
            if rng.random() < 0.08:
                withdrawn = answered + timedelta(days=rng.uniform(1, 200))
                if withdrawn < now:
                    self.consent_id += 1
                    consents.append(
                        (
                            self.consent_id,
                            number,
                            "withdrawn",
                            "withdrawal_link",
                            WITHDRAWAL_WORDING,
                            WORDING_VERSION,
                            None,
                            withdrawn,
                        )
                    )
                    return False
            return True
        return False

    # the review side, once every departure is known

    def review(self) -> dict[str, list[tuple[Any, ...]]]:
        """Return the rows of review_items, postmortems, root causes, action
        items, notes and audit events."""
        rng = self.rng
        now = self.plan.now
        items = sorted(self.queued, key=lambda q: (q.queued_at, q.departure_id))
        by_mrr = sorted(
            (q for q in items if q.queued_at < now - timedelta(days=14)),
            key=lambda q: -q.mrr_cents,
        )
        wanted = min(self.plan.postmortems, len(by_mrr))
        # The queue is worked biggest loss first: most reviews are of the top
        # 3% by MRR, the rest spread over the older items.
        top = by_mrr[: max(wanted, len(by_mrr) * 3 // 100)]
        chosen = rng.sample(top, min(len(top), wanted * 7 // 10))
        taken = {q.departure_id for q in chosen}
        rest = [q for q in by_mrr if q.departure_id not in taken]
        chosen += rng.sample(rest, min(len(rest), wanted - len(chosen)))

        rows: dict[str, list[tuple[Any, ...]]] = {
            "postmortems": [],
            "root_causes": [],
            "action_items": [],
            "review_notes": [],
            "audit_events": [],
        }
        ids = {"root_causes": 0, "action_items": 0, "review_notes": 0, "audit": 0}

        def audit(at: datetime, actor: int | None, departure: int, kind: str,
                  **detail: Any) -> None:  # fmt: skip
            ids["audit"] += 1
            rows["audit_events"].append(
                (ids["audit"], at, actor, departure, kind, detail)
            )

        def note(departure: int, author: int, at: datetime) -> None:
            ids["review_notes"] += 1
            rows["review_notes"].append(
                (ids["review_notes"], departure, author, rng.choice(NOTE_BODIES), at)
            )
            audit(at, author, departure, "note.added", note_id=ids["review_notes"])

        codes = list(ROOT_CAUSES)
        for number, item in enumerate(chosen, start=1):
            reviewer = rng.choice(self.staff.reviewers)
            started = item.queued_at + timedelta(days=rng.uniform(0.5, 10))
            done = rng.random() < 0.75
            finished = started + timedelta(days=rng.uniform(0.1, 4)) if done else None
            item.assignee_id = reviewer
            audit(started, reviewer, item.departure_id, "review.assigned",
                  old=None, new=reviewer)  # fmt: skip
            audit(started, reviewer, item.departure_id, "review.status",
                  old="new", new="in_review")  # fmt: skip
            versions = rng.randint(1, 4)
            updated = finished or started + timedelta(hours=rng.uniform(1, 48))
            for _ in range(versions):
                audit(updated, reviewer, item.departure_id, "postmortem.saved",
                      version=versions)  # fmt: skip
            item.status, item.updated_at = "in_review", updated
            if finished is not None:
                audit(finished, reviewer, item.departure_id, "postmortem.done")
                audit(finished, reviewer, item.departure_id, "review.status",
                      old="in_review", new="postmortem_done")  # fmt: skip
                item.status = "postmortem_done"
                if rng.random() < 0.7:
                    closed = finished + timedelta(days=rng.uniform(0.1, 14))
                    audit(closed, reviewer, item.departure_id, "review.status",
                          old="postmortem_done", new="closed")  # fmt: skip
                    item.status, item.updated_at = "closed", closed
            rows["postmortems"].append(
                (
                    number,
                    item.departure_id,
                    PM_TEXT,
                    "The account's champion, their finance lead, our CSM.",
                    rng.choice(("yes", "partly", "no")),
                    "No QBR after the champion left." if rng.random() < 0.5 else None,
                    "Offered a call; no answer yet.",
                    "Mostly email, monthly at best.",
                    None if rng.random() < 0.5 else "Price per seat felt high.",
                    None,
                    "Budget freeze across their company."
                    if rng.random() < 0.3
                    else None,
                    "They liked the product but could not justify the cost.",
                    rng.choice(("yes", "partly", "no")) if done else None,
                    "Watch usage drops and call within a week." if done else None,
                    rng.choice(("do_not_contact", "nurture", "offer"))
                    if done
                    else None,
                    versions,
                    started,
                    updated,
                    reviewer,
                    finished,
                )
            )
            causes = rng.sample(codes, rng.choice((1, 1, 2, 2, 3)))
            for index, code in enumerate(causes):
                ids["root_causes"] += 1
                rows["root_causes"].append(
                    (
                        ids["root_causes"],
                        number,
                        code,
                        index == 0,
                        "Their parent company mandated a tool."
                        if code == "other"
                        else None,
                    )
                )
            for _ in range(rng.choice((0, 1, 1, 2, 3))):
                ids["action_items"] += 1
                is_done = finished is not None and rng.random() < 0.4
                due = (finished or started) + timedelta(days=rng.randint(7, 60))
                rows["action_items"].append(
                    (
                        ids["action_items"],
                        number,
                        "Add a usage-drop alert for accounts like this one.",
                        ROOT_CAUSES[causes[0]],
                        f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                        due.date() if rng.random() < 0.8 else None,
                        is_done,
                        due if is_done and due < now else None,
                    )
                )
            for _ in range(rng.choice((0, 1, 1, 2))):
                note(item.departure_id, reviewer, started + timedelta(hours=1))

        # Some more in review without a postmortem; some new ones assigned.
        reviewed = {q.departure_id for q in chosen}
        fresh = [q for q in items if q.departure_id not in reviewed]
        for item in rng.sample(fresh, min(len(fresh), self.plan.postmortems // 2)):
            reviewer = rng.choice(self.staff.reviewers)
            started = item.queued_at + timedelta(days=rng.uniform(0.5, 10))
            if started > now:
                continue
            item.status, item.assignee_id, item.updated_at = (
                "in_review",
                reviewer,
                started,
            )
            reviewed.add(item.departure_id)
            audit(started, reviewer, item.departure_id, "review.assigned",
                  old=None, new=reviewer)  # fmt: skip
            audit(started, reviewer, item.departure_id, "review.status",
                  old="new", new="in_review")  # fmt: skip
            if rng.random() < 0.5:
                note(item.departure_id, reviewer, started)
        for item in items:
            if item.status == "new" and rng.random() < 0.08:
                reviewer = rng.choice(self.staff.reviewers)
                at = item.queued_at + timedelta(hours=rng.uniform(1, 72))
                if at < now:
                    item.assignee_id, item.updated_at = reviewer, at
                    audit(at, reviewer, item.departure_id, "review.assigned",
                          old=None, new=reviewer)  # fmt: skip
                    if rng.random() < 0.1:
                        note(item.departure_id, reviewer, at)

        rows["review_items"] = [
            (
                number,
                q.departure_id,
                q.status,
                q.assignee_id,
                q.queued_at,
                q.updated_at or q.queued_at,
                q.origin,
                q.mrr_cents,
                q.reason,
                q.segment,
                q.plan,
                q.cancelled_at,
                q.currency,
                False,
            )
            for number, q in enumerate(items, start=1)
        ]
        rows["audit_events"].sort(key=lambda row: row[1])
        rows["audit_events"] = [
            (number, *row[1:]) for number, row in enumerate(rows["audit_events"], 1)
        ]
        return rows


# --- writing ------------------------------------------------------------------


class Writer:
    """Writes rows into one open transaction: Core executemany, or COPY."""

    def __init__(self, connection: Connection, method: str) -> None:
        self.connection = connection
        self.method = method
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def write(
        self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        if not rows:
            return
        started = time.perf_counter()
        if self.method == "copy":
            self._copy(table, columns, rows)
        else:
            for start in range(0, len(rows), BATCH):
                batch = rows[start : start + BATCH]
                self.connection.execute(
                    insert(table),
                    [dict(zip(columns, row, strict=True)) for row in batch],
                )
        name = table.name
        self.counts[name] = self.counts.get(name, 0) + len(rows)
        self.seconds[name] = self.seconds.get(name, 0.0) + (
            time.perf_counter() - started
        )

    def _copy(
        self, table: Table, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
    ) -> None:
        json_at = [
            index
            for index, name in enumerate(columns)
            if isinstance(table.c[name].type, JSON)
        ]
        raw = self.connection.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
            with cursor.copy(statement) as copy:
                for row in rows:
                    if json_at:
                        values = list(row)
                        for index in json_at:
                            values[index] = json.dumps(values[index])
                        copy.write_row(values)
                    else:
                        copy.write_row(row)


def migrate(url: str) -> None:
    """Create the schema with the project's own command (Alembic migrations)."""
    with tempfile.TemporaryDirectory(prefix="seed-review-") as instance:
        try:
            bench_survey.migrate(bench_survey.survey_env(Path(instance), 0, url))
        except bench_survey.BenchError as exc:
            raise SeedError(str(exc)) from None


class SeedError(RuntimeError):
    """The generator could not run; the message says why."""


def loading_engine(url: str) -> Engine:
    """An engine for the bulk load (SQLite: no fsync, big cache, no FK checks)."""
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # A rollback journal in memory: the file starts empty, so it stays small.
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA cache_size=-1048576")  # 1 GiB
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def check_empty(engine: Engine) -> None:
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM departures")).scalar()
    if count:
        raise SeedError(
            f"the database has {count:,} departures already; give an empty one"
        )


def rebuild_tallies(connection: Connection) -> None:
    """Count the departures per day as the app does when it writes them."""
    from survey.insights.tallied import rebuild

    rebuild(connection)


def tables() -> dict[str, Table]:
    import survey.answers.models
    import survey.audit
    import survey.consent
    import survey.departures.models
    import survey.outbox
    import survey.review.models
    import survey.review_items
    import survey.staff.models  # noqa: F401  (registers the tables)
    from survey.db import Base

    return dict(Base.metadata.tables)


def seed(url: str, plan: Plan, method: str) -> int:
    """Migrate, fill and analyze; return the number of rows written."""
    started = time.perf_counter()
    migrate(url)
    print(f"migrated in {time.perf_counter() - started:.1f}s", flush=True)
    engine = loading_engine(url)
    check_empty(engine)
    table = tables()
    staff = staff_rows(plan.now)
    generator = Generator(plan, staff)
    load_started = time.perf_counter()
    with engine.begin() as connection:
        writer = Writer(connection, method)
        writer.write(table["staff_users"], STAFF_COLUMNS, staff.rows)
        done = 0
        for departures, responses, consents, outbox in generator.departure_chunks():
            writer.write(table["departures"], DEPARTURE_COLUMNS, departures)
            writer.write(table["responses"], RESPONSE_COLUMNS, responses)
            writer.write(table["consent_events"], CONSENT_COLUMNS, consents)
            writer.write(table["outbox_messages"], OUTBOX_COLUMNS, outbox)
            done += len(departures)
            if done % 100_000 < BATCH:
                elapsed = time.perf_counter() - load_started
                print(
                    f"  {done:>9,} departures  {elapsed:6.1f}s  "
                    f"{done / elapsed:,.0f} departures/s",
                    flush=True,
                )
        review = generator.review()
        for name, columns in (
            ("review_items", REVIEW_COLUMNS),
            ("postmortems", POSTMORTEM_COLUMNS),
            ("root_causes", ROOT_CAUSE_COLUMNS),
            ("action_items", ACTION_COLUMNS),
            ("review_notes", NOTE_COLUMNS),
            ("audit_events", AUDIT_COLUMNS),
        ):
            writer.write(table[name], columns, review[name])
        tallies_started = time.perf_counter()
        rebuild_tallies(connection)  # the app keeps them as it writes; a loader counts
        print(f"  tallies {time.perf_counter() - tallies_started:.1f}s", flush=True)
        if engine.dialect.name == "postgresql":
            for name in writer.counts:
                ids = table[name].c.id
                last = select(func.max(ids)).scalar_subquery()
                sequence = func.pg_get_serial_sequence(name, "id")
                connection.execute(select(func.setval(sequence, last)))
        commit_started = time.perf_counter()
    load_seconds = time.perf_counter() - load_started
    print(f"  commit {time.perf_counter() - commit_started:.1f}s")
    analyze_started = time.perf_counter()
    finish(engine)
    analyze_seconds = time.perf_counter() - analyze_started
    engine.dispose()

    total_rows = sum(writer.counts.values())
    print(f"\n{'table':<16}{'rows':>12}{'seconds':>9}{'rows/s':>12}")
    for name, count in writer.counts.items():
        seconds = writer.seconds[name]
        print(f"{name:<16}{count:>12,}{seconds:>9.1f}{count / seconds:>12,.0f}")
    print(
        f"\nloaded {total_rows:,} rows in {load_seconds:.1f}s "
        f"({total_rows / load_seconds:,.0f} rows/s, generation included); "
        f"{'VACUUM ANALYZE' if engine.dialect.name == 'postgresql' else 'ANALYZE'} "
        f"{analyze_seconds:.1f}s; total {time.perf_counter() - started:.1f}s"
    )
    return total_rows


def finish(engine: Engine) -> None:
    """Gather planner statistics; on SQLite, go back to WAL as the app expects."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as connection:
            connection.execute(text("VACUUM (ANALYZE)"))
        return
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    raw = engine.raw_connection()  # outside any transaction: the mode can change
    try:
        raw.driver_connection.execute("PRAGMA journal_mode=WAL")  # type: ignore[union-attr]
    finally:
        raw.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fill a database with departures and a review queue."
    )
    parser.add_argument(
        "--database-url",
        required=True,
        help="an empty (or new SQLite) database, e.g. sqlite:////tmp/b/r.sqlite3",
    )
    parser.add_argument("--departures", type=int, default=1_000_000)
    parser.add_argument(
        "--postmortems", type=int, default=5_000, help="reviewed items (5000)"
    )
    parser.add_argument(
        "--unanswered-min-mrr",
        type=int,
        default=500_000,
        help="queue unanswered departures losing this many cents or more (500000)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-outbox", action="store_true")
    parser.add_argument(
        "--method",
        choices=("copy", "insert"),
        default=None,
        help="PostgreSQL: COPY (default) or Core insert executemany",
    )
    args = parser.parse_args(argv)
    if args.departures < 1:
        parser.error("--departures must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = make_url(args.database_url)
    method = args.method or (
        "copy" if url.get_backend_name() == "postgresql" else "insert"
    )
    if method == "copy" and url.get_backend_name() != "postgresql":
        print("--method copy needs PostgreSQL", file=sys.stderr)
        return 2
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        departures=args.departures,
        seed=args.seed,
        outbox=not args.no_outbox,
        postmortems=args.postmortems,
        unanswered_min_mrr=args.unanswered_min_mrr,
    )
    print(
        f"seeding {args.departures:,} departures into "
        f"{url.render_as_string(hide_password=True)} ({method})",
        flush=True,
    )
    try:
        seed(args.database_url, plan, method)
    except SeedError as error:
        print(f"seed could not run: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

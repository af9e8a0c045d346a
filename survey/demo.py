"""Realistic demo data for a first look (``flask --app survey demo``).

A year of losses that tells a story on ``/insights``, written through the
same verbs the pages, the API and the worker use:

- **a rising cause**: in the last four weeks a run of bugs (stated reason
  ``product_issues``, and the postmortems' root cause ``product_issues``)
  comes at several times its usual rate, and is flagged as recurring;
- **said versus found**: customers name the price or a missing feature,
  and the postmortems often find something else (failed adoption, a poor
  fit, an oversold deal);
- **a fix that worked**: failed adoption was the first root cause until the
  onboarding team launched a guided onboarding about four and a half months
  ago (its action items done then); departures with that cause fell after.

History is written in the order it happened, with the app's clock set to
each moment (see ``_DemoClock``): every time a verb stamps (an answer, a
consent event, a postmortem, an audit entry, a signed link in an email) is
in the past, where it belongs, and consent events stay append-only. The
one step with no verb to call is the mail worker's: the demo marks an
invitation sent itself (history: no ``.eml`` file); the newest ones stay
queued for the worker.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from survey import clock, links, outbox
from survey.answers.models import Response
from survey.answers.service import find_response, record_reason, submit_details
from survey.branding import service as branding
from survey.branding.logos import checked_logo
from survey.consent import record_consent, withdrawal_wording
from survey.departures.models import Departure
from survey.departures.schemas import DepartureIn
from survey.departures.service import record_departure
from survey.public.service import mark_opened
from survey.review import queue
from survey.review.postmortems import (
    ActionItemInput,
    PostmortemInput,
    get_postmortem,
    mark_action_done,
    save_postmortem,
)
from survey.review_items import ReviewItem
from survey.staff import passwords
from survey.staff import service as staff_service
from survey.staff.models import ADMIN, CSM
from survey.vocabulary import FOLLOW_UPS, REASONS, ROOT_CAUSES
from survey.wording import service as wordings

DEMO_ADMIN_EMAIL = "admin@demo.example"


def demo_admin(session: Session) -> tuple[str, str]:
    """Create the demo admin, or give it a fresh password; return both.

    A new password on each run: it is printed, never stored in the clear.
    """
    user = staff_service.find_user(session, DEMO_ADMIN_EMAIL)
    password = passwords.generate_password()
    if user is None:
        staff_service.create_user(
            session,
            email=DEMO_ADMIN_EMAIL,
            name="Demo Admin",
            role=ADMIN,
            password=password,
        )
    else:
        user.password_hash = passwords.hash_password(password)
        user.active = True
        user.role = ADMIN
    return DEMO_ADMIN_EMAIL, password


#: The demo company: who asks the demo customers.
DEMO_BRAND = {
    "company_name": "Northwind Analytics",
    "sender_name": "Priya at Northwind Analytics",
    "reply_to": "success@northwind.example",
    "website_url": "https://northwind.example/",
    "accent_color": "#146c43",
}
DEMO_LOGO = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48">
<title>Northwind Analytics</title>
<rect width="48" height="48" rx="10" fill="#146c43"/>
<path d="M12 36V12l24 24V12" fill="none" stroke="#fff" stroke-width="5"
 stroke-linecap="round" stroke-linejoin="round"/>
</svg>"""


def demo_brand(session: Session) -> bool:
    """Give the survey the demo company's brand, unless one is set; return
    whether it was set."""
    if branding.current().company_name:
        return False
    branding.save_brand(session, DEMO_BRAND, logo=checked_logo(DEMO_LOGO))
    return True


#: What every demo departure's external id starts with.
DEMO_PREFIX = "demo-"


def holds_other_data(session: Session) -> bool:
    """Return whether the database holds departures that are not demo data."""
    others = select(Departure.id).where(
        ~Departure.external_id.startswith(DEMO_PREFIX, autoescape=True)
    )
    return session.scalar(others.limit(1)) is not None


def load_demo(session: Session, *, seed: int = 7) -> list[str]:
    """Fill an empty database with a year of departures, answers and
    postmortems; return two survey links.

    The links are demo customers' only, never a real customer's: the
    newest demo departures not answered yet, whose survey is still open.
    """
    demo = Departure.external_id.startswith(DEMO_PREFIX, autoescape=True)
    if session.scalar(select(func.count()).select_from(Departure)) == 0:
        _fill(session, random.Random(seed))
    unanswered = session.scalars(
        select(Departure.public_id)
        .outerjoin(Response)
        .where(demo, Response.id.is_(None), Departure.erased_at.is_(None))
        .order_by(Departure.cancelled_at.desc(), Departure.id.desc())
        .limit(2)
    ).all()
    return [links.survey_url(public_id) for public_id in unanswered]


# --- the cast -------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    """Return the words of ``text`` (long lists of names, kept short to read)."""
    return tuple(text.split())


#: Made-up company names: every pair of a first and a second word is one.
COMPANY_WORDS = _words(
    "Northwind Blue-Yonder Contoso Fabrikam Tailspin Wide-World Adventure Coho "
    "Lucerne Trey Litware Proseware Southridge Humongous Woodgrove Alpine Wingtip "
    "Adatum Fourth-Coffee Margie's Graphic Tasmanian Relecloud Bellows"
)
COMPANY_KINDS = _words(
    "Traders Airlines Pharma Fibers Toys Importers Cycles Winery Publishing "
    "Research Labs Video Insurance Bank Logistics Foods Studios Energy Media "
    "Outfitters Consulting Dental"
)
#: Legal forms of the companies that pay in euros.
EURO_FORMS = ("GmbH", "SARL", "B.V.", "S.L.", "AB", "Oy")
FIRST_NAMES = _words(
    "Ana Sven Hanna Frederique Martin Laurence Elisabeth Victoria Patricio "
    "Francisco Yang Pedro Jaime Carlos Felipe Fran Giovanni Catherine Alejandra "
    "Noemi Tomas Ingrid Kofi Leila Mateo Aiko Ravi Olga Bruno Zainab"
)
LAST_NAMES = _words(
    "Trujillo Ottlieb Moos Citeaux Sommer Lebihan Lincoln Ashworth Simpson Chang "
    "Wang Afonso Yorres Gonzalez Izquierdo Wilson Rovelli Dewey Camino Brandt "
    "Okafor Lindgren Mensah Hadid Ferreira Tanaka Iyer Petrova Costa Diallo"
)

#: The demo's CSMs (staff users who cannot sign in: nobody knows their
#: passwords) and the segments each looks after.
CSMS = (
    ("Robin Castell", "robin.castell@demo.example", ("enterprise", "mid-market")),
    ("Noor Haddad", "noor.haddad@demo.example", ("mid-market", "smb")),
    ("Jonas Weber", "jonas.weber@demo.example", ("smb",)),
)
SEGMENTS = {"smb": 55, "mid-market": 30, "enterprise": 15}
PLANS = {
    "smb": {"starter": 70, "growth": 30},
    "mid-market": {"growth": 80, "enterprise": 20},
    "enterprise": {"enterprise": 100},
}
#: A seat's monthly price, in minor units, per currency and plan.
PLAN_MRR = {
    "USD": {"starter": 4_900, "growth": 29_900, "enterprise": 249_000},
    "EUR": {"starter": 4_500, "growth": 27_900, "enterprise": 229_000},
}
EURO_SHARE = 0.35

# --- what really happened, and what the customer says ------------------------------

#: How often each root cause is the real one, in ordinary months.
CAUSE_WEIGHTS = {
    "poor_fit": 10,
    "oversold": 8,
    "failed_adoption": 14,
    "product_issues": 14,
    "poor_service": 10,
    "goals_not_met": 10,
    "customer_business_failure": 14,
    "competitor": 14,
    "other": 3,
}
#: Before the guided onboarding, failed adoption came far more often; after
#: it, far less (the fix that worked).
ONBOARDING_FIX_DAYS_AGO = 137
FAILED_ADOPTION_BEFORE_FIX, FAILED_ADOPTION_AFTER_FIX = 2.8, 0.35
#: Support's first-response target, a smaller fix.
SUPPORT_FIX_DAYS_AGO = 96
POOR_SERVICE_AFTER_FIX = 0.6
#: A buggy release: this many more losses to product issues, spread over
#: the last days (inside the insights' last-30-days window), their customers
#: saying so: the rising cause, several times its usual rate.
RISING_DAYS = 27
RISING_LOSSES = 8

#: What a customer whose loss had this root cause picks as the main reason.
SAID_GIVEN_CAUSE: dict[str, dict[str, int]] = {
    "poor_fit": {
        "too_expensive": 40,
        "missing_features": 30,
        "no_longer_needed": 20,
        "other": 10,
    },
    "oversold": {"missing_features": 35, "not_meeting_goals": 35, "too_expensive": 30},
    "failed_adoption": {
        "hard_to_adopt": 35,
        "too_expensive": 35,
        "no_longer_needed": 15,
        "not_meeting_goals": 15,
    },
    "product_issues": {"product_issues": 65, "missing_features": 20, "switched": 15},
    "poor_service": {"poor_service": 70, "product_issues": 15, "switched": 15},
    "goals_not_met": {"not_meeting_goals": 55, "too_expensive": 30, "switched": 15},
    "customer_business_failure": {
        "business_change": 70,
        "too_expensive": 20,
        "no_longer_needed": 10,
    },
    "competitor": {"switched": 65, "too_expensive": 25, "missing_features": 10},
    "other": {"other": 70, "no_longer_needed": 30},
}
OTHER_SAID = (
    "We are consolidating vendors.",
    "Our parent company requires another tool.",
    "The project we bought it for has ended.",
    "Procurement would not renew without a new security review.",
    "Our new CFO cancels every tool under review this year.",
)
OTHER_FOUND = (
    "Vendor consolidation decided at group level.",
    "A procurement rule we could not meet in time.",
)
#: Page 2 in the customer's words: details, and the follow-up answer.
SAID_DETAILS: dict[str, tuple[str, str]] = {
    "too_expensive": (
        "We liked the product but the renewal price doubled.",
        "Around half the price.",
    ),
    "missing_features": (
        "We kept exporting to spreadsheets to do what we needed.",
        "Scheduled PDF reports.",
    ),
    "product_issues": (
        "Exports to our BI tool failed several times a week.",
        "CSV exports timing out.",
    ),
    "hard_to_adopt": (
        "Our champion left and nobody else picked it up.",
        "Nobody had the time to set it up properly.",
    ),
    "poor_service": (
        "Support took days to answer a blocking issue.",
        "Answer within a day, not a week.",
    ),
    "not_meeting_goals": (
        "We expected to spend less time on monthly reporting.",
        "Fewer manual reports each month.",
    ),
    "switched": (
        "Our CRM now includes most of what we used here.",
        "Simpler, and already part of our CRM.",
    ),
    "no_longer_needed": ("The team that used it was disbanded.", ""),
    "business_change": (
        "We merged with a company that uses a different tool.",
        "A pause option would have helped.",
    ),
    "other": ("Nothing more to add.", ""),
}
COMPETITORS = ("Globex Analytics", "Initech Insights", "Acme Reports", "Umbrella BI")

#: The postmortem's story per primary root cause: what happened, the lesson.
CAUSE_STORIES: dict[str, tuple[str, str]] = {
    "poor_fit": (
        "They needed a field-service tool; we sold them reporting.",
        "Check the use case on the first call, before the demo.",
    ),
    "oversold": (
        "The sale promised a custom integration that was never on the roadmap.",
        "Promise only what ships; the roadmap is not a commitment.",
    ),
    "failed_adoption": (
        "Bought, set up by one person, barely used after the first month.",
        "Nobody owned their first weeks with us; a new account needs a guide.",
    ),
    "product_issues": (
        "Exports failed repeatedly and the fix took weeks.",
        "Bugs that block daily work need a date, told to the customer.",
    ),
    "poor_service": (
        "A blocking ticket waited five days for a first answer.",
        "Enterprise tickets need a first answer the same day.",
    ),
    "goals_not_met": (
        "They wanted fewer manual reports; nobody checked whether they got them.",
        "Write the customer's goal down at the start and review it each quarter.",
    ),
    "customer_business_failure": (
        "Their budget was cut in a restructuring; every tool was cancelled.",
        "Nothing to change in the product; a pause plan might have kept them.",
    ),
    "competitor": (
        "A competitor offered the same at a lower price, bundled with their CRM.",
        "Know where we win against bundled tools and say it early.",
    ),
    "other": (
        "A decision made far above our contact, for reasons of their own.",
        "Ask early who decides renewals.",
    ),
}
#: Action items a postmortem with this primary root cause may list.
CAUSE_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "poor_fit": (
        ("Add a use-case check to the discovery call script", "sales"),
        ("Stop outbound campaigns to companies with under five seats", "sales"),
    ),
    "oversold": (
        ("Review the demo script: no promises of custom integrations", "sales"),
        ("Share the roadmap policy with every account executive", "sales"),
    ),
    "failed_adoption": (
        ("Book a kick-off call within the first week of every account", "onboarding"),
        ("Alert the CSM when a new account is idle for 14 days", "onboarding"),
        ("Write a first-month checklist for new admins", "onboarding"),
    ),
    "product_issues": (
        ("Fix the CSV export timeouts on large accounts", "product"),
        ("Put the sync errors on the reliability backlog", "product"),
        ("Publish a status page for export and sync incidents", "product"),
    ),
    "poor_service": (
        ("Set a first-response target of four business hours", "support"),
        ("Give every enterprise account a named support contact", "support"),
    ),
    "goals_not_met": (
        ("Write success goals into every onboarding plan", "customer_success"),
        (
            "Review goals quarterly with growth and enterprise accounts",
            "customer_success",
        ),
    ),
    "customer_business_failure": (
        ("Offer a pause plan before a cancellation goes through", "sales"),
    ),
    "competitor": (
        ("Update the comparison page for bundled CRM tools", "marketing"),
        ("Brief the CSMs on the competitors' new pricing", "marketing"),
    ),
    "other": (("Discuss at the monthly churn review", "other"),),
}
#: The onboarding team's launch: the last action done on failed adoption.
ONBOARDING_LAUNCH = (
    "Launch the guided onboarding programme for every new account",
    "onboarding",
)
#: Preventable? yes / partly / no, per primary root cause.
PREVENTABLE: dict[str, dict[str, int]] = {
    "poor_fit": {"yes": 50, "partly": 40, "no": 10},
    "oversold": {"yes": 70, "partly": 30},
    "failed_adoption": {"yes": 50, "partly": 40, "no": 10},
    "product_issues": {"yes": 30, "partly": 50, "no": 20},
    "poor_service": {"yes": 70, "partly": 30},
    "goals_not_met": {"yes": 30, "partly": 60, "no": 10},
    "customer_business_failure": {"partly": 20, "no": 80},
    "competitor": {"yes": 20, "partly": 40, "no": 40},
    "other": {"partly": 50, "no": 50},
}


def _pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    codes = list(weights)
    return rng.choices(codes, weights=[weights[c] for c in codes])[0]


class _Deck:
    """Draws codes in proportion to their weights, like cards from a shuffled
    deck (a new one when it runs out): each comes up about its share in any
    few weeks, not only over the year, so chance alone flags little as
    recurring and the story's own signals stand out."""

    def __init__(self, rng: random.Random, cards_per_deck: int) -> None:
        self.rng = rng
        self.size = cards_per_deck
        self.decks: dict[tuple[tuple[str, float], ...], list[str]] = {}

    def draw(self, weights: Mapping[str, float]) -> str:
        cards = self.decks.setdefault(tuple(weights.items()), [])
        if not cards:
            total = sum(weights.values())
            for code, weight in weights.items():
                cards += [code] * max(1, round(weight * self.size / total))
            self.rng.shuffle(cards)
        return cards.pop()


def _between(rng: random.Random, low: timedelta, high: timedelta) -> timedelta:
    return low + (high - low) * rng.random()


def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in text.lower() if ch.isalnum())


# --- the plan: one loss, from cancellation to closed review -----------------------


@dataclass
class _Action:
    text: str
    team: str
    due: date
    done_at: datetime | None
    id: int | None = None


@dataclass
class _Loss:
    """One demo departure and everything that happens to it, with when."""

    number: int
    company: str
    contact: str
    email: str
    segment: str
    plan: str
    currency: str
    mrr_cents: int
    csm: int
    source: str
    cancelled_at: datetime
    #: The real primary root cause, and contributing ones.
    cause: str
    contributing: list[str]
    #: None: never answers.
    reason: str | None
    reason_other: str | None = None
    sent_at: datetime | None = None
    opened_at: datetime | None = None
    answered_at: datetime | None = None
    details_at: datetime | None = None
    destination: str = "unknown"
    destination_name: str | None = None
    consent: bool | None = None
    withdrawn_at: datetime | None = None
    assigned_at: datetime | None = None
    drafted_at: datetime | None = None
    finished_at: datetime | None = None
    closed_at: datetime | None = None
    preventable: str = "partly"
    followed_process: str = "yes"
    actions: list[_Action] = field(default_factory=list)
    public_id: str = ""


def _cause_weights(age_days: float) -> dict[str, float]:
    """The real causes' weights for a loss ``age_days`` old: the fixes' shape."""
    weights: dict[str, float] = dict(CAUSE_WEIGHTS)
    if age_days > ONBOARDING_FIX_DAYS_AGO:
        weights["failed_adoption"] *= FAILED_ADOPTION_BEFORE_FIX
    else:
        weights["failed_adoption"] *= FAILED_ADOPTION_AFTER_FIX
    if age_days <= SUPPORT_FIX_DAYS_AGO:
        weights["poor_service"] *= POOR_SERVICE_AFTER_FIX
    return weights


def _launches(now: datetime) -> dict[str, datetime]:
    """When each fix was launched, by the root cause it fixed."""
    return {
        "failed_adoption": now - timedelta(days=ONBOARDING_FIX_DAYS_AGO),
        "poor_service": now - timedelta(days=SUPPORT_FIX_DAYS_AGO),
    }


#: The history's length, and departures a day in ordinary months (the
#: causes' weights scale it).
DAYS, DAILY_RATE = 365, 0.8
#: Cards in a deck of root causes, and in each deck of stated reasons.
CAUSE_DECK, SAID_DECK = 20, 10
#: Action items on other causes than the fixes' are written lately only
#: (within these days), most of them not due yet.
RECENT_ACTIONS_DAYS = 75


def _plan(rng: random.Random, now: datetime) -> list[_Loss]:
    """Draw a year of losses, oldest first (deterministic for ``rng``)."""
    names = [f"{a} {b}".replace("-", " ") for a in COMPANY_WORDS for b in COMPANY_KINDS]
    rng.shuffle(names)
    ordinary = sum(CAUSE_WEIGHTS.values())
    cancelled: list[datetime] = []
    for day in range(DAYS - 1, -1, -1):
        weights = _cause_weights(day + 0.5)
        rate = DAILY_RATE * sum(weights.values()) / ordinary
        count = sum(rng.random() < rate / 3 for _ in range(3))
        cancelled += sorted(
            now - timedelta(days=day + rng.random()) for _ in range(count)
        )
    # The two newest are the links printed: answered by nobody yet, inside
    # the current month (also just after it began), their emails still queued.
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elapsed = now - month_start
    newest = [
        now - min(timedelta(hours=3), elapsed * 2 / 3),
        now - min(timedelta(minutes=40), elapsed / 3),
    ]
    rising = [
        now - timedelta(days=1 + (RISING_DAYS - 2) * (i + rng.random()) / RISING_LOSSES)
        for i in range(RISING_LOSSES)
    ]
    kinds = sorted(
        [(when, "ordinary") for when in cancelled]
        + [(when, "rising") for when in rising]
        + [(when, "newest") for when in newest]
    )
    causes, said = _Deck(rng, CAUSE_DECK), _Deck(rng, SAID_DECK)
    losses = [
        _loss(rng, number, when, now, names[number % len(names)], kind, causes, said)
        for number, (when, kind) in enumerate(kinds, start=1)
    ]
    _plan_fixes(losses, now)
    return losses


def _loss(
    rng: random.Random,
    number: int,
    cancelled_at: datetime,
    now: datetime,
    name: str,
    kind: str,
    causes: _Deck,
    said: _Deck,
) -> _Loss:
    """Plan one loss: ``kind`` is ``ordinary``, ``rising`` (the buggy
    release's: answered, and saying so) or ``newest`` (a link to print:
    nothing happened yet, its invitation still queued)."""
    age_days = (now - cancelled_at) / timedelta(days=1)
    segment = _pick(rng, SEGMENTS)
    plan = _pick(rng, PLANS[segment])
    currency = "EUR" if rng.random() < EURO_SHARE else "USD"
    company = f"{name} {rng.choice(EURO_FORMS)}" if currency == "EUR" else name
    contact = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    first, last = (_ascii(part) for part in contact.split())
    seats = rng.choice((1, 1, 2) if plan == "enterprise" else (1, 1, 2, 3))
    csm = rng.choice([i for i, (_, _, segs) in enumerate(CSMS) if segment in segs])
    cause = (
        "product_issues" if kind == "rising" else causes.draw(_cause_weights(age_days))
    )
    others = [c for c in ROOT_CAUSES if c not in (cause, "other")]
    contributing = rng.sample(others, rng.choice((0, 0, 0, 1, 1, 2)))
    loss = _Loss(
        number=number,
        company=company,
        contact=contact,
        email=f"{first}.{last}@{_ascii(company)[:20]}{number}.example",
        segment=segment,
        plan=plan,
        currency=currency,
        mrr_cents=PLAN_MRR[currency][plan] * seats,
        csm=csm,
        source=rng.choice(("api", "api", "stripe", "stripe", "csv")),
        cancelled_at=cancelled_at,
        cause=cause,
        contributing=contributing,
        reason=None,
        preventable=_pick(rng, PREVENTABLE[cause]),
        followed_process=_pick(rng, {"yes": 60, "partly": 30, "no": 10}),
    )
    if kind == "newest":
        return loss
    loss.sent_at = cancelled_at + _between(
        rng, timedelta(minutes=1), timedelta(minutes=9)
    )
    fate = 0.0 if kind == "rising" else rng.random()
    if fate < 0.7:  # answers
        loss.reason = (
            "product_issues" if kind == "rising" else said.draw(SAID_GIVEN_CAUSE[cause])
        )
        if loss.reason == "other":
            loss.reason_other = rng.choice(OTHER_SAID)
        wait = rng.random()
        if wait < 0.45:
            delay = _between(rng, timedelta(minutes=5), timedelta(hours=3))
        elif wait < 0.8:
            delay = _between(rng, timedelta(hours=3), timedelta(hours=36))
        else:
            delay = _between(rng, timedelta(hours=36), timedelta(days=7))
        loss.answered_at = loss.sent_at + delay
        loss.opened_at = loss.answered_at - _between(
            rng, timedelta(minutes=1), timedelta(minutes=4)
        )
        if rng.random() < 0.7:
            loss.details_at = loss.answered_at + _between(
                rng, timedelta(minutes=1), timedelta(minutes=5)
            )
            if loss.reason == "switched" or cause == "competitor":
                loss.destination = "competitor"
                loss.destination_name = rng.choice(COMPETITORS)
            else:
                loss.destination = rng.choice(("in_house", "none", "unknown"))
            loss.consent = rng.random() < 0.45
            if loss.consent and rng.random() < 0.1:
                loss.withdrawn_at = loss.details_at + timedelta(days=rng.uniform(5, 60))
    elif fate < 0.82:  # opens, never answers
        loss.opened_at = loss.sent_at + timedelta(hours=rng.uniform(0.5, 96))
    # Staff review: every answer, and unanswered losses worth it (queued a
    # week after the invitation, see ``queue.queue_unanswered``).
    if loss.answered_at is not None:
        if rng.random() > 0.85:
            return loss
        loss.assigned_at = loss.answered_at + timedelta(hours=rng.uniform(2, 30))
    elif segment != "smb" and rng.random() < 0.45:
        loss.assigned_at = cancelled_at + timedelta(days=rng.uniform(8.5, 10))
    else:
        return loss
    loss.drafted_at = loss.assigned_at + timedelta(days=rng.uniform(0.5, 5))
    if rng.random() < 0.94:
        loss.finished_at = loss.drafted_at + timedelta(days=rng.uniform(0.5, 10))
        if rng.random() < 0.65:
            loss.closed_at = loss.finished_at + timedelta(days=rng.uniform(3, 30))
        _plan_actions(rng, loss, now)
    return loss


def _plan_actions(rng: random.Random, loss: _Loss, now: datetime) -> None:
    """Action items of a finished postmortem: open, with a due date, for now
    (``_plan_fixes`` marks those of the two fixes done)."""
    assert loss.finished_at is not None
    launch = _launches(now).get(loss.cause)
    if launch is not None and loss.finished_at < launch - timedelta(days=1):
        wanted = rng.choice((1, 1, 2))  # the fix in the making
    elif loss.finished_at > now - timedelta(days=RECENT_ACTIONS_DAYS):
        wanted = rng.choice((0, 1, 1))
    else:
        return
    choices = list(CAUSE_ACTIONS[loss.cause])
    for text, team in rng.sample(choices, min(wanted, len(choices))):
        due = loss.finished_at.date() + timedelta(days=rng.randint(14, 60))
        loss.actions.append(_Action(text, team, due, None))


def _plan_fixes(losses: list[_Loss], now: datetime) -> None:
    """Mark done the action items of the two fixes, by their launch dates.

    Failed adoption's items finished before the onboarding launch are done by
    then, the launch itself last; poor service's likewise by support's
    target. Items written after a launch stay open: ``fix_effects`` judges a
    fix from the last action done on its cause.
    """
    for cause, launch in _launches(now).items():
        before = [
            loss
            for loss in losses
            if loss.cause == cause
            and loss.finished_at is not None
            and loss.finished_at < launch - timedelta(days=1)
        ]
        for loss in before:
            assert loss.finished_at is not None
            for index, action in enumerate(loss.actions):
                # One to seven weeks after the postmortem, the launch at the latest.
                days = 7 + 10 * (loss.number % 5) + 3 * index
                action.done_at = min(loss.finished_at + timedelta(days=days), launch)
        if cause == "failed_adoption" and before:
            last = max(before, key=lambda loss: loss.finished_at or launch)
            text, team = ONBOARDING_LAUNCH
            last.actions.append(_Action(text, team, launch.date(), launch))


# --- writing it: every step through the app's own verbs ----------------------------


class _DemoClock:
    """The app's clock while the demo writes history: at the moment it says."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@contextmanager
def _history_clock(start: datetime) -> Iterator[_DemoClock]:
    """Set the app's clock (``CLOCK``, read by ``clock.now``) to a demo clock,
    and put the previous one back after.

    The demo runs alone, from the command line (or a test): no request of
    the same app reads the clock meanwhile.
    """
    config = current_app.config
    missing = object()
    previous = config.get("CLOCK", missing)
    demo_clock = _DemoClock(start)
    config["CLOCK"] = demo_clock
    try:
        yield demo_clock
    finally:
        if previous is missing:
            config.pop("CLOCK", None)
        else:
            config["CLOCK"] = previous


@dataclass(order=True)
class _Step:
    at: datetime
    number: int
    order: int
    run: Callable[[], None] = field(compare=False)


class _Writer:
    """Writes the planned losses, one step at a time, as staff and customers did."""

    def __init__(self, session: Session, csm_ids: list[int]) -> None:
        self.session = session
        self.csm_ids = csm_ids
        self.departures: dict[int, Departure] = {}
        self.items: dict[int, ReviewItem] = {}

    def steps(self, loss: _Loss, now: datetime) -> list[_Step]:
        """Return the loss's steps that happened by ``now``."""
        planned: list[tuple[datetime | None, Callable[[], None]]] = [
            (loss.cancelled_at, lambda: self.record(loss)),
            (loss.sent_at, lambda: self.send(loss)),
            (loss.opened_at, lambda: self.open(loss)),
            (loss.answered_at, lambda: self.answer(loss)),
            (loss.details_at, lambda: self.details(loss)),
            (loss.withdrawn_at, lambda: self.withdraw(loss)),
            (loss.assigned_at, lambda: self.assign(loss)),
            # A draft saved on its way (in review) unless finished by now:
            # the finishing save moves the item through review at once.
            (
                loss.drafted_at
                if loss.finished_at is None or loss.finished_at > now
                else None,
                lambda: self.postmortem(loss, finish=False),
            ),
            (loss.finished_at, lambda: self.postmortem(loss, finish=True)),
            *(
                (action.done_at, lambda action=action: self.done(loss, action))
                for action in loss.actions
            ),
            (loss.closed_at, lambda: self.close(loss)),
        ]
        return [
            _Step(at, loss.number, order, run)
            for order, (at, run) in enumerate(planned)
            if at is not None and at <= now
        ]

    def record(self, loss: _Loss) -> None:
        departure, _ = record_departure(
            self.session,
            DepartureIn(
                external_id=f"{DEMO_PREFIX}{loss.number:04d}",
                company=loss.company,
                contact_name=loss.contact,
                contact_email=loss.email,
                plan=loss.plan,
                mrr_cents=loss.mrr_cents,
                currency=loss.currency,
                segment=loss.segment,
                cancelled_at=loss.cancelled_at,
                csm_email=CSMS[loss.csm][1],
                billing_reason="subscription cancelled by customer",
            ),
            source=loss.source,
        )
        self.departures[loss.number] = departure
        loss.public_id = departure.public_id

    def send(self, loss: _Loss) -> None:
        """Mark the invitation sent, as the outbox worker would have then
        (history: no ``.eml`` file; the mail folder holds what the worker
        sends from now on)."""
        departure = self.departures[loss.number]
        message = self.session.scalar(
            select(outbox.OutboxMessage).where(
                outbox.OutboxMessage.departure_id == departure.id,
                outbox.OutboxMessage.kind == "invitation",
            )
        )
        assert message is not None
        message.status, message.attempts = outbox.SENT, 1
        message.sent_at = clock.now()
        outbox.messages_sent.send((message,), session=self.session)

    def open(self, loss: _Loss) -> None:
        mark_opened(self.session.connection(), self.departures[loss.number].id)

    def answer(self, loss: _Loss) -> None:
        assert loss.reason is not None
        record_reason(
            self.session.connection(), loss.public_id, loss.reason, loss.reason_other
        )

    def details(self, loss: _Loss) -> None:
        assert loss.reason is not None
        departure = self.departures[loss.number]
        response = find_response(self.session, departure)
        assert response is not None
        details, follow_up = SAID_DETAILS[loss.reason]
        # Other factors: what customers with the same real cause say.
        factors = set(SAID_GIVEN_CAUSE[loss.cause]) - {loss.reason, "other"}
        submit_details(
            self.session,
            departure,
            response,
            {
                "factors": sorted(factors)[:2],
                "details": details,
                "destination": loss.destination,
                "destination_name": loss.destination_name,
                "follow_up_answer": (follow_up or None)
                if loss.reason in FOLLOW_UPS
                else None,
            },
            follow_up_for=loss.reason,
            winback_consent=loss.consent,
            wording=wordings.current(),
        )

    def withdraw(self, loss: _Loss) -> None:
        record_consent(
            self.session,
            self.departures[loss.number],
            granted=False,
            channel="withdrawal_link",
            wording=withdrawal_wording(),
        )

    def _item(self, loss: _Loss) -> ReviewItem:
        """Return the loss's queue item (found once: the queue's verbs keep
        the object up to date)."""
        item = self.items.get(loss.number) or queue.get_item(
            self.session, loss.public_id
        )
        assert item is not None, f"demo loss {loss.number} is not in the queue"
        self.items[loss.number] = item
        return item

    def assign(self, loss: _Loss) -> None:
        csm = self.csm_ids[loss.csm]
        queue.assign(self.session, self._item(loss), csm, actor_id=csm)

    def postmortem(self, loss: _Loss, *, finish: bool) -> None:
        departure = self.departures[loss.number]
        existing = get_postmortem(self.session, departure.id)
        happened, lesson = CAUSE_STORIES[loss.cause]
        texts: dict[str, str | None] = {"what_happened": happened}
        said = (
            f"Picked “{REASONS[loss.reason]}” in the survey."
            if loss.reason
            else "Did not answer the survey; the CSM's notes from the last calls."
        )
        if finish:
            texts |= {
                "who_was_involved": f"{CSMS[loss.csm][0]} (CSM) and "
                f"{loss.contact}, the customer's contact.",
                "customer_said": said,
                "communication": "Monthly calls until the last quarter, then silence.",
                "lessons": lesson,
                "immediate_steps": "Shared the findings at the weekly churn review.",
                "process_deviation": None
                if loss.followed_process == "yes"
                else "The renewal call was skipped for lack of time.",
            }
        recommendation = (
            "do_not_contact"
            if loss.consent is False or loss.withdrawn_at
            else "offer"
            if loss.consent
            else "nurture"
        )
        data = PostmortemInput(
            texts=texts,
            followed_process=loss.followed_process if finish else None,
            preventable=loss.preventable if finish else None,
            winback_recommendation=recommendation if finish else None,
            root_causes=[loss.cause, *loss.contributing],
            primary_cause=loss.cause,
            other_cause=_other_found(loss) if loss.cause == "other" else None,
            action_items=[
                ActionItemInput(None, a.text, a.team, CSMS[loss.csm][0], a.due, False)
                for a in (loss.actions if finish else [])
            ],
        )
        saved = save_postmortem(
            self.session,
            self._item(loss),
            data,
            base_version=existing.version if existing else None,
            actor_id=self.csm_ids[loss.csm],
            finish=finish,
        )
        if finish:
            for action, item in zip(loss.actions, saved.action_items, strict=True):
                action.id = item.id

    def done(self, loss: _Loss, action: _Action) -> None:
        assert action.id is not None
        mark_action_done(self.session, action.id, actor_id=self.csm_ids[loss.csm])

    def close(self, loss: _Loss) -> None:
        queue.change_status(
            self.session, self._item(loss), "closed", actor_id=self.csm_ids[loss.csm]
        )

    def queue_unanswered(self) -> None:
        queue.queue_unanswered(self.session)


def _other_found(loss: _Loss) -> str:
    """Return what an ``other`` root cause was (chosen by the loss's number)."""
    return OTHER_FOUND[loss.number % len(OTHER_FOUND)]


def _csms(session: Session) -> list[int]:
    """Return the demo CSMs' ids, creating those missing."""
    ids = []
    for name, email, _ in CSMS:
        user = staff_service.find_user(session, email)
        if user is None:
            user = staff_service.create_user(
                session,
                email=email,
                name=name,
                role=CSM,
                password=passwords.generate_password(),  # never shown: no sign-in
            )
        ids.append(user.id)
    return ids


def _fill(session: Session, rng: random.Random) -> None:
    now = clock.now()
    losses = _plan(rng, now)
    csm_ids = _csms(session)
    writer = _Writer(session, csm_ids)
    steps = [step for loss in losses for step in writer.steps(loss, now)]
    # Once a day the queue takes in unanswered departures (as a cron job would).
    first_day = losses[0].cancelled_at.date()
    for day in range((now.date() - first_day).days + 1):
        at = datetime.combine(first_day + timedelta(days=day), time(4), UTC)
        if at <= now:
            steps.append(_Step(at, 0, 0, writer.queue_unanswered))
    steps.sort()
    with _history_clock(now) as demo_clock:
        for step in steps:
            demo_clock.at = step.at
            step.run()
    session.flush()

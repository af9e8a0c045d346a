"""Realistic demo data for a first look (``flask --app survey demo``)."""

from __future__ import annotations

import random
import unicodedata
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from survey import clock, links
from survey.answers.models import Response
from survey.answers.service import find_response, record_reason, submit_details
from survey.consent import consent_wording, record_consent
from survey.departures.models import Departure
from survey.departures.schemas import DepartureIn
from survey.departures.service import record_departure
from survey.staff import passwords
from survey.staff import service as staff_service
from survey.staff.models import ADMIN
from survey.vocabulary import FOLLOW_UPS, REASONS

COMPANIES = [
    ("Northwind Traders", "Ana Trujillo", "growth", "mid-market"),
    ("Blue Yonder Airlines", "Sven Ottlieb", "enterprise", "enterprise"),
    ("Contoso Pharmaceuticals", "Hanna Moos", "growth", "mid-market"),
    ("Fabrikam Fibers", "Frédérique Citeaux", "starter", "smb"),
    ("Tailspin Toys", "Martín Sommer", "starter", "smb"),
    ("Wide World Importers", "Laurence Lebihan", "enterprise", "enterprise"),
    ("Adventure Works Cycles", "Elizabeth Lincoln", "growth", "mid-market"),
    ("Coho Winery", "Victoria Ashworth", "starter", "smb"),
    ("Margie's Travel", "Patricio Simpson", "growth", "smb"),
    ("Lucerne Publishing", "Francisco Chang", "enterprise", "enterprise"),
    ("Trey Research", "Yang Wang", "starter", "smb"),
    ("Graphic Design Institute", "Pedro Afonso", "growth", "mid-market"),
    ("Litware Inc.", "Elizabeth Brown", "starter", "smb"),
    ("Proseware Inc.", "Jaime Yorres", "growth", "mid-market"),
    ("School of Fine Art", "Carlos González", "starter", "smb"),
    ("Southridge Video", "Felipe Izquierdo", "enterprise", "enterprise"),
    ("Humongous Insurance", "Fran Wilson", "enterprise", "enterprise"),
    ("Woodgrove Bank", "Giovanni Rovelli", "enterprise", "enterprise"),
    ("Alpine Ski House", "Catherine Dewey", "starter", "smb"),
    ("City Power & Light", "Alejandra Camino", "growth", "mid-market"),
]
PLAN_MRR = {"starter": 4_900, "growth": 29_900, "enterprise": 249_000}
DETAILS = [
    "We liked the product but the renewal price doubled.",
    "Exports to our BI tool never worked reliably.",
    "Our champion left and nobody else picked it up.",
    "Support took days to answer a blocking issue.",
    "We merged with another company that uses a different tool.",
]


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


#: What every demo departure's external id starts with.
DEMO_PREFIX = "demo-"


def holds_other_data(session: Session) -> bool:
    """Return whether the database holds departures that are not demo data."""
    others = select(Departure.id).where(
        ~Departure.external_id.startswith(DEMO_PREFIX, autoescape=True)
    )
    return session.scalar(others.limit(1)) is not None


def load_demo(session: Session, *, seed: int = 7) -> list[str]:
    """Fill an empty database with departures and answers; return two survey links.

    The links are demo customers' only: never a real customer's.
    """
    demo = Departure.external_id.startswith(DEMO_PREFIX, autoescape=True)
    if session.scalar(select(func.count()).select_from(Departure)) == 0:
        _fill(session, random.Random(seed))
    unanswered = session.scalars(
        select(Departure.public_id)
        .outerjoin(Response)
        .where(demo, Response.id.is_(None))
        .order_by(Departure.id)
        .limit(2)
    ).all()
    return [links.survey_url(public_id) for public_id in unanswered]


def _fill(session: Session, rng: random.Random) -> None:
    now = clock.now()
    reasons = list(REASONS)
    for index, (company, contact, plan, segment) in enumerate(COMPANIES):
        first = unicodedata.normalize("NFKD", contact.split()[0].lower())
        first = first.encode("ascii", "ignore").decode()
        slug = "".join(ch for ch in company.lower() if ch.isalnum())[:16]
        departure, _ = record_departure(
            session,
            DepartureIn(
                external_id=f"{DEMO_PREFIX}{index + 1:03d}",
                company=company,
                contact_name=contact,
                contact_email=f"{first}@{slug}.example",
                plan=plan,
                mrr_cents=PLAN_MRR[plan] * rng.choice((1, 1, 2, 3)),
                currency="USD",
                segment=segment,
                cancelled_at=now - timedelta(days=index * 3 + 1),
                csm_email="csm@example.com",
                billing_reason="subscription cancelled by customer",
            ),
            source=rng.choice(("api", "csv", "stripe")),
        )
        # The first few stay unanswered so there are links to try.
        if index < 4 or rng.random() < 0.25:
            continue
        reason = rng.choice(reasons)
        record_reason(
            session,
            departure.public_id,
            reason,
            "We are consolidating vendors" if reason == "other" else None,
        )
        response = find_response(session, departure)
        assert response is not None
        if rng.random() < 0.7:
            submit_details(
                session,
                departure,
                response,
                {
                    "factors": rng.sample(
                        [r for r in reasons if r not in (reason, "other")], 2
                    ),
                    "details": rng.choice(DETAILS),
                    "destination": rng.choice(
                        ("competitor", "in_house", "none", "unknown")
                    ),
                    "destination_name": "Acme Analytics"
                    if rng.random() < 0.5
                    else None,
                    "follow_up_answer": "Around half the price"
                    if reason in FOLLOW_UPS
                    else None,
                },
                follow_up_for=reason,
                winback_consent=rng.random() < 0.5,
                consent_wording=consent_wording(),
            )
            if rng.random() < 0.1:
                record_consent(
                    session,
                    departure,
                    granted=False,
                    channel="withdrawal_link",
                    wording="Please do not contact me about coming back.",
                )
    session.flush()

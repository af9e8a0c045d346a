"""The product's codes (see PRODUCT.md): used by the database, the API and CSV."""

from __future__ import annotations

from typing import Final

from survey.i18n import N_
from survey.i18n import lazy_gettext as _l

#: Survey reasons: code -> label (in English, as the catalogs know it).
REASON_TEXTS: Final = {
    "too_expensive": N_("It costs more than it is worth to us"),
    "missing_features": N_("It is missing something we need"),
    "product_issues": N_("Too many bugs or problems"),
    "hard_to_adopt": N_("We could not get our team using it"),
    "poor_service": N_("Support or service let us down"),
    "not_meeting_goals": N_("It did not deliver the results we expected"),
    "switched": N_("We found a better alternative"),
    "no_longer_needed": N_("We no longer need it"),
    "business_change": N_("Our business changed (budget, closure, merger)"),
    "other": N_("Something else"),
}

#: Survey reasons: code -> label in the customer's language.
REASONS: Final = {code: _l(text) for code, text in REASON_TEXTS.items()}

#: Where the customer is going instead.
DESTINATIONS: Final = {
    "competitor": _l("Another product"),
    "in_house": _l("Something we build or do ourselves"),
    "none": _l("Nothing: we no longer need this"),
    "unknown": _l("Not decided, or I'd rather not say"),
}

#: The one reason-specific follow-up question asked on the second page.
FOLLOW_UP_TEXTS: Final = {
    "too_expensive": N_("What price would have worked for you?"),
    "missing_features": N_("Which feature were you missing most?"),
    "product_issues": N_("Which problem affected you most?"),
    "hard_to_adopt": N_("What made it hard to get your team using it?"),
    "poor_service": N_("What should we have done differently?"),
    "not_meeting_goals": N_("Which result did you expect that you did not get?"),
    # Which alternative: the destination question asks it, for the API and CSV.
    "switched": N_("What made the alternative better for you?"),
    "business_change": N_("Is there anything we could have done to help?"),
}
FOLLOW_UPS: Final = {code: _l(text) for code, text in FOLLOW_UP_TEXTS.items()}

DEPARTURE_SOURCES: Final = ("api", "stripe", "csv", "staff")
CONSENT_ACTIONS: Final = ("granted", "withdrawn")
#: How a consent event came in.
CONSENT_CHANNELS: Final = ("survey", "withdrawal_link", "staff", "api")

# --- staff side (labels in staff language: English) ---------------------------

#: Staff roles, by what each may do.
ROLE_LABELS: Final = {
    "admin": "Admin (everything)",
    "csm": "CSM (review queue, insights)",
    "marketing": "Marketing (win-back list)",
}

#: Where a departure came from.
SOURCE_LABELS: Final = {
    "api": "API",
    "stripe": "Stripe",
    "csv": "CSV import",
    "staff": "Staff",
}

#: A departure's win-back consent, as its latest event left it.
CONSENT_STATES: Final = {
    "none": "Not given",
    "granted": "Granted",
    "withdrawn": "Withdrawn",
}

#: How a consent event came in.
CONSENT_CHANNEL_LABELS: Final = {
    "survey": "the survey",
    "withdrawal_link": "the link in an email",
    "staff": "staff, on request",
    "api": "the API",
}

#: Review queue statuses, in their usual order.
REVIEW_STATUSES: Final = {
    "new": "New",
    "in_review": "In review",
    "postmortem_done": "Postmortem done",
    "closed": "Closed",
}

#: Statuses of a review whose postmortem is finished.
FINISHED_STATUSES: Final = ("postmortem_done", "closed")

#: Teams that own fixes.
TEAMS: Final = {
    "sales": "Sales",
    "onboarding": "Onboarding",
    "product": "Product",
    "support": "Support",
    "customer_success": "Customer success",
    "marketing": "Marketing",
    "other": "Other",
}

#: Postmortem root causes: code -> (meaning, team that owns the fix).
ROOT_CAUSES: Final = {
    "poor_fit": ("Customer should not have been sold to", "sales"),
    "oversold": ("Expectations set in the sale were not real", "sales"),
    "failed_adoption": ("Bought but never really used", "onboarding"),
    "product_issues": ("Bugs, gaps, slow fixes, roadmap mismatch", "product"),
    "poor_service": ("Support, services or success experience", "support"),
    "goals_not_met": ("We never understood or met their goals", "customer_success"),
    "customer_business_failure": ("Their business or budget failed", "sales"),
    "competitor": ("Lured by a competing product or its marketing", "marketing"),
    "other": ("None of the above (say what)", "other"),
}

#: The root cause a stated reason names, where one does: a postmortem that
#: finds another primary cause (or a reason without one here) found
#: something other than what the customer said.
REASON_NAMES_CAUSE: Final = {
    "missing_features": "product_issues",
    "product_issues": "product_issues",
    "hard_to_adopt": "failed_adoption",
    "poor_service": "poor_service",
    "not_meeting_goals": "goals_not_met",
    "switched": "competitor",
    "business_change": "customer_business_failure",
}

#: Yes / partly / no answers of the postmortem.
YES_PARTLY_NO: Final = {"yes": "Yes", "partly": "Partly", "no": "No"}

#: What to do about winning the customer back.
WINBACK_RECOMMENDATIONS: Final = {
    "do_not_contact": "Do not contact",
    "nurture": "Nurture",
    "offer": "Make an offer",
}

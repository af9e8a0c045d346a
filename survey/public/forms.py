"""The survey's forms: field rules only, no database writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from babel.support import LazyProxy
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from wtforms import (
    BooleanField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.csrf.core import CSRF, CSRFTokenField
from wtforms.validators import (
    InputRequired,
    Optional,
    ValidationError,
)

from survey import tokens
from survey.i18n import N_, gettext
from survey.i18n import lazy_gettext as _l
from survey.vocabulary import DESTINATIONS, REASONS
from survey.wording.service import BUILT_IN_CONSENT_VERSION, Wording

#: The destination "Which one?" (``destination_name``) asks about.
COMPETITOR = "competitor"


# Flask-WTF ships no type hints, hence the ignore.
def _choices(labels: Mapping[str, Any], leave_out: str = "") -> list[SelectChoice]:
    return [
        SelectChoice(code, label) for code, label in labels.items() if code != leave_out
    ]


class AtMost:
    """Refuse text longer than ``limit`` characters, in the page's language.

    WTForms' ``Length`` says it in English, and fills in its message when the
    form is checked: before page 1's answer knows which language it is shown in.
    """

    message = N_("Please shorten this answer to %(max)d characters.")

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, _form: Any, field: Any) -> None:
        if len(field.data or "") > self.limit:
            raise ValidationError(
                LazyProxy(gettext, self.message, max=self.limit, enable_cache=False)
            )


class _LinkTokenField(CSRFTokenField):  # type: ignore[misc]
    """The hidden form token, signed when the form is drawn, not on every post."""

    def process(self, *args: Any, **kwargs: Any) -> None:
        HiddenField.process(self, *args, **kwargs)  # not the token: see _value

    def _value(self) -> str:
        return str(self.csrf_impl.generate_csrf_token(self))


class LinkCSRF(CSRF):  # type: ignore[misc]
    """CSRF protection bound to the survey link instead of a cookie session.

    The customer's pages set no cookie: the link is their only credential, so
    a form proves it comes from one of our pages for that link by carrying the
    link's form token (``tokens.form_token``). WTForms' documented hook for a
    CSRF scheme of one's own; the form's ``meta.csrf_context`` is the
    departure's public id. A missing or wrong token refuses the whole request
    (``CSRFError``, 400), as Flask-WTF's ``CSRFProtect`` does on staff pages.
    """

    field_class = _LinkTokenField

    def setup_form(self, form: Any) -> Any:
        self.public_id: str = form.meta.csrf_context
        return super().setup_form(form)

    def generate_csrf_token(self, _field: Any) -> str:
        return tokens.form_token(self.public_id)

    def validate_csrf_token(self, _form: Any, field: Any) -> None:
        if not tokens.is_form_token(self.public_id, field.data):
            raise CSRFError("The form token is missing or does not match the link.")


class PublicForm(FlaskForm):  # type: ignore[misc]
    """A customer-facing form with a honeypot field that people never see.

    Build it with ``for_link``: its CSRF token is bound to the link.
    """

    class Meta:
        csrf_class = LinkCSRF

    #: Hidden from people by CSS and from screen readers; bots fill it in.
    website = StringField(_l("Leave this field empty"))

    @classmethod
    def for_link(cls, public_id: str, **kwargs: Any) -> Self:
        """Return the form as shown (or posted) behind ``public_id``'s link."""
        return cls(meta={"csrf_context": public_id}, **kwargs)

    def is_bot(self) -> bool:
        """Return whether the honeypot was filled in."""
        return bool(self.website.data)


class ReasonForm(PublicForm):
    """Page 1: the one question (its reasons: see ``offering``)."""

    #: The reason codes this form accepts (the survey's, once offered).
    accepted: frozenset[str] = frozenset(REASONS)

    reason = RadioField(
        _l("What is the main reason you are leaving?"),
        choices=_choices(REASONS),
        # Checked by validate_reason instead of WTForms' own choice check,
        # which builds every choice anew for each answer.
        validate_choice=False,
        validators=[InputRequired(message=_l("Please choose one answer."))],
    )
    reason_other = StringField(
        _l("In your own words (optional)"), validators=[AtMost(1000)]
    )

    def offering(self, wording: Wording) -> Self:
        """Accept the reasons ``wording`` shows."""
        self.accepted = frozenset(wording.shown)
        return self

    def validate_reason(self, field: RadioField) -> None:
        if field.data not in self.accepted:
            raise ValidationError(_l("Not a valid choice."))

    def validate_reason_other(self, field: StringField) -> None:
        if self.reason.data == "other" and not (field.data or "").strip():
            raise ValidationError(_l("Please tell us the reason in a few words."))


class DetailsForm(PublicForm):
    """Page 2: optional follow-ups and the win-back consent."""

    factors = SelectMultipleField(
        _l("Did anything else play a part?"),
        choices=_choices(REASONS, leave_out="other"),
        validators=[Optional()],
        # A code not offered (the main reason, from a tab left open) is
        # dropped, not refused: see ``answers``.
        validate_choice=False,
    )
    details = TextAreaField(
        _l("Anything else you would like us to know?"), validators=[AtMost(5000)]
    )
    destination = RadioField(
        _l("What will you use instead?"),
        choices=_choices(DESTINATIONS),
        validate_choice=False,
    )
    destination_name = StringField(
        _l("If another product, which one? (optional)"), validators=[AtMost(200)]
    )
    follow_up = TextAreaField(validators=[AtMost(1000)])
    winback_consent = BooleanField()
    #: Which consent wording the page showed; a yes to older wording is asked again.
    consent_version = HiddenField()
    #: The consent wording's version now (see ``offering``).
    current_consent_version = BUILT_IN_CONSENT_VERSION
    #: Whether the page showed the box ticked ("y") or not (see ``consent_choice``).
    consent_shown = HiddenField()
    #: The main reason whose follow-up question the page asked ("" for none).
    follow_up_for = HiddenField()

    def validate_winback_consent(self, field: BooleanField) -> None:
        if field.data and self.consent_version.data != self.current_consent_version:
            field.data = False
            raise ValidationError(
                _l(
                    "The wording of this question has changed since the page was "
                    "opened. Please read it again and tick the box if you agree."
                )
            )

    def validate_destination(self, field: RadioField) -> None:
        if field.data and field.data not in DESTINATIONS:
            raise ValidationError(_l("Please choose one of the answers."))

    def consent_choice(self) -> bool | None:
        """Return the consent chosen on this page, or None if the box was left
        as the page showed it.

        A page left open in another tab must not undo a withdrawal (or a
        grant) made since it was drawn: only touching the box decides.
        """
        ticked = bool(self.winback_consent.data)
        return None if ticked == (self.consent_shown.data == "y") else ticked

    def offering(self, wording: Wording, *, leaving_out: str) -> Self:
        """Ask about the reasons ``wording`` shows, in its consent wording,
        without offering the main reason (``leaving_out``) as another factor."""
        self.factors.choices = [
            SelectChoice(code, label)
            for code, label in wording.reasons()
            if code not in (leaving_out, "other")
        ]
        self.current_consent_version = wording.consent_version()
        return self

    def answers(self) -> dict[str, Any]:
        """Return the cleaned answers (without consent)."""
        offered = {choice.value for choice in self.factors.choices}
        destination = self.destination.data or None
        # "Which one?" asks about another product only: typed, then hidden by
        # choosing another destination, it is still posted, and not kept.
        named = (self.destination_name.data or "").strip() or None
        return {
            "factors": [code for code in self.factors.data or [] if code in offered],
            "details": (self.details.data or "").strip() or None,
            "destination": destination,
            "destination_name": named if destination == COMPETITOR else None,
            # Only what was posted: without the field, the data is the page's
            # prefill, which may answer another reason's question.
            "follow_up_answer": (self.follow_up.data or "").strip() or None
            if self.follow_up.raw_data
            else None,
        }

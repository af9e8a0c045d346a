"""Staff forms: sign in, password, users, webhooks. Field rules only."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import InputRequired, Length

from survey.staff.models import NAME_MAX_LENGTH, ROLES
from survey.staff.passwords import MIN_LENGTH
from survey.vocabulary import ROLE_LABELS
from survey.webhooks import EVENTS

ROLE_CHOICES = [SelectChoice(role, ROLE_LABELS[role]) for role in ROLES]


# Flask-WTF ships no type hints, hence the ignores.
class LoginForm(FlaskForm):  # type: ignore[misc]
    """Email and password."""

    email = EmailField("Email address", validators=[InputRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=1000)])
    next = HiddenField()


class PasswordForm(FlaskForm):  # type: ignore[misc]
    """Change one's own password."""

    current_password = PasswordField("Current password", validators=[InputRequired()])
    new_password = PasswordField(
        f"New password (at least {MIN_LENGTH} characters)",
        validators=[InputRequired(), Length(min=MIN_LENGTH, max=1000)],
    )


class DigestForm(FlaskForm):  # type: ignore[misc]
    """Ask for the weekly insights digest, or stop it."""

    weekly_digest = BooleanField(
        "Email me the weekly insights digest on Monday mornings"
    )


class NewUserForm(FlaskForm):  # type: ignore[misc]
    """An admin adds a staff user; the password is generated and shown once."""

    email = EmailField("Email address", validators=[InputRequired(), Length(max=320)])
    name = StringField(
        "Name", validators=[InputRequired(), Length(max=NAME_MAX_LENGTH)]
    )
    # The least power that does the daily work: admin is a deliberate choice.
    role = SelectField("Role", choices=ROLE_CHOICES, default="csm")


class UserActionForm(FlaskForm):  # type: ignore[misc]
    """A button on the users page: deactivate, activate, or change the role."""

    action = HiddenField(validators=[InputRequired()])
    # Checked by set_role, and only for the "role" action.
    role = SelectField("Role", choices=ROLE_CHOICES, validate_choice=False)
    #: "yes" once an admin confirmed giving up their own admin access.
    confirmed = HiddenField()


class ContactForm(FlaskForm):  # type: ignore[misc]
    """A person's address, for exporting or erasing their data."""

    email = StringField(
        "The person's email address", validators=[InputRequired(), Length(max=320)]
    )
    #: How many departures the erasure's preview showed; the erasure goes
    #: ahead only while that is still what the address holds.
    shown = HiddenField()
    #: Erasing needs the address typed a second time.
    confirm = StringField(
        "Type the address again to confirm erasure", validators=[Length(max=320)]
    )


class WebhookForm(FlaskForm):  # type: ignore[misc]
    """An admin registers a webhook endpoint; its secret is shown once."""

    url = StringField(
        "Endpoint URL (https://)", validators=[InputRequired(), Length(max=2000)]
    )
    events = SelectMultipleField(
        "Events to send",
        choices=[
            SelectChoice(code, f"{code}: {label}") for code, label in EVENTS.items()
        ],
        validators=[InputRequired(message="Choose one or more events.")],
    )
    slack = BooleanField("This is a Slack incoming webhook: send a short sentence")
    include_personal = BooleanField(
        "Include free text and contact details (company, name, email, comments)"
    )

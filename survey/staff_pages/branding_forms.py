"""The brand form. Field rules only: the logo and colour are judged by the
service, which says why it refuses one."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, EmailField, StringField, ValidationError
from wtforms.validators import Email, Length, Optional


# Flask-WTF ships no type hints, hence the ignores.
class BrandForm(FlaskForm):  # type: ignore[misc]
    """Who the customer is told is asking: name, sender, logo, colour, site."""

    company_name = StringField(
        "Company name, as your customers know it", validators=[Length(max=100)]
    )
    sender_name = StringField(
        "Sender name on the email (blank: the company name)",
        validators=[Length(max=100)],
    )
    reply_to = EmailField(
        "Reply-to address (blank: replies go to the sending address)",
        validators=[Optional(), Email(), Length(max=320)],
    )
    website_url = StringField(
        "Your website (https://), linked from the thanks page and the email",
        validators=[Length(max=500)],
    )
    accent_color = StringField(
        "Accent colour for buttons and links (# and six hex digits)",
        validators=[Length(max=50)],
    )
    logo = FileField("Logo: PNG, JPEG or SVG, at most 1 MB")
    remove_logo = BooleanField("Remove the logo")

    def validate_website_url(self, field: StringField) -> None:
        """Only a web address with a host: nothing a browser would run."""
        value = (field.data or "").strip()
        if not value:
            return
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValidationError("Give a full web address, starting with https://.")

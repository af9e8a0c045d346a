"""The brand: read (kept a few seconds per process), checked, saved."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from survey import clock, db
from survey.branding.logos import EXTENSIONS, SHOWN_HEIGHT, SHOWN_MAX_WIDTH, Logo
from survey.branding.models import BRAND_ID, Brand
from survey.db import per_dialect
from survey.errors import InvalidInput

log = logging.getLogger(__name__)

#: How long a process keeps the brand it read: a change shows on every
#: worker within this many seconds (at once on the worker that saved it).
BRAND_CACHE_SECONDS = 5.0
#: The least contrast of the accent on white (WCAG 2 AA for normal text):
#: it colours links on white and is the background of white button text.
MIN_CONTRAST = 4.5

_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_CACHE = "survey.brand"


@dataclass(frozen=True)
class BrandView:
    """The brand as the pages and emails use it; ``revision`` changes with it."""

    company_name: str | None
    sender_name: str | None
    reply_to: str | None
    website_url: str | None
    accent_color: str | None
    logo: Logo | None
    #: Who signs when the brand names no one (``SURVEY_COMPANY_NAME``).
    default_name: str
    revision: str = ""

    @property
    def from_name(self) -> str:
        """The name an email is signed with."""
        return self.sender_name or self.company_name or self.default_name

    @property
    def sender(self) -> str | None:
        """The email's From name (None: the configured sender's own)."""
        return self.sender_name or self.company_name

    @cached_property  # hashed once per brand read, not once per page
    def logo_file(self) -> str | None:
        """The logo's file name in its URL, which changes with the logo."""
        if self.logo is None:
            return None
        digest = hashlib.sha256(self.logo.data).hexdigest()[:16]
        return f"logo-{digest}.{EXTENSIONS[self.logo.content_type]}"

    @property
    def logo_size(self) -> tuple[int, int]:
        """The logo's (width, height) in CSS pixels, as the header shows it."""
        if self.logo is None:
            return 0, 0
        scale = min(SHOWN_HEIGHT / self.logo.height, SHOWN_MAX_WIDTH / self.logo.width)
        return round(self.logo.width * scale), round(self.logo.height * scale)


def contrast_on_white(colour: str) -> float:
    """Return the WCAG 2 contrast ratio of ``#rrggbb`` on white."""

    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    return 1.05 / (luminance + 0.05)


def check_accent(colour: str) -> str:
    """Return ``colour`` as ``#rrggbb`` in lower case, or raise InvalidInput."""
    if not _HEX_COLOUR.match(colour):
        raise InvalidInput(
            "Give the colour as # and six hexadecimal digits, e.g. #0b57d0.",
            {"accent_color": ["Give the colour as # and six hexadecimal digits."]},
        )
    ratio = contrast_on_white(colour)
    if ratio < MIN_CONTRAST:
        message = (
            f"Its contrast on white is {ratio:.2f}:1; links and buttons need at "
            f"least {MIN_CONTRAST}:1 to be readable. Choose a darker shade."
        )
        raise InvalidInput(message, {"accent_color": [message]})
    return colour.lower()


def accent_stylesheet(colour: str) -> str:
    """Return the CSS that gives the pages ``colour`` as their accent."""
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    darker = "#" + "".join(f"{round(c * 0.75):02x}" for c in (red, green, blue))
    return f":root {{ --accent: {colour}; --accent-dark: {darker}; }}\n"


def current() -> BrandView:
    """Return the brand, as read at most BRAND_CACHE_SECONDS ago.

    With the database unreachable (an error page being drawn), the pages
    go on without the brand rather than fail twice.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    kept = app.extensions.get(_CACHE)
    if kept is not None and kept[0] > time.monotonic():
        return kept[1]  # type: ignore[no-any-return]
    try:
        with db.reading_session() as reader:
            view = _view(app, reader.get(Brand, BRAND_ID))
    except SQLAlchemyError:
        log.warning("brand not read (database unavailable); pages go without it")
        return _view(app, None)
    app.extensions[_CACHE] = (time.monotonic() + BRAND_CACHE_SECONDS, view)
    return view


def forget(app: Flask) -> None:
    """Read the brand anew on next use (after saving it)."""
    app.extensions.pop(_CACHE, None)


def _view(app: Flask, brand: Brand | None) -> BrandView:
    fallback = str(app.config["COMPANY_NAME"])
    if brand is None:
        return BrandView(None, None, None, None, None, None, fallback, "none")
    logo = None
    if brand.logo and brand.logo_type and brand.logo_width and brand.logo_height:
        logo = Logo(brand.logo, brand.logo_type, brand.logo_width, brand.logo_height)
    view = BrandView(
        company_name=brand.company_name,
        sender_name=brand.sender_name,
        reply_to=brand.reply_to,
        website_url=brand.website_url,
        accent_color=brand.accent_color,
        logo=logo,
        default_name=fallback,
    )
    return replace(view, revision=f"{brand.updated_at.timestamp()}:{view.logo_file}")


_MAKE_THE_ROW = per_dialect(
    lambda insert: insert(Brand).on_conflict_do_nothing(index_elements=[Brand.id])
)

#: The brand's text fields, as forms and the audit log name them.
TEXT_FIELDS = ("company_name", "sender_name", "reply_to", "website_url", "accent_color")


def save_brand(
    session: Session,
    fields: dict[str, Any],
    *,
    logo: Logo | None = None,
    remove_logo: bool = False,
    actor_id: int | None = None,
) -> list[str]:
    """Set the brand's ``fields`` (blank: not set) and its logo; return the
    names of what changed. The caller commits, then calls ``forget``."""
    # The migration writes the one row; made here too if it is gone, by one
    # of two admins saving at once (the other's insert does nothing).
    session.execute(
        _MAKE_THE_ROW[session.get_bind().dialect.name],
        {"id": BRAND_ID, "updated_at": clock.now()},
    )
    brand = session.scalars(
        select(Brand).where(Brand.id == BRAND_ID).with_for_update()
    ).one()
    changed = []
    for name in TEXT_FIELDS:
        value = (fields.get(name) or "").strip() or None
        if name == "accent_color" and value is not None:
            value = check_accent(value)
        if getattr(brand, name) != value:
            setattr(brand, name, value)
            changed.append(name)
    if logo is not None or (remove_logo and brand.logo is not None):
        brand.logo = logo.data if logo else None
        brand.logo_type = logo.content_type if logo else None
        brand.logo_width = logo.width if logo else None
        brand.logo_height = logo.height if logo else None
        changed.append("logo")
    if changed:
        brand.updated_at = clock.now()
        brand.updated_by_id = actor_id
    session.flush()
    return changed

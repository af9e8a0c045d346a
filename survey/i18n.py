"""Translations for customer-facing text: the survey pages and the emails.

Strings are marked with ``gettext``/``_`` (Python) and ``{% trans %}`` (Jinja),
so Babel can extract them into catalogs under ``survey/translations``. Without
a catalog for a locale, English is shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.support import LazyProxy, NullTranslations, Translations
from flask import Flask, current_app, g, has_app_context, has_request_context, request

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DEFAULT_LOCALE = "en"


@cache
def translations(locale: str | None) -> NullTranslations:
    """Return the catalog for ``locale`` (English when there is none)."""
    if not locale:
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS_DIR), [locale, DEFAULT_LOCALE])


def normalize_locale(value: str | None) -> str | None:
    """Return ``value`` as a known locale identifier (``fr_CA``), or None."""
    if not value:
        return None
    try:
        return str(Locale.parse(value.replace("-", "_")))
    except (ValueError, UnknownLocaleError):
        return None


@cache
def shipped_languages() -> frozenset[str]:
    """Return the languages we speak: English and each one with a catalog."""
    return frozenset(
        {DEFAULT_LOCALE}
        | {folder.parent.name for folder in TRANSLATIONS_DIR.glob("*/LC_MESSAGES")}
    )


def speaks(locale: str | None) -> bool:
    """Return whether we ship ``locale``'s language (``fr_CA``: French)."""
    return bool(locale) and str(locale).split("_")[0] in shipped_languages()


def language_names() -> list[tuple[str, str]]:
    """Return each shipped language's code and name, in itself ("Deutsch")."""
    names = []
    for code in sorted(shipped_languages()):
        name = Locale.parse(code).get_display_name(code) or code
        names.append((code, name[:1].upper() + name[1:]))
    return names


def customer_locale(preferred: str | None) -> str:
    """Return the locale to speak to a customer in: the language they chose
    on the page (``g.chosen_locale``), else ``preferred`` (their departure's)
    when we speak its language, else their browser's choice
    (``Accept-Language``), else ``SURVEY_DEFAULT_LOCALE``."""
    if has_app_context() and (chosen := g.get("chosen_locale")):
        return str(chosen)
    if speaks(preferred):
        return str(preferred)
    if has_request_context() and "HTTP_ACCEPT_LANGUAGE" in request.environ:
        chosen = request.accept_languages.best_match(_shipped_in_order())
        if chosen:
            return chosen
    return email_locale(None)


@cache
def _shipped_in_order() -> tuple[str, ...]:
    return tuple(sorted(shipped_languages()))


def email_locale(preferred: str | None) -> str:
    """Return the locale of an email to a customer: ``preferred`` (their
    departure's) when we speak its language, else ``SURVEY_DEFAULT_LOCALE``
    (an email has no browser to ask)."""
    if speaks(preferred):
        return str(preferred)
    if has_app_context():
        return str(current_app.config["DEFAULT_LOCALE"])
    return DEFAULT_LOCALE


def current_translations() -> NullTranslations:
    """Return the catalog of the locale this request renders in."""
    if has_app_context():
        return translations(g.get("locale"))
    return translations(None)


def gettext(message: str, **variables: Any) -> str:
    """Translate ``message`` for the current locale and fill in ``variables``."""
    text = current_translations().gettext(message)
    return text % variables if variables else text


def N_(message: str) -> str:
    """Mark ``message`` for the catalogs; it is translated where it is shown."""
    return message


def translate(message: str, locale: str | None) -> str:
    """Translate ``message`` into ``locale``, whatever is being rendered."""
    return translations(locale).gettext(message)


def lazy_gettext(message: str) -> LazyProxy:
    """Mark ``message`` for translation when it is rendered, not when defined."""
    return LazyProxy(gettext, message, enable_cache=False)


def long_date(value: date) -> str:
    """Write ``value`` as the current locale writes a date in a sentence
    ("3 December 2026", "3. Dezember 2026")."""
    return format_date(value, format="long", locale=g.get("locale") or DEFAULT_LOCALE)


def init_app(app: Flask) -> None:
    """Install the translation functions into the app's Jinja environment."""
    app.jinja_env.filters["long_date"] = long_date
    app.jinja_env.add_extension("jinja2.ext.i18n")
    # Jinja's "newstyle" wrappers fill in the variables and keep autoescaping.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda message: current_translations().gettext(message),
        ngettext=lambda s, p, n: current_translations().ngettext(s, p, n),
        newstyle=True,
    )


@contextmanager
def force_locale(locale: str | None) -> Iterator[None]:
    """Render in ``locale`` inside the block (an email in the contact's language)."""
    previous = g.get("locale")
    g.locale = locale
    try:
        yield
    finally:
        g.locale = previous

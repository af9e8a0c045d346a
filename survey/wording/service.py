"""The survey's wording: read (the newest kept a few seconds per process),
checked and saved as a new version.

A version stores only what differs from the built-in wording: which reasons
are shown and in what order, the team's own reasons (a code and the root
cause they usually point to), and texts per language. A text left out is
the built-in one in the customer's language (from the shipped catalogs);
a custom reason's label or follow-up left out in a language is the one of
``SURVEY_DEFAULT_LOCALE``, else English.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from survey import clock, db
from survey.errors import InvalidInput
from survey.i18n import DEFAULT_LOCALE, N_, translate
from survey.vocabulary import (
    FOLLOW_UP_TEXTS,
    REASON_NAMES_CAUSE,
    REASON_TEXTS,
    REASONS,
    ROOT_CAUSES,
)
from survey.wording.models import SurveyVersion

#: How long a process keeps the newest version it read: a change shows on
#: every worker within this many seconds (at once on the one that saved it).
WORDING_CACHE_SECONDS = 5.0
#: The most reasons of the team's own a survey may have.
MAX_CUSTOM_REASONS = 5
#: The built-in consent wording's version (stored with every consent event
#: given under it; a custom wording's version is made from its text).
BUILT_IN_CONSENT_VERSION = "2026-11-v1"
BUILT_IN_QUESTION = N_("What is the main reason you are leaving?")
BUILT_IN_CONSENT = N_(
    "Yes, you may contact me later about coming back, for example with an "
    "offer. I can change my mind at any time."
)
#: The longest text a team may write for one key.
MAX_TEXT_LENGTH = 300
#: The language the staff pages are written in.
STAFF_LANGUAGE = "en"

_CODE = re.compile(r"^[a-z][a-z0-9_]{2,39}$")
_CACHE = "survey.wording"


def _language(locale: str | None) -> str:
    return (locale or DEFAULT_LOCALE).split("_")[0].split("-")[0]


def _current_language() -> str:
    return _language(g.get("locale") if has_app_context() else None)


@dataclass(frozen=True)
class Wording:
    """One version of the survey's wording; texts come out in the language
    being rendered (``g.locale``)."""

    version: int
    definition: dict[str, Any] = field(compare=False, hash=False)
    default_language: str = "en"

    @property
    def shown(self) -> list[str]:
        """The reason codes the survey offers, in order."""
        return list(self.definition.get("reasons") or REASONS)

    @property
    def custom(self) -> dict[str, dict[str, Any]]:
        """The team's own reasons: code -> {"root_cause": code}."""
        return dict(self.definition.get("custom") or {})

    def knows(self, code: str | None) -> bool:
        """Whether ``code`` is a reason of this version (shown or not)."""
        return code in REASONS or code in self.custom

    def override(self, language: str, key: str) -> str | None:
        """The team's own text for ``key`` in ``language``, if any."""
        texts = self.definition.get("texts") or {}
        value = (texts.get(language) or {}).get(key)
        return str(value) if value else None

    def _text(self, key: str, built_in: str | None, language: str | None) -> str | None:
        """The team's text for ``key``, else the built-in one translated,
        else (a reason of the team's own) its text in another language."""
        language = language or _current_language()
        if text := self.override(language, key):
            return text
        if built_in is not None:
            return translate(built_in, language)
        for fallback in (self.default_language, "en"):
            if text := self.override(fallback, key):
                return text
        return None

    def question(self, language: str | None = None) -> str:
        """The one question of page 1."""
        return self._text("question", BUILT_IN_QUESTION, language) or ""

    def label(self, code: str, language: str | None = None) -> str:
        """A reason's label (the code itself if this version has no such reason)."""
        return self._text(f"label.{code}", REASON_TEXTS.get(code), language) or code

    def staff_label(self, code: str) -> str:
        """A reason as staff read it: its label in the staff's language (the
        team's wording where they wrote one), else in any language the team
        wrote one in; the code itself only for a reason with no label."""
        label = self.label(code, STAFF_LANGUAGE)
        if label != code or code in REASON_TEXTS:
            return label
        texts = self.definition.get("texts") or {}
        for language in sorted(texts):
            if text := self.override(language, f"label.{code}"):
                return text
        return code

    def follow_up(self, code: str | None, language: str | None = None) -> str | None:
        """The question page 2 asks about ``code``, if it asks one."""
        if not self.knows(code):
            return None
        return self._text(f"follow_up.{code}", FOLLOW_UP_TEXTS.get(str(code)), language)

    def consent(self, language: str | None = None) -> str:
        """The consent sentence next to the box on page 2."""
        return self._text("consent", BUILT_IN_CONSENT, language) or ""

    def consent_version(self, language: str | None = None) -> str:
        """The consent wording's version, as the ledger stores it: the
        built-in one's, or one made from the team's own text."""
        text = self.override(language or _current_language(), "consent")
        if text is None:
            return BUILT_IN_CONSENT_VERSION
        return "custom-" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def reasons(self, language: str | None = None) -> list[tuple[str, str]]:
        """The reasons shown, in order: (code, label)."""
        return [(code, self.label(code, language)) for code in self.shown]

    def root_cause(self, code: str | None) -> str | None:
        """The root cause a stated reason names, where one does."""
        if code in self.custom:
            return self.custom[code].get("root_cause")
        return REASON_NAMES_CAUSE.get(code or "")


#: The wording before any version is saved.
def built_in(default_language: str = "en") -> Wording:
    """Return the built-in wording (version 0)."""
    return Wording(0, {}, default_language)


def _default_language(app: Flask) -> str:
    return _language(str(app.config["DEFAULT_LOCALE"]))


@dataclass(frozen=True)
class _Known:
    """What every version together says about the reasons."""

    #: Every reason code, with its newest English label.
    labels: dict[str, str]
    #: The root cause each reason names, where one does (newest word on it).
    causes: dict[str, str]


def _load(app: Flask) -> tuple[Wording, _Known]:
    """Read the newest version, and what all versions say about reasons."""
    language = _default_language(app)
    with db.reading_session() as reader:
        rows = reader.execute(
            select(SurveyVersion.id, SurveyVersion.definition).order_by(
                SurveyVersion.id
            )
        ).all()
    labels = dict(REASON_TEXTS)
    causes = dict(REASON_NAMES_CAUSE)
    for version_id, definition in rows:
        wording = Wording(version_id, definition, language)
        for code, spec in wording.custom.items():
            english = wording.override("en", f"label.{code}")
            labels[code] = english or labels.get(code, code)
            causes.pop(code, None)
            if spec.get("root_cause"):
                causes[code] = spec["root_cause"]
    newest = Wording(rows[-1][0], rows[-1][1], language) if rows else built_in(language)
    return newest, _Known(labels, causes)


def _kept(app: Flask) -> tuple[Wording, _Known]:
    kept = app.extensions.get(_CACHE)
    if kept is not None and kept[0] > time.monotonic():
        return kept[1]  # type: ignore[no-any-return]
    loaded = _load(app)
    app.extensions[_CACHE] = (time.monotonic() + WORDING_CACHE_SECONDS, loaded)
    return loaded


def current() -> Wording:
    """Return the wording customers are asked in now (read at most
    WORDING_CACHE_SECONDS ago)."""
    return _kept(current_app._get_current_object())[0]  # type: ignore[attr-defined]


#: What the built-in wording alone says about the reasons.
_BUILT_IN_KNOWN = _Known(dict(REASON_TEXTS), dict(REASON_NAMES_CAUSE))


def _known() -> _Known:
    """What all versions say about reasons (outside an app: the built-in)."""
    if not has_app_context():
        return _BUILT_IN_KNOWN
    return _kept(current_app._get_current_object())[1]  # type: ignore[attr-defined]


def known_reasons() -> dict[str, str]:
    """Every reason code there is, built in or the team's own (from any
    version), with its English label: what staff filter and read by."""
    return _known().labels


def named_cause(code: str | None) -> str | None:
    """The root cause a stated reason names, where one does (a reason of the
    team's own: as its newest version says)."""
    return _known().causes.get(code or "")


def forget(app: Flask) -> None:
    """Read the wording anew on next use (after saving a version)."""
    app.extensions.pop(_CACHE, None)


def version(session: Session, version_id: int | None) -> Wording:
    """Return a version by number (None or 0: the built-in wording)."""
    language = _default_language(current_app)
    if not version_id:
        return built_in(language)
    newest = current()
    if newest.version == version_id:
        return newest
    row = session.get(SurveyVersion, version_id)
    return Wording(version_id, row.definition, language) if row else built_in(language)


# --- saving -------------------------------------------------------------------


def _refuse(name: str, message: str) -> InvalidInput:
    return InvalidInput(message, {name: [message]})


def check_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """Return ``definition`` cleaned, or raise InvalidInput saying what is wrong."""
    custom: dict[str, dict[str, Any]] = {}
    for code, spec in (definition.get("custom") or {}).items():
        if not _CODE.match(code):
            raise _refuse(
                "custom",
                f"“{code}” cannot be a reason code: use 3 to 40 lower-case letters, "
                "digits and underscores, starting with a letter.",
            )
        if code in REASONS or code == "none":
            raise _refuse("custom", f"“{code}” is a built-in reason's code already.")
        root_cause = (spec or {}).get("root_cause") or None
        if root_cause is not None and root_cause not in ROOT_CAUSES:
            raise _refuse("custom", f"“{root_cause}” is not a root cause code.")
        custom[code] = {"root_cause": root_cause}
    if len(custom) > MAX_CUSTOM_REASONS:
        raise _refuse(
            "custom", f"A survey has at most {MAX_CUSTOM_REASONS} reasons of your own."
        )
    shown = list(dict.fromkeys(definition.get("reasons") or REASONS))
    unknown = [code for code in shown if code not in REASONS and code not in custom]
    if unknown:
        raise _refuse("reasons", f"Unknown reason codes: {', '.join(unknown)}.")
    if "other" not in shown:
        raise _refuse(
            "reasons", "“Something else” stays: it is the answer for everyone else."
        )
    if len(shown) < 2:
        raise _refuse("reasons", "Show at least one reason besides “Something else”.")
    texts: dict[str, dict[str, str]] = {}
    for language, entries in (definition.get("texts") or {}).items():
        cleaned = {}
        for key, value in (entries or {}).items():
            text = " ".join(str(value or "").split())
            if not text:
                continue
            if len(text) > MAX_TEXT_LENGTH:
                raise _refuse(key, f"At most {MAX_TEXT_LENGTH} characters, please.")
            cleaned[key] = text
        if cleaned:
            texts[language] = cleaned
    for code in custom:
        if not any(f"label.{code}" in entries for entries in texts.values()):
            raise _refuse(
                f"label.{code}", f"The reason “{code}” needs a label to be shown."
            )
    return {"reasons": shown, "custom": custom, "texts": texts}


class SavedMeanwhile(InvalidInput):
    """Another version was saved since the one a change was made to."""


def save_version(
    session: Session,
    definition: dict[str, Any],
    *,
    based_on: int,
    summary: str,
    actor_id: int | None = None,
) -> SurveyVersion | None:
    """Save ``definition``, a change to version ``based_on``, as the newest
    version; return it, or None when it changes nothing. Raise
    SavedMeanwhile when ``based_on`` is no longer the newest. The caller
    commits (and then calls ``forget``); a commit failing on the unique
    ``based_on`` means the same.
    """
    cleaned = check_definition(definition)
    newest = session.scalars(
        select(SurveyVersion).order_by(SurveyVersion.id.desc()).limit(1)
    ).one_or_none()
    if (newest.id if newest else 0) != based_on:
        raise SavedMeanwhile(
            "Someone saved a new version of the survey while you were editing; "
            "here it is now. Make your change again.",
            {},
        )
    if cleaned == (newest.definition if newest else check_definition({})):
        return None
    version_row = SurveyVersion(
        based_on=based_on,
        definition=cleaned,
        summary=summary,
        created_at=clock.now(),
        created_by_id=actor_id,
    )
    session.add(version_row)
    session.flush()
    return version_row


def with_texts(
    wording: Wording, language: str, texts: dict[str, str]
) -> dict[str, Any]:
    """Return ``wording``'s definition with ``language``'s texts replaced."""
    definition = check_definition(wording.definition)
    definition["texts"] = {**definition["texts"], language: dict(texts)}
    return definition


def with_reasons(
    wording: Wording,
    shown: Iterable[str],
    custom: dict[str, dict[str, Any]],
    labels: dict[str, str],
) -> dict[str, Any]:
    """Return ``wording``'s definition with the reasons shown, the team's own
    reasons and their English labels (``labels``: code -> label) replaced."""
    definition = check_definition(wording.definition)
    english = {
        key: value
        for key, value in definition["texts"].get("en", {}).items()
        if not (key.startswith("label.") and key[6:] not in REASONS)
    }
    english.update({f"label.{code}": text for code, text in labels.items() if text})
    definition["texts"] = {**definition["texts"], "en": english}
    definition["reasons"] = list(shown)
    definition["custom"] = custom
    return definition

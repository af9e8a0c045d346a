"""People's data rights: what we hold about a person (GDPR art. 15), erasure
(art. 17) and retention.

Erasure removes the person's name, address and free-text answers, and every
copy of them (emails in the outbox and as ``.eml`` files, notes and
postmortems that quote them, audit details), while reason codes, MRR, dates,
root causes and postmortem structure stay, so the numbers still add up. The
audit log keeps a keyed hash of the address and who erased it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import JSON, Text, and_, cast, func, or_, select, text, update
from sqlalchemy.orm import Session

from survey import audit, clock, db, outbox, webhooks
from survey.answers.models import ANSWER_FIELDS, Response
from survey.audit import AuditEvent
from survey.consent import (
    ConsentEvent,
    granted_elsewhere,
    latest_consent_event,
    record_consent,
)
from survey.departures.models import Departure
from survey.departures.schemas import FIELDS, RECORDED, normalize_email
from survey.departures.service import departures_of, lock_departure
from survey.departures.tallies import Tally, departure_left
from survey.errors import InvalidInput
from survey.outbox import OutboxMessage
from survey.review.models import Note
from survey.review_items import ReviewItem

log = logging.getLogger(__name__)

ERASED = "[erased]"
#: Free-text answers: erased whole (the reason codes stay).
_FREE_TEXT = ("reason_other", "details", "destination_name", "follow_up_answer")


def email_hash(address: str) -> str:
    """Return the keyed hash of a normalized address, as the audit log keeps it."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


#: A person's departure as exported: its facts, then what we recorded.
_DEPARTURE_FIELDS = ("public_id", *FIELDS, *RECORDED, "erased_at")
#: What an export lists under each departure, each in the order it happened.
_RECORDS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "consent_events": (
        ConsentEvent,
        ("action", "channel", "wording", "wording_version", "note", "created_at"),
    ),
    "emails": (
        OutboxMessage,
        (
            "kind",
            "recipient",
            "subject",
            "body_text",
            "status",
            "created_at",
            "sent_at",
        ),
    ),
    "staff_notes": (Note, ("body", "created_at")),
}
#: Departures read at a time (with their records), and written out together.
_BATCH = 1_000


def holds_anything(session: Session, address: str) -> bool:
    """Return whether any departure has this normalized address."""
    return (
        session.scalar(select(Departure.id).where(Departure.contact_email == address))
        is not None
    )


def export_json(session: Session, address: str) -> Iterator[str]:
    """Yield everything held about a person (GDPR art. 15) as indented JSON,
    a thousand departures at a time.

    ``address`` is normalized (see ``valid_address``); ``session`` is fresh.
    The departures stream from a server-side cursor on PostgreSQL, each
    batch's records are read by one Core query per table, and times are
    made text by the database: memory stays flat however much is held.
    """
    if session.get_bind().dialect.name == "postgresql":
        # One snapshot for every query (SQLite's transaction is one already).
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        # Every row is read: a cursor's plan must not aim at the first tenth
        # (walking the primary key in order past a million others before the
        # person's first departure).
        session.execute(text("SET LOCAL cursor_tuple_fraction = 1"))
    connection = session.connection()
    departures = connection.execute(
        select(
            Departure.id,
            *_exported(Departure, _DEPARTURE_FIELDS),
            Response.id,
            *_exported(Response, ANSWER_FIELDS),
        )
        .outerjoin(Response, Response.departure_id == Departure.id)
        .where(Departure.contact_email == address)
        .order_by(Departure.id),
        execution_options={"yield_per": _BATCH},
    )
    departure_layout = _Layout(_DEPARTURE_FIELDS, 2, left_open=True)
    answer_layout = _Layout(ANSWER_FIELDS, 3)
    record_layouts = {name: _Layout(names, 4) for name, (_, names) in _RECORDS.items()}
    answer_at = 1 + len(_DEPARTURE_FIELDS)
    piece = [f'{{\n  "email": {_quote(address)},\n  "departures": [']
    separator = "\n    "
    for batch in departures.partitions():
        ids = [row[0] for row in batch]
        records = {
            name: _records_of(connection, model, names, ids, record_layouts[name])
            for name, (model, names) in _RECORDS.items()
        }
        for row in batch:
            piece += (
                separator,
                departure_layout.write(row[1:answer_at]),
                ',\n      "response": ',
                "null"
                if row[answer_at] is None
                else answer_layout.write(row[answer_at + 1 :]),
            )
            for name, by_departure in records.items():
                listed = by_departure.get(row[0])
                piece += (
                    f',\n      "{name}": ',
                    "[\n        " + ",\n        ".join(listed) + "\n      ]"
                    if listed
                    else "[]",
                )
            piece.append("\n    }")
            separator = ",\n    "
        yield "".join(piece)
        piece = []
    piece.append("\n  ]\n}" if separator != "\n    " else "]\n}")
    yield "".join(piece)


def _records_of(
    connection: Any,
    model: Any,
    names: tuple[str, ...],
    departure_ids: list[int],
    layout: _Layout,
) -> dict[int, list[str]]:
    """Return the records of a table for these departures, written out,
    in the order they happened, by departure id."""
    rows = connection.execute(
        select(model.departure_id, *_exported(model, names))
        .where(model.departure_id.in_(departure_ids))
        .order_by(model.departure_id, model.id)
    )
    return {
        departure_id: [layout.write(row[1:]) for row in group]
        for departure_id, group in groupby(rows, key=itemgetter(0))
    }


def _exported(model: Any, names: tuple[str, ...]) -> list[Any]:
    """Return a model's columns ``names``, times as ISO 8601 text."""
    columns = [getattr(model, name) for name in names]
    return [
        db.IsoUtc(column) if isinstance(column.type, db.UTCDateTime) else column
        for column in columns
    ]


#: JSON for strings (keeping non-ASCII letters) and for everything else.
_quote = json.encoder.encode_basestring
_compact = json.JSONEncoder(ensure_ascii=False).encode


class _Layout:
    """Writes rows as JSON objects of the fields ``names``, laid out as
    ``json.dumps(indent=2)`` lays them out ``depth`` levels deep; with
    ``left_open``, without the closing brace (more fields follow)."""

    def __init__(
        self, names: tuple[str, ...], depth: int, *, left_open: bool = False
    ) -> None:
        inner = "  " * (depth + 1)
        fields = ",\n".join(f'{inner}"{name}": {{}}' for name in names)
        closing = "" if left_open else "\n" + "  " * depth + "}}"
        self._template = "{{\n" + fields + closing  # braces doubled for format()
        self._depth = depth + 1

    def write(self, row: Any) -> str:
        """Return ``row``'s values (in the order of ``names``) as the object."""
        return self._template.format(*map(self._value, row))

    def _value(self, value: Any) -> str:
        if value is None:
            return "null"
        if type(value) is str:
            return _quote(value)
        if type(value) is list:  # the few answers that are lists
            return json.dumps(value, indent=2, ensure_ascii=False).replace(
                "\n", "\n" + "  " * self._depth
            )
        return _compact(value)


@dataclass(frozen=True)
class Erasure:
    """What an erasure did; ``files`` are to be deleted once it is committed."""

    departures: int
    scrubbed_cells: int
    files: tuple[Path, ...] = ()

    def remove_files(self) -> int:
        """Delete the ``.eml`` copies (after the commit); return how many."""
        for path in self.files:
            path.unlink(missing_ok=True)
        return len(self.files)


def _free_text_columns() -> list[tuple[Any, Any, Any]]:
    """Return (table, primary key, column) of every column where people write.

    Free text only: codes, ids, hashes, wordings and our colleagues' accounts
    are never rewritten, so an erasure cannot corrupt them.
    """
    from survey.review.models import ActionItem, Postmortem, RootCause
    from survey.review.postmortems import TEXT_FIELDS
    from survey.staff.models import LoginFailure

    columns = [
        *(getattr(Response, name) for name in _FREE_TEXT),
        Note.body,
        *(getattr(Postmortem, name) for name in TEXT_FIELDS),
        RootCause.note,
        ActionItem.text,
        ActionItem.owner,
        ConsentEvent.note,
        OutboxMessage.subject,
        OutboxMessage.body_text,
        OutboxMessage.body_html,
        OutboxMessage.last_error,
        AuditEvent.detail,
        LoginFailure.email,
    ]
    found = []
    for attribute in columns:
        column = attribute.property.columns[0]
        [primary] = list(column.table.primary_key.columns)
        found.append((column.table, primary, column))
    return found


def _scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    if isinstance(value, dict):
        return {key: _scrub(item, pattern) for key, item in value.items()}
    return value


def _owned_by(table: Any, departure_ids: list[int]) -> Any:
    """Return the condition "tied to one of these departures", or None."""
    from survey.review.models import Postmortem

    if "departure_id" in table.c:
        return table.c.departure_id.in_(departure_ids)
    if "postmortem_id" in table.c:
        return table.c.postmortem_id.in_(
            select(Postmortem.id).where(Postmortem.departure_id.in_(departure_ids))
        )
    return None


def _pattern(emails: set[str], names: set[str]) -> re.Pattern[str] | None:
    """Match the addresses and names as whole words (None: nothing to match).

    Addresses and full names in any case, their words split by any spaces or
    line breaks; a one-word name only as written ("May", not "may").
    """
    whole = r"(?<![\w.@+-]){}(?![\w@+-]|\.\w)"
    parts = [whole.format(f"(?i:{re.escape(email)})") for email in emails]
    for name in names:
        words = name.split()
        if len(words) > 1:
            spaced = r"\s+".join(re.escape(word) for word in words)
            parts.append(whole.format(f"(?i:{spaced})"))
        elif words:
            parts.append(whole.format(re.escape(words[0])))
    if not parts:
        return None
    return re.compile("|".join(sorted(parts, key=len, reverse=True)))


def _like_terms(emails: set[str], names: set[str]) -> set[str]:
    """Return what a row must contain (any case) to be worth a closer look.

    SQLite folds case for ASCII only: a name is looked for by its ASCII words,
    and by its own spellings when it has none.
    """
    terms = {email.lower() for email in emails}
    for name in names:
        ascii_words = [word for word in name.split() if word.isascii()]
        if ascii_words:
            terms.add(max(ascii_words, key=len).lower())
        else:
            terms |= {name, name.lower(), name.upper(), name.title()}
    return terms


def _scrub_rows(
    session: Session,
    table: Any,
    primary: Any,
    column: Any,
    where: Any,
    pattern: re.Pattern[str],
) -> int:
    changed = 0
    for key, value in session.execute(select(primary, column).where(where)).all():
        scrubbed = _scrub(value, pattern)
        if scrubbed != value:
            session.execute(
                update(table).where(primary == key).values({column.name: scrubbed})
            )
            _count_as_a_save(session, table, primary, key)
            changed += 1
    return changed


def _count_as_a_save(session: Session, table: Any, primary: Any, key: Any) -> None:
    """Bump the version of the postmortem a rewritten row belongs to.

    An editor opened before the erasure then meets a conflict when it saves,
    instead of writing the erased words back unseen.
    """
    from survey.review.models import Postmortem

    postmortems: Any = Postmortem.__table__
    if table is postmortems:
        which = postmortems.c.id == key
    elif "postmortem_id" in table.c:
        which = postmortems.c.id == (
            select(table.c.postmortem_id).where(primary == key).scalar_subquery()
        )
    else:
        return
    session.execute(
        update(postmortems).where(which).values(version=postmortems.c.version + 1)
    )


#: Words of names that are everyday words in other languages' text.
_NAME_PARTICLES = frozenset(
    {"al", "bin", "da", "das", "de", "del", "della", "der", "di", "do", "dos", "du"}
    | {"el", "la", "le", "les", "van", "von", "y", "zu"}
)


def _name_words(names: set[str]) -> set[str]:
    """Return the words of names that stand for the person alone ("Pat", "Smith").

    Capitalized and three letters or more, particles left out: "de" or "la"
    in "Ana de la Cruz" are anybody's words. Matched as written, in the
    person's own rows only.
    """
    return {
        word
        for name in names
        for word in name.split()
        if len(word) >= 3 and word[0].isupper() and word.lower() not in _NAME_PARTICLES
    }


def _sweep(
    session: Session,
    emails: set[str],
    names: set[str],
    departure_ids: list[int],
    *,
    everywhere: bool,
) -> int:
    """Replace the person's addresses and names in the free-text columns.

    In the rows tied to their departures: addresses, every name, and each
    word of a name that reads as a name ("Called Pat", "Ms Smith"; see
    ``_name_words``). With ``everywhere``,
    in all other rows too, but only addresses and full names (a one-word name
    such as "N/A" or "May" could be anybody's word). Audit details hold codes:
    only addresses are replaced there.
    """
    mine = _pattern(emails, names | _name_words(names))
    anyones = _pattern(emails, {n for n in names if len(n.split()) > 1})
    addresses = _pattern(emails, set())
    changed = 0
    for table, primary, column in _free_text_columns():
        is_audit = column is AuditEvent.__table__.c.detail
        owned = _owned_by(table, departure_ids) if departure_ids else None
        if owned is not None:
            pattern = addresses if is_audit else mine
            if pattern is not None:
                changed += _scrub_rows(
                    session,
                    table,
                    primary,
                    column,
                    and_(owned, column.is_not(None)),
                    pattern,
                )
        if not everywhere:
            continue
        pattern = addresses if is_audit else anyones
        if pattern is None:
            continue
        as_text = cast(column, Text) if isinstance(column.type, JSON) else column
        candidates = or_(
            *(
                func.lower(as_text).contains(term.lower(), autoescape=True)
                for term in _like_terms(
                    emails,
                    set() if is_audit else {n for n in names if len(n.split()) > 1},
                )
            )
        )
        where = candidates if owned is None else and_(candidates, ~owned)
        changed += _scrub_rows(session, table, primary, column, where, pattern)
    return changed


def valid_address(email: str) -> str:
    """Return ``email`` checked as an address; raise InvalidInput if it is not."""
    try:
        return normalize_email(email)
    except ValueError:
        message = "Not a valid email address."
        raise InvalidInput(message, {"email": [message]}) from None


#: The key of the PostgreSQL advisory lock held by each erasure (any number,
#: the same for all of them).
_ERASURE_LOCK = 0x6572617365


def _one_erasure_at_a_time(session: Session) -> None:
    """Hold the erasures' lock until the transaction ends (PostgreSQL).

    Erasures also rewrite other people's rows that mention the person: two at
    once, of people who mention each other, would lock those rows in opposite
    orders. They are rare: one at a time costs nothing. (SQLite writes one
    transaction at a time anyway.)
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_ERASURE_LOCK)))


def erase_person(
    session: Session, email: str, *, actor_id: int | None, via: str
) -> Erasure:
    """Erase a person's personal data everywhere; keep the anonymous facts.

    ``actor_id`` is the staff user who asked (None for a command or a
    machine); ``via`` says how (``cli``, ``admin``, ``api:<token name>``...).
    Raise InvalidInput when ``email`` is not an address. The caller commits,
    then calls ``remove_files()``.
    """
    address = valid_address(email)
    _one_erasure_at_a_time(session)
    # Locked: an answer or consent change arriving meanwhile waits, and is
    # erased too or finds nothing left to write to (see for_writing).
    departures = departures_of(session, address, writing=True)
    emails = {address} | {d.contact_email for d in departures if d.contact_email}
    names = {d.contact_name.strip() for d in departures if d.contact_name}
    names.discard("")
    now = clock.now()
    files: list[Path] = []
    counted_out = Tally()
    for departure in departures:
        files += _erase_departure(session, departure, now, names, counted_out)
    counted_out.write(session.connection())
    audit.record(
        session,
        "contact.erased",
        actor_id=actor_id,
        email_hash=email_hash(address),
        departures=len(departures),
        via=via,
    )
    session.flush()
    scrubbed = _sweep(
        session, emails, names, [d.id for d in departures], everywhere=True
    )
    log.info("erased one person (%d departures) via %s", len(departures), via)
    return Erasure(len(departures), scrubbed, tuple(files))


def _erase_departure(
    session: Session,
    departure: Departure,
    now: datetime,
    names: set[str],
    counted_out: Tally,
) -> list[Path]:
    """Blank one departure's personal fields and emails, and add to
    ``counted_out`` what it counted for; return its .eml files."""
    if departure.erased_at is None:
        answer = session.scalar(
            select(Response.reason).where(Response.departure_id == departure.id)
        )
        counted_out.add(departure_left(departure, answer=answer))
    # Their account facts may carry their name (a one-person company).
    own = _pattern(
        {departure.contact_email} if departure.contact_email else set(), names
    )
    if own is not None:
        departure.company = _scrub(departure.company, own)
        departure.billing_reason = _scrub(departure.billing_reason, own)
    departure.contact_email = f"erased-{departure.public_id}{outbox.ERASED_DOMAIN}"
    departure.contact_name = None
    departure.winback_grant_id = departure.withdraw_token = None
    departure.erased_at = now
    session.execute(
        update(ReviewItem)
        .where(ReviewItem.departure_id == departure.id)
        .values(erased=True)
    )
    session.execute(
        update(Response)
        .where(Response.departure_id == departure.id)
        .values(dict.fromkeys(_FREE_TEXT))
    )
    files: list[Path] = []
    for message in session.scalars(
        select(OutboxMessage).where(OutboxMessage.departure_id == departure.id)
    ):
        if message.kind == webhooks.KIND:
            webhooks.forget(message)
            continue
        files += outbox.eml_files(message.id)
        if message.last_error:  # kept by a release that quoted the address
            message.last_error = outbox.without_address(
                message.last_error, message.recipient
            )
        message.recipient = departure.contact_email
        message.subject = message.body_text = ERASED
        message.body_html = message.unsubscribe_url = None
        if message.status == outbox.PENDING:
            message.status, message.last_error = outbox.FAILED, "recipient erased"
    return files


#: Why a retention purge withdrew consent on a departure.
CARRIED_WITHDRAWAL = (
    "Withdrawn through an earlier departure of this person, erased at the end "
    "of the retention period."
)


def _carry_withdrawal(session: Session, departure: Departure) -> None:
    """Withdraw on the person's other departures what they withdrew through this one.

    A withdrawal covers every departure with the same address (see
    ``winback.eligible``); once ``departure`` is erased it no longer has that
    address, and a grant on a newer departure would count again.
    """
    withdrawal = latest_consent_event(session, departure.id)
    if withdrawal is None or withdrawal.action != "withdrawn":
        return
    for other in granted_elsewhere(session, departure, before=withdrawal.id):
        record_consent(
            session,
            other,
            granted=False,
            channel=withdrawal.channel,
            wording=withdrawal.wording,
            note=CARRIED_WITHDRAWAL,
            carry=False,
        )


def purge_expired(
    session: Session, *, actor_id: int | None = None
) -> tuple[int, Erasure]:
    """Erase the personal data of departures older than ``SURVEY_RETENTION_DAYS``.

    Departure by departure: a person who left again recently keeps the data
    of that newer departure until it expires too. Return how many departures
    were erased (0 when no retention period is set) and the erasure, whose
    files the caller removes after committing.
    """
    days = current_app.config.get("RETENTION_DAYS")
    if not days:
        return 0, Erasure(0, 0)
    cutoff = clock.now() - timedelta(days=days)
    _one_erasure_at_a_time(session)
    expired = session.scalars(
        select(Departure)
        .where(Departure.cancelled_at < cutoff, Departure.erased_at.is_(None))
        .order_by(Departure.id)
    ).all()
    now = clock.now()
    files: list[Path] = []
    counted_out = Tally()
    for departure in expired:
        # All the person's departures, in the order every writer locks them:
        # carrying a withdrawal over changes the others.
        if departure.contact_email:
            departures_of(session, departure.contact_email, writing=True)
        else:
            lock_departure(session, departure.id, erased_ok=True)
        emails = {departure.contact_email} if departure.contact_email else set()
        names = {departure.contact_name.strip()} if departure.contact_name else set()
        names.discard("")
        _carry_withdrawal(session, departure)
        files += _erase_departure(session, departure, now, names, counted_out)
        session.flush()
        _sweep(session, emails, names, [departure.id], everywhere=False)
    counted_out.write(session.connection())
    if expired:
        audit.record(
            session,
            "contact.retention",
            actor_id=actor_id,
            departures=len(expired),
            cutoff=cutoff.isoformat(),
        )
        log.info("retention: erased %d departures", len(expired))
    return len(expired), Erasure(len(expired), 0, tuple(files))

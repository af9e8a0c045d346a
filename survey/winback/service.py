"""The win-back list: contacts who said yes and have not taken it back.

One query decides who is on the list (``eligible``); the JSON API, the CSV
export and the staff page all use it. A contact is listed for a departure
only when that departure's latest consent event is *granted*, the person has
not withdrawn since through any of their departures, their data is not
erased, and the postmortem does not say ``do_not_contact``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from flask import Response as HttpResponse
from flask import stream_with_context
from pydantic import Field, ValidationInfo, WithJsonSchema, field_validator
from sqlalchemy import Select, String, func, literal, or_, select
from sqlalchemy.orm import Session

from survey import audit, clock, db, links
from survey.answers.models import Response
from survey.consent import ConsentEvent
from survey.db.fastpath import Prepared
from survey.departures.models import Departure
from survey.departures.schemas import Timestamp
from survey.errors import InvalidInput
from survey.money import major_units
from survey.review.models import Postmortem
from survey.spreadsheets import csv_code, csv_link, csv_record, csv_text, neutral
from survey.validation import Blank, Query, Text, read_query
from survey.vocabulary import REASONS, WINBACK_RECOMMENDATIONS
from survey.wording import service as wordings

log = logging.getLogger(__name__)

#: The columns of a win-back row, in CSV order.
COLUMNS = (
    "contact_email",
    "contact_name",
    "company",
    "plan",
    "segment",
    "mrr_cents",
    "currency",
    "primary_reason",
    "postmortem_recommendation",
    "consented_at",
    "consent_wording_version",
    "unsubscribe_url",
)

#: The staff download's columns: people's words and amounts, where the API's
#: CSV (``COLUMNS``) carries codes and minor units for programs.
PEOPLE_COLUMNS = (
    "Email",
    "Name",
    "Company",
    "Plan",
    "Segment",
    "Lost MRR",
    "Currency",
    "Stated reason",
    "Postmortem recommendation",
    "Consented at (UTC)",
    "Consent wording version",
    "Unsubscribe link",
)


def for_people(values: list[Any]) -> list[Any]:
    """Turn a row of ``COLUMNS`` into one of ``PEOPLE_COLUMNS``: the amount
    in the currency's unit, the reason and recommendation by their labels."""
    row = list(values)
    mrr_cents, currency, reason, recommendation = row[5:9]
    if mrr_cents is not None:
        row[5] = major_units(mrr_cents, currency)
    row[7] = wordings.known_reasons().get(reason, reason) if reason else ""
    row[8] = WINBACK_RECOMMENDATIONS.get(recommendation, recommendation or "")
    return row


#: A row's first value.
_first = operator.itemgetter(0)

#: Rows fetched from the database at a time while streaming (a few MB).
BATCH = 5_000


@dataclass(frozen=True)
class WinbackFilter:
    """The list's filters; ``since``/``until`` bound the time consent was given."""

    reason: str | None = None
    segment: str | None = None
    plan: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    distinct_email: bool = False

    def as_audit(self) -> dict[str, Any]:
        """Return the filters for the audit log (JSON-friendly, set ones only)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in asdict(self).items()
            if value not in (None, False)
        }


def eligible(wanted: WinbackFilter, after: int | None = None) -> Select[Any]:
    """Return the query of listed contacts, ordered by their grant's id.

    Who is listed is kept on each departure as consent changes
    (``Departure.winback_grant_id``): the list reads no ledger history.
    """
    query: Select[Any] = (
        select(  # type: ignore[assignment]
            Departure.winback_grant_id.label("cursor"),
            db.IsoUtc(ConsentEvent.created_at).label("consented_at"),
            ConsentEvent.wording_version.label("consent_wording_version"),
            Departure.withdraw_token,
            Departure.contact_email,
            Departure.contact_name,
            Departure.company,
            Departure.plan,
            Departure.segment,
            Departure.mrr_cents,
            Departure.currency,
            Response.reason.label("primary_reason"),
            Postmortem.winback_recommendation.label("postmortem_recommendation"),
        )
        .select_from(Departure)
        .join(ConsentEvent, ConsentEvent.id == Departure.winback_grant_id)
        .outerjoin(Response, Response.departure_id == Departure.id)
        .outerjoin(Postmortem, Postmortem.departure_id == Departure.id)
        .where(
            Departure.winback_grant_id.is_not(None),
            Departure.erased_at.is_(None),
            or_(
                Postmortem.winback_recommendation.is_(None),
                Postmortem.winback_recommendation != "do_not_contact",
            ),
        )
    )
    if wanted.reason:
        query = query.where(Response.reason == wanted.reason)
    if wanted.segment:
        query = query.where(Departure.segment == wanted.segment)
    if wanted.plan:
        query = query.where(Departure.plan == wanted.plan)
    if wanted.since:
        query = query.where(ConsentEvent.created_at >= wanted.since)
    if wanted.until:
        query = query.where(ConsentEvent.created_at < wanted.until)
    if wanted.distinct_email:
        # One row per address: the latest departure among the listed ones.
        ranked = query.add_columns(
            func.row_number()
            .over(
                partition_by=Departure.contact_email,
                order_by=(Departure.cancelled_at.desc(), Departure.id.desc()),
            )
            .label("rank")
        ).subquery()
        query = select(*(column for column in ranked.c if column.name != "rank"))
        query = query.where(ranked.c.rank == 1)
        cursor_column: Any = ranked.c.cursor
    else:
        cursor_column = Departure.winback_grant_id
    if after is not None:
        query = query.where(cursor_column > after)
    return query.order_by(cursor_column)


def _listed_columns(c: Any) -> list[Any]:
    """An ``eligible`` subquery's columns in ``COLUMNS`` order, up to the
    link (written per format: see ``csv_rows``, ``json_page``)."""
    return [
        c.contact_email,
        c.contact_name,
        c.company,
        c.plan,
        c.segment,
        c.mrr_cents,
        c.currency,
        c.primary_reason,
        c.postmortem_recommendation,
        c.consented_at,
        c.consent_wording_version,
    ]


#: How the CSV writes each of ``_listed_columns``: people's text made inert,
#: codes and numbers as they are.
_CSV_CELLS = (csv_text,) * 5 + (csv_code,) * 6


def csv_rows(wanted: WinbackFilter, withdraw_url_prefix: str) -> Select[Any]:
    """The API's CSV, a record (``COLUMNS``) per row, made by the database:
    quoted as ``csv.writer`` quotes, text that people typed made inert
    (``spreadsheets.csv_text``), the link joined to its prefix."""
    c = eligible(wanted).subquery().c
    cells = [
        cell(column)
        for cell, column in zip(_CSV_CELLS, _listed_columns(c), strict=True)
    ]
    record = csv_record([*cells, csv_link(withdraw_url_prefix, c.withdraw_token)])
    return select(record).order_by(c.cursor)


def is_listed(session: Session, contact_email: str) -> bool:
    """Return whether the address is on the win-back list, through any departure."""
    listed = eligible(WinbackFilter()).where(Departure.contact_email == contact_email)
    return session.execute(listed.limit(1)).first() is not None


def row_values(row: Any, withdraw_url_prefix: str) -> list[Any]:
    """Return one listed contact's values, in ``COLUMNS`` order.

    ``row`` is a row of ``eligible``, unpacked by position.
    """
    (
        _cursor,
        consented_at,
        wording_version,
        withdraw_token,
        email,
        name,
        company,
        plan,
        segment,
        mrr_cents,
        currency,
        reason,
        recommendation,
    ) = row[:13]
    return [
        email,
        name,
        company,
        plan,
        segment,
        mrr_cents,
        currency,
        reason,
        recommendation,
        consented_at,
        wording_version,
        withdraw_url_prefix + withdraw_token,
    ]


def row_dict(row: Any, withdraw_url_prefix: str) -> dict[str, Any]:
    """Return one listed contact as the API shows it."""
    return dict(zip(COLUMNS, row_values(row, withdraw_url_prefix), strict=True))


@dataclass(frozen=True)
class Page:
    """One page of the list, and the cursor of the next (None on the last)."""

    contacts: list[dict[str, Any]]
    next_cursor: str | None


def parse_cursor(cursor: str | None) -> int | None:
    """Return the position a cursor stands for; raise InvalidInput if damaged."""
    if not cursor:
        return None
    position = db.parse_int(cursor)  # a consent event's id
    if position is None:
        raise InvalidInput(
            "The cursor is not valid.", {"cursor": ["Not a valid cursor."]}
        )
    return position


def page(
    session: Session, wanted: WinbackFilter, cursor: str | None, limit: int
) -> Page:
    """Return one page of listed contacts after ``cursor``."""
    query = eligible(wanted, parse_cursor(cursor)).limit(limit + 1)
    # On the session's connection: rows as they come, without the ORM's loading.
    rows = session.connection().execute(query).all()
    prefix = links.withdraw_url_prefix()
    contacts = [row_dict(row, prefix) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(contacts, str(rows[limit - 1].cursor) if more else None)


#: Contacts a JSON page writes out at a time.
JSON_CHUNK = 500


def json_page_lines(
    session: Session,
    wanted: WinbackFilter,
    after: int | None,
    limit: int,
    on_done: Callable[[int, bool], None],
) -> Iterator[str]:
    """Yield one page of the API's JSON: up to ``limit`` listed contacts
    after the position ``after`` (see ``parse_cursor``), as
    ``{"contacts": [...], "next_cursor": ...}``, ending with a newline as
    Flask's ``jsonify`` does.

    What ``page`` and ``row_dict`` return, but each contact whole from the
    database (``db.JsonObject``), written out as the database sends it
    (``Prepared.stream``): a million-contact list spends no Python per field,
    and the database works on while the page goes out. UTF-8: the database
    leaves non-ASCII text as it is (``jsonify`` escaped it). ``on_done``
    gets the contacts written and whether the page finished, also when the
    client went away midway.
    """
    c = eligible(wanted, after).limit(limit + 1).subquery().c
    link = literal(links.withdraw_url_prefix(), String) + c.withdraw_token
    fields = [*_listed_columns(c), link]
    contact = db.JsonObject(dict(zip(COLUMNS, fields, strict=True))).label("contact")
    query = select(c.cursor, contact)
    rows = Prepared(query.order_by(c.cursor)).stream(
        session.connection(), {}, JSON_CHUNK
    )
    count, more, finished = 0, False, False
    last: int | None = None
    try:
        yield '{"contacts":['
        for batch in rows:
            shown = batch[: limit - count]
            more = more or len(shown) < len(batch)
            if shown:
                contacts = ",".join(row.contact for row in shown)
                written, count = count, count + len(shown)
                last = shown[-1].cursor
                yield ("," if written else "") + contacts
        next_cursor = str(last) if more else None
        yield f'],"next_cursor":{json.dumps(next_cursor)}}}\n'
        finished = True
    finally:
        rows.close()
        on_done(count, finished)


# --- CSV ----------------------------------------------------------------------------


def csv_lines(
    session: Session,
    wanted: WinbackFilter,
    on_done: Callable[[int, bool], None],
    *,
    people: bool = False,
) -> Iterator[str]:
    """Yield the list as CSV, a batch of rows at a time, in constant memory;
    for ``people``, with their column names, labels and amounts.

    Rows stream from a server-side cursor (``yield_per``). ``on_done`` gets
    the row count and whether the export finished, also when the client
    went away midway.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(PEOPLE_COLUMNS if people else COLUMNS)
    prefix = links.withdraw_url_prefix()
    count, finished = 0, False
    try:
        yield buffer.getvalue()
        # Core rows (no ORM loading), from a server-side cursor on PostgreSQL;
        # for programs, each row whole from the database, written as it
        # comes: no Python per cell (a million rows are the expected size).
        result = session.connection().execute(
            eligible(wanted) if people else csv_rows(wanted, prefix),
            execution_options={"yield_per": BATCH},
        )
        for rows in result.partitions():
            buffer.seek(0)
            buffer.truncate()
            if people:
                writer.writerows(
                    [neutral(for_people(row_values(row, prefix))) for row in rows]
                )
            else:
                buffer.write("".join(map(_first, rows)))
            count += len(rows)
            yield buffer.getvalue()
        finished = True
    finally:
        on_done(count, finished)


def audit_export(
    session: Session,
    *,
    actor_id: int | None,
    token_name: str | None,
    wanted: WinbackFilter,
    rows: int,
    finished: bool,
    format: str,
) -> None:
    """Audit an export (who, filters, how many rows) through the session that
    read it, in a writing transaction of its own: the read's ends here (on
    SQLite a read cannot turn into a write once another writer has committed
    meanwhile), and no second connection is held beside it. The session
    must hold no change of its own: the read's transaction is committed."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("audit_export would commit the caller's changes")
    session.commit()
    db.begin_write(session)
    audit.record(
        session,
        "winback.export",
        actor_id=actor_id,
        token=token_name,
        filters=wanted.as_audit(),
        rows=rows,
        finished=finished,
        format=format,
    )
    session.commit()
    log.info("win-back export (%s): %d rows, finished=%s", format, rows, finished)


class WinbackQuery(Query):
    """The list's filters as a query string gives them (the API, the staff page)."""

    reason: Text = Field(
        None,
        description="Stated reason code: a built-in one, or one of the team's "
        "own reasons (set on the survey's admin pages); an unknown code is a 422.",
        examples=list(REASONS),
    )
    segment: Text = Field(None, description="Segment, exactly.")
    plan: Text = Field(None, description="Plan, exactly.")
    since: Timestamp = Field(
        None,
        description="Consented at or after (ISO 8601 date or time; UTC "
        "without a zone).",
    )
    until: Timestamp = Field(
        None, description="Consented before (ISO 8601, like since)."
    )
    distinct: Annotated[
        str | None, Blank, WithJsonSchema({"type": "string", "enum": ["email"]})
    ] = Field(None, description="`email`: one row per address (its latest departure).")

    @field_validator("reason")
    @classmethod
    def _known(cls, reason: str | None) -> str | None:
        known = wordings.known_reasons()
        if reason is not None and reason not in known:
            raise ValueError(f"Unknown reason code; use one of {', '.join(known)}.")
        return reason

    @field_validator("until")
    @classmethod
    def _after_since(
        cls, until: datetime | None, info: ValidationInfo
    ) -> datetime | None:
        since = info.data.get("since")
        if since is not None and until is not None and until <= since:
            raise ValueError(
                "This is not after “from”: no one can have said yes in between."
            )
        return until

    @field_validator("distinct")
    @classmethod
    def _email_or_nothing(cls, distinct: str | None) -> str | None:
        if distinct not in (None, "email"):
            raise ValueError("Use distinct=email, or leave it out.")
        return distinct


def filter_from_args(args: Mapping[str, str]) -> WinbackFilter:
    """Read the list's filters from a query string; raise InvalidInput per field."""
    query = read_query(WinbackQuery, args, "The filters are not valid.")
    return WinbackFilter(
        reason=query.reason,
        segment=query.segment,
        plan=query.plan,
        since=query.since,
        until=query.until,
        distinct_email=query.distinct == "email",
    )


ExportLines = Callable[[Session, Callable[[int, bool], None]], Iterator[str]]


def _audited(
    lines: ExportLines,
    wanted: WinbackFilter,
    *,
    actor_id: int | None,
    token_name: str | None,
    format: str,
) -> Iterator[str]:
    """Stream an export's ``lines``, read on a session of its own that lives
    as long as the stream, and audit the export when it ends."""
    reader = db.new_session()

    def done(rows: int, finished: bool) -> None:
        reader.close()  # the export's read, and its cursor
        try:
            audit_export(
                reader,
                actor_id=actor_id,
                token_name=token_name,
                wanted=wanted,
                rows=rows,
                finished=finished,
                format=format,
            )
        finally:
            reader.close()

    return stream_with_context(lines(reader, done))


def json_download(
    wanted: WinbackFilter, cursor: str | None, limit: int, *, token_name: str
) -> HttpResponse:
    """Stream one page of the list as the API's JSON, and audit it when done
    (see ``json_page_lines``). Raise InvalidInput for a damaged cursor."""
    after = parse_cursor(cursor)

    def lines(reader: Session, done: Callable[[int, bool], None]) -> Iterator[str]:
        return json_page_lines(reader, wanted, after, limit, done)

    # The charset said, for clients that would guess another for raw UTF-8.
    return HttpResponse(
        _audited(lines, wanted, actor_id=None, token_name=token_name, format="json"),
        content_type="application/json; charset=utf-8",
    )


def csv_download(
    wanted: WinbackFilter,
    *,
    actor_id: int | None,
    token_name: str | None,
    people: bool = False,
) -> HttpResponse:
    """Stream the whole list as a CSV download, and audit it when done; for
    ``people`` (the staff page), in their words (see ``csv_lines``)."""

    def lines(reader: Session, done: Callable[[int, bool], None]) -> Iterator[str]:
        return csv_lines(reader, wanted, done, people=people)

    stamp = clock.now().astimezone(UTC).strftime("%Y%m%d-%H%M")
    return HttpResponse(
        _audited(lines, wanted, actor_id=actor_id, token_name=token_name, format="csv"),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="winback-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )

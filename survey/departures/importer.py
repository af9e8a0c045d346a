"""CSV import of departures: good rows in, bad rows reported with line numbers."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from survey.departures.schemas import FIELDS, DepartureIn
from survey.departures.service import record_departure
from survey.errors import DatabaseBusy
from survey.validation import field_errors

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("external_id", "contact_email")

#: Rows recorded per transaction: a long import does not hold the database's
#: write lock for its whole length, and re-running it skips what went in.
CHUNK_ROWS = 500


@dataclass
class ImportReport:
    """What an import did, row by row."""

    created: int = 0
    existing: int = 0
    #: (line number, message) for each rejected row.
    errors: list[tuple[int, str]] = field(default_factory=list)
    #: Header columns that are not departure fields (their cells are ignored).
    ignored_columns: list[str] = field(default_factory=list)
    #: (line number, why) when the import stopped before the end of the file:
    #: the counts and errors are those of the lines before it, all committed.
    stopped: tuple[int, str] | None = None

    def add(self, chunk: ImportReport) -> None:
        """Count a committed chunk's rows in."""
        self.created += chunk.created
        self.existing += chunk.existing
        self.errors += chunk.errors


class BadFile(ValueError):
    """The file as a whole cannot be read as departures."""


class _Lines:
    """The file's physical lines as text, counted (rows may span lines).

    Decoded one line at a time, so that a byte that is not UTF-8 stops the
    import on its own line, not on a buffer read several lines ahead. Lines
    end where a text file opened with ``newline=""`` ends them (at LF, CR LF
    or CR, which they keep), as the csv module wants.
    """

    def __init__(self, data: Iterable[bytes]) -> None:
        self.raw = (line for chunk in data for line in chunk.splitlines(keepends=True))
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self.raw)
        # utf-8-sig: a byte order mark (Excel writes one) is not part of the
        # first column's name.
        line = raw.decode("utf-8-sig" if self.taken == 0 else "utf-8")
        self.taken += 1
        return line


def _not_utf8(error: UnicodeDecodeError) -> str:
    column = len(error.object[: error.start].decode("utf-8", "replace")) + 1
    return f"not UTF-8 text: byte 0x{error.object[error.start]:02X} at column {column}"


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{name}: {' '.join(messages)}"
        for name, messages in field_errors(error).items()
    )


def _failure(error: BaseException, line: int) -> str:
    """Say what went wrong, in one line (a database's DETAIL quotes the row)."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    detail = str(error.orig if isinstance(error, DBAPIError) else error).strip()
    first = detail.splitlines()[0] if detail else type(error).__name__
    if isinstance(error, SQLAlchemyError | DatabaseBusy):
        return f"database error at line {line} ({first})"
    return f"unexpected error at line {line} ({type(error).__name__}: {first})"


@dataclass
class _Row:
    """A row read from the file: its departure, or why it was rejected."""

    line: int
    data: DepartureIn | None = None
    error: str | None = None
    #: Why nothing from this line on can be read.
    stop: str | None = None


def _read_header(reader: Iterator[list[str]]) -> list[str]:
    try:
        header = [name.strip() for name in next(reader, [])]
    except UnicodeDecodeError as exc:
        raise BadFile(f"not a UTF-8 text file (line 1: {_not_utf8(exc)})") from None
    except csv.Error as exc:
        raise BadFile(f"the header row cannot be read ({exc})") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise BadFile(
            "the header row lacks "
            + ", ".join(missing)
            + f" (columns: {', '.join(FIELDS)})"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BadFile(f"the header row names {', '.join(repeated)} more than once")
    return header


def _rows(
    lines: _Lines, reader: Iterator[list[str]], header: list[str]
) -> Iterator[_Row]:
    """Yield the rows after the header, validated; the last one may stop."""
    while True:
        start = lines.taken + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            why = _not_utf8(exc)
            if lines.taken >= start:  # inside a row that spans lines
                why += f" (in the row that begins on line {start})"
            yield _Row(lines.taken + 1, stop=why)
            return
        except csv.Error as exc:
            error = f"unreadable row ({exc})"
            if lines.taken == start:  # one line: the next row starts after it
                yield _Row(start, error=error)
                continue
            # A quote left open took the lines after it: where rows begin again
            # is unknown.
            yield _Row(
                start,
                error=error,
                stop="a quote opened in this row runs over the lines after it",
            )
            return
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) > len(header):
            yield _Row(start, error="more cells than header columns")
            continue
        # An empty cell means "not given": the field's default applies.
        values = {
            name: cell.strip()
            for name, cell in zip(header, cells, strict=False)
            if name in FIELDS and cell.strip()
        }
        try:
            yield _Row(start, data=DepartureIn.model_validate(values))
        except ValidationError as exc:
            yield _Row(start, error=_describe(exc))


def import_departures(
    session: Session,
    data: Iterable[bytes],
    *,
    begin: Callable[[], None],
    commit: Callable[[], None],
) -> ImportReport:
    """Record each valid row of a CSV file; each row goes in whole or not at all.

    ``data`` is the file's bytes, line by line (a file opened in binary mode).
    Rows are recorded in chunks of ``CHUNK_ROWS``: ``begin`` opens a chunk's
    writing transaction when its first row is ready (the write lock is not
    held while the file is waited for), ``commit`` commits it. Whatever stops
    the import (a line that is not UTF-8, a quote left open, a database
    error, anything) ends it with the report of what was committed before:
    a chunk that failed is rolled back and not counted.
    """
    lines = _Lines(data)
    reader = csv.reader(lines, strict=True)  # strict: an open quote is an error
    header = _read_header(reader)
    report = ImportReport(ignored_columns=[n for n in header if n not in FIELDS])
    chunk = ImportReport()  # the rows since the last commit
    first = line = lines.taken + 1  # the chunk's first line, the row's line
    writing = False
    try:
        for row in _rows(lines, reader, header):
            line = row.line
            if row.error is not None:
                chunk.errors.append((row.line, row.error))
            if row.stop is not None:
                report.stopped = (row.line, row.stop)
            if row.data is None:
                continue
            if not writing:
                begin()
                writing = True
            _, created = record_departure(session, row.data, source="csv")
            if created:
                chunk.created += 1
            else:
                chunk.existing += 1
            if chunk.created + chunk.existing >= CHUNK_ROWS:
                commit()
                writing = False
                report.add(chunk)
                chunk, first = ImportReport(), lines.taken + 1
        if writing:
            commit()
    # Whatever it is, Ctrl-C included, what was committed is reported.
    except (Exception, KeyboardInterrupt) as exc:
        session.rollback()
        why = _failure(exc, line)
        if isinstance(exc, SQLAlchemyError | DatabaseBusy | KeyboardInterrupt):
            log.warning("CSV import stopped at line %d: %s", first, why)
        else:
            log.exception("CSV import stopped at line %d: %s", first, why)
        report.stopped = (first, why)
        return report
    report.add(chunk)
    return report

"""CSV import of departures: good rows in, bad rows reported with line numbers."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy.orm import Session

from survey.departures.schemas import FIELDS, DepartureIn, field_errors
from survey.departures.service import record_departure

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


class BadFile(ValueError):
    """The file as a whole cannot be read as departures."""


class _LineCounter:
    """Count the physical lines the CSV reader has taken (rows may span lines)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = iter(lines)
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken += 1
        return line


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{name}: {' '.join(messages)}"
        for name, messages in field_errors(error).items()
    )


def import_departures(
    db: Session, lines: Iterable[str], commit: Callable[[], None] | None = None
) -> ImportReport:
    """Record each valid row of a CSV file; each row goes in whole or not at all.

    ``commit`` is called every ``CHUNK_ROWS`` rows and should end the
    transaction (the caller commits the last chunk).
    """
    counter = _LineCounter(lines)
    # strict: a quote left open is an error, not a cell that swallows the
    # rest of the file.
    reader = csv.reader(counter, strict=True)
    header = [name.strip() for name in next(reader, [])]
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
    report = ImportReport(ignored_columns=[n for n in header if n not in FIELDS])
    since_commit = 0
    while True:
        start = counter.taken + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if counter.taken == start:  # one line: the next row starts after it
                report.errors.append((start, f"unreadable row ({exc})"))
                continue
            # A quote left open took the lines after it: where rows begin again
            # is unknown.
            report.errors.append(
                (start, f"unreadable row ({exc}); nothing from here on was imported")
            )
            break
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) > len(header):
            report.errors.append((start, "more cells than header columns"))
            continue
        # An empty cell means "not given": the field's default applies.
        values = {
            name: cell.strip()
            for name, cell in zip(header, cells, strict=False)
            if name in FIELDS and cell.strip()
        }
        try:
            data = DepartureIn.model_validate(values)
        except ValidationError as exc:
            report.errors.append((start, _describe(exc)))
            continue
        _, created = record_departure(db, data, source="csv")
        if created:
            report.created += 1
        else:
            report.existing += 1
        since_commit += 1
        if commit is not None and since_commit >= CHUNK_ROWS:
            commit()
            since_commit = 0
    return report

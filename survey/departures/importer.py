"""CSV import of departures: good rows in, bad rows reported with line numbers."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy.orm import Session

from survey.departures.schemas import FIELDS, DepartureIn, field_errors
from survey.departures.service import record_departure

REQUIRED_COLUMNS = ("external_id", "contact_email")


@dataclass
class ImportReport:
    """What an import did, row by row."""

    created: int = 0
    existing: int = 0
    #: (line number, message) for each rejected row.
    errors: list[tuple[int, str]] = field(default_factory=list)


class BadFile(ValueError):
    """The file as a whole cannot be read as departures."""


def import_departures(db: Session, lines: Iterable[str]) -> ImportReport:
    """Record each valid row of a CSV file; each row goes in whole or not at all."""
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise BadFile(
            "the header row lacks "
            + ", ".join(missing)
            + f" (columns: {', '.join(FIELDS)})"
        )
    report = ImportReport()
    line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.errors.append((reader.line_num, f"unreadable row: {exc}"))
            break
        start, line = line + 1, reader.line_num
        if None in row:
            report.errors.append((start, "more cells than header columns"))
            continue
        # An empty cell means "not given": the field's default applies.
        values = {
            key: value.strip() for key, value in row.items() if value and value.strip()
        }
        try:
            data = DepartureIn.model_validate(values)
        except ValidationError as exc:
            problems = field_errors(exc)
            report.errors.append(
                (
                    start,
                    "; ".join(
                        f"{name}: {' '.join(messages)}"
                        for name, messages in problems.items()
                    ),
                )
            )
            continue
        _, created = record_departure(db, data, source="csv")
        if created:
            report.created += 1
        else:
            report.existing += 1
    return report

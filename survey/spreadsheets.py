"""CSV for spreadsheets: cells that a spreadsheet will not run as formulas,
and whole CSV records made by the database for exports of a million rows."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Integer, String, case, cast, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

#: A cell starting with one of these is a formula to a spreadsheet.
_FORMULA_STARTS = frozenset(("=", "+", "-", "@", "\t", "\r"))


def neutral(values: list[Any]) -> list[Any]:
    """Make a CSV row inert in spreadsheets: a leading ' before formula starters.

    Numbers stay numbers; every text cell is checked, whoever typed it.
    """
    return [
        "'" + value if type(value) is str and value[:1] in _FORMULA_STARTS else value
        for value in values
    ]


class _TextFunction(FunctionElement[int]):
    """A function on text whose name differs by database."""

    type = Integer()
    inherit_cache = True
    sqlite_name: ClassVar[str]
    postgresql_name: ClassVar[str]


@compiles(_TextFunction)
def _text_function(element: _TextFunction, compiler: Any, **kw: Any) -> str:
    name = getattr(element, f"{compiler.dialect.name}_name")
    return f"{name}({compiler.process(element.clauses, **kw)})"


class _FirstCodePoint(_TextFunction):
    """The code point of a text's first character (NULL for NULL)."""

    inherit_cache = True
    sqlite_name, postgresql_name = "unicode", "ascii"


class _Position(_TextFunction):
    """Where a text holds another, from 1 (0: nowhere; NULL for NULL)."""

    inherit_cache = True
    sqlite_name, postgresql_name = "instr", "strpos"


def inert(text: ColumnElement[Any]) -> ColumnElement[Any]:
    """``neutral`` for one text column, done by the database: an export of a
    million rows then spends no Python on it, cell by cell. (The first code
    point, compared as a number, costs the database least.)"""
    return case(
        (
            _FirstCodePoint(text).in_(sorted(map(ord, _FORMULA_STARTS))),
            literal("'", String) + text,
        ),
        else_=text,
    )


#: A field holding one of these is quoted (the csv module's QUOTE_MINIMAL).
_NEEDS_QUOTES = (",", '"', "\r", "\n")


def csv_text(value: ColumnElement[Any]) -> Any:
    """One text field of a CSV record, as ``csv.writer`` writes it: empty for
    NULL, quoted when it must be, and made ``inert``."""
    shown = inert(value)
    return case(
        (value.is_(None), literal("", String)),
        (
            or_(
                *(_Position(value, literal(mark, String)) > 0 for mark in _NEEDS_QUOTES)
            ),
            literal('"', String)
            + func.replace(shown, literal('"', String), literal('""', String))
            + literal('"', String),
        ),
        else_=shown,
    )


def csv_code(value: ColumnElement[Any]) -> Any:
    """A field the service writes itself, never quoted: a code (letters,
    digits, ``_``, ``-``) or a number; empty for NULL."""
    return func.coalesce(cast(value, String), literal("", String))


def csv_link(prefix: str, token: ColumnElement[Any]) -> Any:
    """A link field: ``prefix`` (known here, quoted here if it must be)
    followed by a URL-safe ``token`` (nothing a CSV field must quote)."""
    if any(mark in prefix for mark in _NEEDS_QUOTES):
        quoted = '"' + prefix.replace('"', '""')
        return literal(quoted, String) + token + literal('"', String)
    return literal(prefix, String) + token


def csv_record(fields: list[Any]) -> Any:
    """One CSV record, ``\\r\\n`` included, from fields made by ``csv_text``
    and ``csv_code``: a row then reaches Python as one string."""
    record = fields[0]
    for field in fields[1:]:
        record = record + literal(",", String) + field
    return record + literal("\r\n", String)

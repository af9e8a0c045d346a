"""CSV for spreadsheets: cells that a spreadsheet will not run as formulas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, case, literal
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


class _FirstCodePoint(FunctionElement[int]):
    """The code point of a text's first character (NULL for "" and NULL)."""

    type = Integer()
    inherit_cache = True


@compiles(_FirstCodePoint, "sqlite")
def _first_sqlite(element: _FirstCodePoint, compiler: Any, **kw: Any) -> str:
    return f"unicode({compiler.process(element.clauses, **kw)})"


@compiles(_FirstCodePoint, "postgresql")
def _first_postgresql(element: _FirstCodePoint, compiler: Any, **kw: Any) -> str:
    return f"ascii({compiler.process(element.clauses, **kw)})"


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

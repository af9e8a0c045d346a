"""CSV for spreadsheets: cells that a spreadsheet will not run as formulas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, case, func, literal
from sqlalchemy.sql.elements import ColumnElement

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


def inert(text: ColumnElement[Any]) -> ColumnElement[Any]:
    """``neutral`` for one text column, done by the database: an export of a
    million rows then spends no Python on it, cell by cell."""
    return case(
        (
            func.substr(text, 1, 1).in_(sorted(_FORMULA_STARTS)),
            literal("'", String) + text,
        ),
        else_=text,
    )

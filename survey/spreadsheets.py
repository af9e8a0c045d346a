"""CSV for spreadsheets: cells that a spreadsheet will not run as formulas."""

from __future__ import annotations

from typing import Any

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

"""Amounts: stored in a currency's minor units, read in its major ones."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import get_currency_precision


def major_units(minor_units: int, currency: str) -> Decimal:
    """Return an amount in the currency's unit: 129900 EUR is 1299.00, 5000
    JPY is 5000 (the yen has no minor unit), 1500 KWD is 1.500."""
    exponent = -get_currency_precision(currency)
    return Decimal(minor_units).scaleb(exponent).quantize(Decimal(1).scaleb(exponent))


def currency_code(value: str) -> str:
    """Return ``value`` as a three-letter currency code in capitals, as amounts
    are stored under; raise ValueError if it is not one."""
    code = value.strip().upper()
    if len(code) == 3 and code.isascii() and code.isalpha():
        return code
    raise ValueError("Give a three-letter currency code.")

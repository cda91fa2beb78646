"""Amounts in minor units -> major units, with each currency's exponent.

ISO 4217 gives most currencies two decimals, some none (JPY, KRW, VND, ...) and some
three (BHD, KWD, ...). Stripe follows it with a few documented exceptions of its own:
https://docs.stripe.com/currencies#zero-decimal and #three-decimal (ISK, HUF and TWD
amounts are sent as two-decimal values; MGA has no minor unit at Stripe).
"""

from __future__ import annotations

import math
from typing import Any

_ISO_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_STRIPE_ZERO = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
ISO_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ISO_ZERO.split(" "), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
STRIPE_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_STRIPE_ZERO.split(" "), 0),
    **dict.fromkeys(("BHD", "JOD", "KWD", "OMR", "TND"), 3),
}


def currency_code(currency: Any) -> str | None:
    """ISO 4217 code, upper-case (`usd` -> `USD`); None if there is none."""
    if not isinstance(currency, str) or not currency.strip():
        return None
    return currency.strip().upper()


def exponent(currency: Any, table: dict[str, int] = ISO_EXPONENTS) -> int:
    return table.get(currency_code(currency) or "", 2)


def to_major(amount: Any, currency: Any, table: dict[str, int] = ISO_EXPONENTS) -> Any:
    """1999 USD -> 19.99; 500 JPY -> 500; 1234 KWD -> 1.234. None stays None."""
    if amount is None or isinstance(amount, bool):
        return None
    try:
        minor = float(amount)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(minor):
        return None
    exp = exponent(currency, table)
    if exp == 0:
        return int(minor) if minor.is_integer() else minor
    return round(minor / 10**exp, exp)


def stripe_amount(amount: Any, currency: Any) -> Any:
    """A Stripe amount (minor units as Stripe counts them) in major units."""
    return to_major(amount, currency, STRIPE_EXPONENTS)

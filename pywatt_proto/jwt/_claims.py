"""Registered-claim types (RFC 7519 §4.1) and exact NumericDate arithmetic.

NumericDates are JSON numbers: ``int`` or finite ``float``, never strings or
booleans.  They are compared exactly, never truncated: Python compares ints
and floats exactly, and the one rounding step (adding the leeway) falls back to
:class:`fractions.Fraction` whenever it could change the answer.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from ._errors import JwtError

NUMERIC_DATES = ("exp", "nbf", "iat")
STRING_CLAIMS = ("iss", "sub", "jti")


def _numeric(value: object) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))  # type: ignore[arg-type]


def check_types(claims: dict[str, Any]) -> None:
    """Check the types of the registered claims present in ``claims``.

    Returns None; raises :class:`JwtError` (reason ``malformed``) naming the
    first claim whose value has the wrong type.
    """
    for name in NUMERIC_DATES:
        if name in claims and not _numeric(claims[name]):
            raise JwtError("malformed", f"claim {name} is not a NumericDate")
    for name in STRING_CLAIMS:
        if name in claims and type(claims[name]) is not str:
            raise JwtError("malformed", f"claim {name} is not a string")
    if "aud" in claims:
        aud = claims["aud"]
        if type(aud) is not str and not (type(aud) is list and all(type(a) is str for a in aud)):
            raise JwtError("malformed", "claim aud is not a string or a list of strings")


def at_or_after(now: float, instant: float, offset: float) -> bool:
    """Return whether ``now >= instant + offset``, computed exactly."""
    if not offset:
        return now >= instant
    try:
        bound = instant + offset
        if type(bound) is int:
            return now >= bound
        if abs(now - bound) > 4 * math.ulp(bound):
            return now >= bound
    except OverflowError:
        pass
    return Fraction(now) >= Fraction(instant) + Fraction(offset)

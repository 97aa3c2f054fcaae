"""Errors of the JWT layer: one exception, one machine-readable ``reason``.

Every way a token can fail maps to exactly one reason, so callers (middleware,
the CLI, logs) can branch on a short code and never parse messages.  The
message is for logs; it never contains key material.
"""

from __future__ import annotations

from typing import Literal, get_args

JwtReason = Literal[
    "signature",
    "malformed",
    "algorithm",
    "expired",
    "not_yet_valid",
    "audience",
    "issuer",
    "missing_claim",
    "header",
    "size",
]

#: Every reason a :class:`JwtError` can carry, in documentation order.
REASONS: tuple[JwtReason, ...] = get_args(JwtReason)


class JwtError(Exception):
    """A token (or a key) was refused.

    Attributes:
        reason: one of :data:`REASONS`; the rule behind each is tabled in spec/jwt.md §3.
    """

    reason: JwtReason

    def __init__(self, reason: JwtReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def message(self) -> str:
        """The human-readable message (safe to log, never contains key bytes)."""
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class JwtKeyError(JwtError, ValueError):
    """A key was refused when it was configured (reason ``size`` or ``algorithm``).

    Raised by :class:`~pywatt_proto.jwt.JwtKey`, :func:`~pywatt_proto.jwt.encode`
    and the validator's constructor / ``set_keys``; never by ``validate``.
    """

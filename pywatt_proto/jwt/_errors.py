"""Errors of the JWT layer: one exception, one machine-readable ``reason``.

Every way a token can fail maps to exactly one reason, so callers (middleware,
the CLI, logs) can branch on a short code and never parse messages.  The
message is for logs; it never contains key material.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["REASONS", "JwtError", "JwtKeyError", "JwtReason"]

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
REASONS: tuple[JwtReason, ...] = (
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
)


class JwtError(Exception):
    """A token (or a key) was refused.

    Attributes:
        reason: one of :data:`REASONS`:

            * ``signature`` -- the HMAC does not match any configured key;
            * ``malformed`` -- not three canonical base64url segments, not UTF-8,
              not a JSON object, duplicate member names, a registered claim of the
              wrong type;
            * ``algorithm`` -- ``alg`` is not ``HS256`` (including ``none``), or a
              key is an asymmetric key in PEM/OpenSSH form;
            * ``expired`` / ``not_yet_valid`` -- ``exp`` / ``nbf`` (with leeway);
            * ``audience`` / ``issuer`` -- ``aud`` / ``iss`` not accepted;
            * ``missing_claim`` -- a required claim is absent;
            * ``header`` -- unsupported header parameters (``crit``, ``zip``,
              ``b64``), ``kid``/``typ`` of the wrong type or an unexpected ``typ``;
            * ``size`` -- the token is longer than the configured maximum, nests
              JSON deeper than allowed, or a key is shorter than 32 bytes.
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

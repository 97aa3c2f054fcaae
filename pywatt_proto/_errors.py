"""Error hierarchy shared by every part of the protocol core.

Two sides, one root (the h11 model):

* :class:`LocalProtocolError` -- *our* caller misused the API (tried to send an
  event the state machine does not allow, built an invalid value, ...).
* :class:`RemoteProtocolError` -- the *peer* sent something that violates the
  protocol (bad JSON, a field of the wrong type, an oversized frame, ...).

Every error carries ``error_status_hint``: the HTTP status a driver should use
if it has to turn the failure into an HTTP answer (400 for malformed input,
413 for oversize bodies, 503 for overload, 504 for deadlines, ...).
Errors are built once with their final class; nothing mutates them afterwards.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every protocol failure raised by :mod:`pywatt_proto`.

    Attributes:
        error_status_hint: HTTP status a driver may answer with (default 400).
        field: dotted path of the offending field, when there is one
            (for example ``"body[3]"`` or ``"tcp_channel.address"``).
    """

    error_status_hint: int
    field: str | None

    def __init__(self, msg: str, *, error_status_hint: int = 400, field: str | None = None) -> None:
        super().__init__(msg)
        self.error_status_hint = error_status_hint
        self.field = field

    @property
    def message(self) -> str:
        """The human-readable message the error was built with."""
        return str(self.args[0]) if self.args else ""


class LocalProtocolError(ProtocolError):
    """Our own caller broke a rule of the protocol or of the API."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or a message that break the protocol."""


class AuthError(Exception):
    """A request failed authentication; drivers answer it with ``status`` (401).

    Raised by authenticators (for example the JWT one) and turned into a response
    by the router. ``reason`` is a short machine-readable code that is logged but
    never sent to the client; ``www_authenticate`` is the challenge header value.
    """

    reason: str
    www_authenticate: str
    status: int

    def __init__(
        self,
        reason: str,
        *,
        www_authenticate: str = 'Bearer error="invalid_token"',
        status: int = 401,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.www_authenticate = www_authenticate
        self.status = status

"""HTTP Bearer authentication with a JWT validator (RFC 6750, RFC 7235; spec/jwt.md §4).

Shared by the pywatt router hook (:class:`JwtAuthenticator`), the ASGI middleware
(``pywatt_asyncio``) and the WSGI middleware (``pywatt_sync``), so all three parse
``Authorization``, answer failures (401 / 400 ``invalid_request``, a fixed body that never
says why) and log refusals (:func:`log_refusal`) identically.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .._errors import AuthError
from .._lazylog import LazyLogger
from ._errors import JwtError
from ._validator import JwtValidator

#: WSGI environ key under which the middleware stores verified claims.
CLAIMS_ENVIRON_KEY = "pywatt.jwt.claims"

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")

_log = LazyLogger("pywatt.jwt")  # logging is imported by the first emitted record

_MISSING = "missing_token"
_INVALID_REQUEST = "invalid_request"


def parse_bearer(value: str | None) -> str:
    """Extract the token from an ``Authorization`` header value.

    Returns the token.  Raises :class:`~pywatt_proto.AuthError`: reason
    ``missing_token`` (401, bare ``Bearer`` challenge) when ``value`` is None
    or uses another scheme, ``invalid_request`` (400) when the Bearer
    credentials are empty or not ``b64token`` syntax.
    """
    # RFC 7235 §2.1: credentials = auth-scheme [ 1*SP token68 ], with optional blanks
    # around. Split, not a regex: one with a lazy group backtracked quadratically on a
    # long run of blanks.
    scheme, _, token = (value or "").strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(_MISSING, www_authenticate="Bearer")
    if _B64TOKEN.fullmatch(token := token.lstrip(" ")) is None:
        raise _invalid_request()
    return token


class _HeaderLookup(Protocol):
    def get(self, name: str, /) -> str | None: ...


class _HasHeaders(Protocol):
    @property
    def headers(self) -> _HeaderLookup: ...


def _invalid_request() -> AuthError:
    return AuthError(
        _INVALID_REQUEST, www_authenticate='Bearer error="invalid_request"', status=400
    )


def _authorization(headers: _HeaderLookup) -> str | None:
    # The router's Headers is case-insensitive and multi-valued; a plain mapping
    # is searched case-insensitively.  Two Authorization headers are ambiguous.
    get_all = getattr(headers, "get_all", None)
    if callable(get_all):
        values = get_all("authorization")
        if len(values) > 1:
            raise _invalid_request()
        return str(values[0]) if values else None
    value = headers.get("authorization")
    if value is None and isinstance(headers, Mapping):
        for key, val in headers.items():
            if isinstance(key, str) and key.lower() == "authorization":
                return str(val)
    return value


class JwtAuthenticator:
    """The router's authenticator: ``(request, label, now) -> claims``.

    Validates the Bearer token of ``request``'s ``Authorization`` header (the router's
    :class:`~pywatt_proto.Request`, or anything whose ``headers`` has a case-insensitive
    ``get``; two such headers are an ``invalid_request``) and returns the claims, which the
    router hands to the handler as ``request.claims``. A refusal is logged to ``pywatt.jwt``
    at INFO (:func:`log_refusal`).
    ``clock``: epoch seconds for ``exp``/``nbf``; with None the router's ``now`` is used,
    but the pywatt drivers pass a *monotonic* reading there, so use their
    ``jwt_authenticator`` helpers (``clock=time.time``).
    ``labels`` restricts the route labels it accepts (default: any); another label is
    refused with ``unknown_auth_label`` (500, logged at ERROR: a misconfiguration is never
    silently open). Raises :class:`~pywatt_proto.AuthError` as :func:`parse_bearer` does,
    or with the :class:`JwtError` reason (401, ``Bearer error="invalid_token"``).
    """

    __slots__ = ("clock", "labels", "validator")

    def __init__(
        self,
        validator: JwtValidator,
        *,
        labels: Iterable[str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.validator = validator
        self.labels = None if labels is None else frozenset(labels)
        self.clock = clock

    def __call__(self, request: _HasHeaders, label: str, now: float) -> dict[str, Any]:
        if self.labels is not None and label not in self.labels:
            _log.error(
                "jwt: %s %s: route auth label %r is not one of %s (answered 500)",
                getattr(request, "method", "?"),
                getattr(request, "path", "?"),
                label,
                sorted(self.labels),
            )
            raise AuthError("unknown_auth_label", www_authenticate="", status=500)
        if self.clock is not None:
            now = self.clock()
        try:
            return self.authenticate(_authorization(request.headers), now)
        except AuthError as err:
            log_refusal(getattr(request, "method", "?"), getattr(request, "path", "?"), err)
            raise

    def authenticate(self, authorization: str | None, now: float) -> dict[str, Any]:
        """Validate an ``Authorization`` header value; returns the claims.

        Raises :class:`~pywatt_proto.AuthError` (see the class docstring).
        """
        token = parse_bearer(authorization)
        try:
            return self.validator.validate(token, now)
        except JwtError as exc:
            raise AuthError(exc.reason, www_authenticate='Bearer error="invalid_token"') from exc


def log_refusal(method: object, path: object, err: AuthError) -> None:
    """Log a refused request to ``pywatt.jwt`` at INFO: ``jwt: refused GET /me: expired``
    (never the token or the ``Authorization`` value). A 5xx refusal (keys not loaded) is
    not logged here: the authenticator warned once for its cause."""
    if err.status < 500:
        _log.info("jwt: refused %s %s: %s", method, path, err.reason)


class PublicPaths:
    """Paths that skip authentication.

    Each pattern is an exact path (``"/health"``) or a prefix ending in ``*``
    (``"/static/*"`` matches ``/static/`` and everything below it).  Matching is
    on the raw path, case-sensitive, without query string.
    """

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for p in patterns:
            if p.endswith("*"):
                prefixes.append(p[:-1])
            else:
                exact.add(p)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        return path in self._exact or path.startswith(self._prefixes)


def auth_error_response(error: AuthError) -> tuple[int, list[tuple[str, str]], bytes]:
    """Return ``(status, headers, body)`` answering ``error`` without leaking internals.

    The body is ``{"error":"invalid_request"}`` for 400 and
    ``{"error":"unauthorized"}`` otherwise (``{"error":"internal"}`` for 5xx).
    """
    if error.status == 400:
        body = b'{"error":"invalid_request"}'
    elif error.status >= 500:
        body = b'{"error":"internal"}'
    else:
        body = b'{"error":"unauthorized"}'
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    ]
    if error.www_authenticate:
        headers.append(("www-authenticate", error.www_authenticate))
    return error.status, headers, body

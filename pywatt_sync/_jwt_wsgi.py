"""WSGI middleware that requires a valid HS256 Bearer token (Flask, Django, ...).

All rules come from :mod:`pywatt_proto.jwt`; this file reads
``HTTP_AUTHORIZATION`` from the environ, reads the clock and writes the answer.
Verified claims are stored in ``environ["pywatt.jwt.claims"]``.

:class:`FlaskJwt` installs the middleware on a Flask app and copies the claims
to ``flask.g.claims`` (and ``g.jwt_claims``) in a ``before_request`` hook,
because ``g`` only exists inside Flask's app context.  Flask is imported
lazily, only inside that hook, so it is not a dependency of this package.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from pywatt_proto._errors import AuthError
from pywatt_proto._router import reason_phrase
from pywatt_proto.jwt import (
    CLAIMS_ENVIRON_KEY,
    JwtAuthenticator,
    JwtSecretAuthenticator,
    JwtValidator,
    PublicPaths,
    auth_error_response,
)
from pywatt_proto.jwt._auth import log_refusal
from pywatt_proto.jwt._secret_auth import install_module_jwt, middleware_authenticator


def wsgi_claims(environ: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the verified claims the middleware stored in ``environ`` (None on public paths)."""
    claims = environ.get(CLAIMS_ENVIRON_KEY)
    return claims if isinstance(claims, dict) else None


def jwt_authenticator(
    validator: JwtValidator,
    *,
    labels: Iterable[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> JwtAuthenticator:
    """Return a router authenticator (``Router(authenticator=...)``) reading epoch time.

    The router hands authenticators the driver's monotonic clock reading; JWT
    ``exp``/``nbf`` need epoch seconds, so this reads ``clock`` (``time.time``).
    """
    return JwtAuthenticator(validator, labels=labels, clock=clock)


class JwtWsgiMiddleware:
    """Wraps a WSGI app so every request needs a valid Bearer token.

    Args:
        app: the wrapped WSGI application.
        validator: the :class:`~pywatt_proto.jwt.JwtValidator` to use. None (the
            default): the keys are the ``secrets`` (names, or ``{name: kid}``) of the
            pywatt module serving this process, read from its cache; requests are
            answered 503 ``keys_unavailable`` until it has them, and rotated values are
            taken as they arrive.
        policy: with ``validator=None``, the other
            :class:`~pywatt_proto.jwt.JwtSecretAuthenticator` arguments (``audience``, ...).
        public_paths: paths served without a token (exact, or a prefix ending in
            ``*``), matched against ``PATH_INFO``.
        clock: returns the current time in seconds (default :func:`time.time`).

    On success the claims are stored in ``environ["pywatt.jwt.claims"]``; on failure the
    request never reaches ``app`` and is answered as spec/jwt.md §4 says.
    """

    __slots__ = ("_auth", "_clock", "_public", "app")

    def __init__(
        self,
        app: WSGIApplication,
        validator: JwtValidator | None = None,
        *,
        public_paths: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        secrets: Mapping[str, str | None] | Iterable[str] = ("JWT_SECRET",),
        **policy: Any,
    ) -> None:
        self.app = app
        self._auth = middleware_authenticator(validator, secrets, policy)
        self._public = PublicPaths(public_paths)
        self._clock = clock

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ.pop(CLAIMS_ENVIRON_KEY, None)  # never trust a value set by someone else
        path = environ.get("PATH_INFO", "")
        if path in self._public:
            return self.app(environ, start_response)
        try:
            claims = self._auth.authenticate(environ.get("HTTP_AUTHORIZATION"), self._clock())
        except AuthError as err:
            log_refusal(environ.get("REQUEST_METHOD", "?"), path, err)
            status, headers, body = auth_error_response(err)
            start_response(f"{status} {reason_phrase(status)}", headers)
            return [body]
        environ[CLAIMS_ENVIRON_KEY] = claims
        return self.app(environ, start_response)


def _copy_claims_to_g() -> None:
    from flask import g, request  # lazy: Flask is optional

    claims = wsgi_claims(request.environ)
    if claims is not None:
        g.claims = claims
        g.jwt_claims = claims


class FlaskJwt:
    """Flask extension: ``FlaskJwt(app, validator=v, public_paths=["/health"])``.

    :meth:`init_app` wraps ``app.wsgi_app`` in :class:`JwtWsgiMiddleware` and
    registers a ``before_request`` hook that copies the claims to
    ``flask.g.claims`` / ``flask.g.jwt_claims``.  ``app`` is any Flask app; it
    is typed loosely so Flask need not be installed to import this module.
    Without ``validator`` the keys are the serving module's ``secrets`` (503 until
    they arrive; see :class:`JwtWsgiMiddleware`).
    """

    __slots__ = ("_clock", "_policy", "_public", "_secrets", "validator")

    def __init__(
        self,
        app: Any = None,
        *,
        validator: JwtValidator | None = None,
        public_paths: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        secrets: Mapping[str, str | None] | Iterable[str] = ("JWT_SECRET",),
        **policy: Any,
    ) -> None:
        self.validator = validator
        self._public = tuple(public_paths)
        self._clock = clock
        self._secrets = secrets
        self._policy = policy
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Install the middleware and the ``g`` hook on ``app``; returns None."""
        app.wsgi_app = JwtWsgiMiddleware(
            app.wsgi_app,
            self.validator,
            public_paths=self._public,
            clock=self._clock,
            secrets=self._secrets,
            **self._policy,
        )
        app.before_request(_copy_claims_to_g)


if TYPE_CHECKING:
    from ._module import Module


def module_jwt(
    app: Module,
    secrets: Mapping[str, str | None] | Iterable[str] = ("JWT_SECRET",),
    *,
    clock: Callable[[], float] = time.time,
    **policy: Any,
) -> JwtSecretAuthenticator:
    """Protect ``app``'s ``auth=`` routes with HS256 keys kept in orchestrator secrets
    (spec/jwt.md §5); return the installed :class:`~pywatt_proto.jwt.JwtSecretAuthenticator`.

    Each rotated secret is re-fetched (``app.secret(name)``) and swaps the keys; a value
    that is not a usable key makes the rotation callback raise (acknowledged ``error``, the
    old keys stay). List the same names in ``Module(secrets=[...])``. ``policy``: the other
    :class:`~pywatt_proto.jwt.JwtSecretAuthenticator` arguments (``audience``, ...).
    """
    auth = install_module_jwt(app, secrets, clock=clock, **policy)

    def load_keys() -> None:
        # Keys in force from the start, so a rotation before the first request keeps the
        # previous key usable; an unusable value answers 503 (logged) instead.
        with contextlib.suppress(ValueError):
            auth.load()

    app.on_startup(load_keys)

    def on_rotation(keys: tuple[str, ...]) -> None:
        for name in auth.rotated(keys):
            auth.update(name, app.secret(name))

    app.on_rotation(on_rotation)
    return auth

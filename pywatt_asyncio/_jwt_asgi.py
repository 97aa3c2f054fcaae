"""ASGI middleware that requires a valid HS256 Bearer token (FastAPI, Starlette, ...).

All rules (Bearer parsing, which status and challenge to answer, the body)
come from :mod:`pywatt_proto.jwt`; this file only reads the ``Authorization``
header from the ASGI scope, reads the clock and writes the answer.

On success the verified claims are put in the request's ``state`` so
``request.state.claims`` works in Starlette/FastAPI (also as
``request.state.jwt_claims``, the seed SDK's name).  The scope is copied, never
mutated: the ``state`` dict a server hands in is shared lifespan state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from pywatt_proto._errors import AuthError
from pywatt_proto.jwt import (
    JwtSecretAuthenticator,
    JwtValidator,
    PublicPaths,
    auth_error_response,
)
from pywatt_proto.jwt._auth import log_refusal
from pywatt_proto.jwt._secret_auth import install_module_jwt, middleware_authenticator

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

# RFC 6455 §7.4.1: 1008 = policy violation (used to refuse a WebSocket).
_WS_POLICY_VIOLATION = 1008


def _authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    found: str | None = None
    for name, value in headers:
        if name.lower() == b"authorization":
            if found is not None:
                raise AuthError(
                    "invalid_request", www_authenticate='Bearer error="invalid_request"', status=400
                )
            found = value.decode("latin-1")
    return found


class JwtAsgiMiddleware:
    """Wraps an ASGI app so every ``http``/``websocket`` request needs a valid token.

    Args:
        app: the wrapped ASGI 3 application.
        validator: the :class:`~pywatt_proto.jwt.JwtValidator` to use (its keys can be
            rotated while the app runs). None (the default): the keys are the ``secrets``
            (names, or ``{name: kid}``) of the pywatt module serving this process, read
            from its cache; requests are answered 503 ``keys_unavailable`` until it has
            them, and rotated values are taken as they arrive.
        policy: with ``validator=None``, the other
            :class:`~pywatt_proto.jwt.JwtSecretAuthenticator` arguments (``audience``, ...).
        public_paths: paths served without a token (exact, or a prefix ending in
            ``*``), matched against ``scope["path"]``.
        clock: returns the current time in seconds (default :func:`time.time`).

    Failures are answered as spec/jwt.md §4 says; a refused WebSocket is closed with code
    1008 before it is accepted. Other scope types (``lifespan``) pass through untouched.
    With FastAPI/Starlette: ``app.add_middleware(JwtAsgiMiddleware, validator=v)``.
    """

    __slots__ = ("_auth", "_clock", "_public", "app")

    def __init__(
        self,
        app: _App,
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

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket") or scope.get("path") in self._public:
            await self.app(scope, receive, send)
            return
        try:
            value = _authorization(scope.get("headers") or ())
            claims = self._auth.authenticate(value, self._clock())
        except AuthError as err:
            log_refusal(scope.get("method", "WEBSOCKET"), scope.get("path"), err)
            if kind == "websocket":
                await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
                return
            status, headers, body = auth_error_response(err)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        state = dict(scope.get("state") or {})
        state["claims"] = claims
        state["jwt_claims"] = claims
        new_scope = dict(scope)
        new_scope["state"] = state
        await self.app(new_scope, receive, send)


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

    async def load_keys() -> None:
        # Keys in force from the start, so a rotation before the first request keeps the
        # previous key usable; an unusable value answers 503 (logged) instead.
        with contextlib.suppress(ValueError):
            auth.load()

    app.on_startup(load_keys)

    async def on_rotation(keys: tuple[str, ...]) -> None:
        for name in auth.rotated(keys):
            auth.update(name, await app.secret(name))

    app.on_rotation(on_rotation)
    return auth

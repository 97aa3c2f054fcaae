"""A router authenticator whose HS256 keys live in orchestrator secrets (spec/jwt.md §5).

The module runtime prefetches the named secrets before it announces and tells its
``on_rotation`` callbacks which rotated. :class:`JwtSecretAuthenticator` builds the
validator from the values the first time a request needs them (through ``lookup``) and
swaps the key set on :meth:`JwtSecretAuthenticator.update`, keeping the previous key usable
until :meth:`~JwtSecretAuthenticator.retire_previous`. No I/O here: the drivers'
``module_jwt`` connect ``lookup``, the rotation callback and the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import AuthError
from .._lazylog import LazyLogger
from ._auth import JwtAuthenticator, _HasHeaders
from ._keys import JwtKey, JwtSecretKeys, KeyEncoding
from ._validator import DEFAULT_LEEWAY, DEFAULT_MAX_DEPTH, DEFAULT_MAX_TOKEN_SIZE, JwtValidator

if TYPE_CHECKING:
    from .._module import ModuleConnection
    from .._router import Router

_log = LazyLogger("pywatt.jwt")
#: Distinct causes of 503 remembered so each is logged once (a cause names one
#: secret, so this only fills up with hundreds of secret names; then it is reset).
_MAX_WARNED = 64


class JwtSecretAuthenticator:
    """Router authenticator ``(request, label, now) -> claims`` keyed by named secrets.

    Args:
        secrets: secret names (each key without ``kid``) or ``{name: kid}``.
        lookup: returns a secret's current value or None (the runtime's cache);
            used until every secret has a value.
        clock: epoch seconds for ``exp``/``nbf`` (None: the router's ``now``).
        encoding: how secret text holds the key bytes (``raw``, ``base64url``, ``hex``).
        keep_previous: keep a rotated-out key usable until :meth:`retire_previous`.
        follow: re-read every secret through ``lookup`` on each request and take a
            changed value as a rotation (for middleware that has no ``on_rotation``
            hook; the lookup must be a cheap cache read).
        labels, leeway, audience, issuer, required, max_size, max_depth, typ:
            as for :class:`JwtAuthenticator` and :class:`JwtValidator`.

    Until every secret has a usable value, requests are refused with
    :class:`~pywatt_proto.AuthError` ``keys_unavailable`` (503, fail closed), each distinct
    cause logged once to ``pywatt.jwt`` at WARNING (naming the secret, never its value); an
    unusable value raises :class:`~pywatt_proto.jwt.JwtKeyError` from :meth:`update` and
    leaves the previous keys in force.
    """

    __slots__ = (
        "_auth",
        "_follow",
        "_labels",
        "_lookup",
        "_policy",
        "_seen",
        "_source",
        "_warned",
        "clock",
    )

    def __init__(
        self,
        secrets: Mapping[str, str | None] | Iterable[str],
        *,
        lookup: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] | None = None,
        encoding: KeyEncoding = "raw",
        keep_previous: bool = True,
        follow: bool = False,
        labels: Iterable[str] | None = None,
        leeway: float = DEFAULT_LEEWAY,
        audience: str | Iterable[str] | None = None,
        issuer: str | Iterable[str] | None = None,
        required: Iterable[str] = (),
        max_size: int = DEFAULT_MAX_TOKEN_SIZE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        typ: str | None = None,
    ) -> None:
        self._policy: dict[str, Any] = {
            "leeway": leeway,
            "audience": audience,
            "issuer": issuer,
            "required": tuple(required),
            "max_size": max_size,
            "max_depth": max_depth,
            "typ": typ,
        }
        JwtValidator(JwtKey(secret=bytes(32)), **self._policy)  # check the policy now
        self._labels = None if labels is None else frozenset(labels)
        self._lookup = lookup
        self.clock = clock
        self._auth: JwtAuthenticator | None = None
        self._warned: set[str] = set()
        self._follow = follow
        self._seen: dict[str, str] = {}  # follow: the value last taken per secret name
        self._source = JwtSecretKeys(
            secrets, on_change=self._keys_changed, encoding=encoding, keep_previous=keep_previous
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The secret names the keys come from."""
        return self._source.names

    @property
    def validator(self) -> JwtValidator | None:
        """The validator, once every secret has a value (None before)."""
        return None if self._auth is None else self._auth.validator

    def _keys_changed(self, keys: tuple[JwtKey, ...]) -> None:
        if self._auth is None:
            validator = JwtValidator(keys, **self._policy)
            self._auth = JwtAuthenticator(validator, labels=self._labels, clock=self.clock)
        else:
            self._auth.validator.set_keys(keys)

    def update(self, name: str, value: str | bytes) -> bool:
        """Record a (rotated) value of secret ``name``; returns True if the keys changed.

        Raises :class:`KeyError` for a name not followed, :class:`JwtKeyError` /
        :class:`ValueError` for a value that is not a usable key.
        """
        return self._source.update(name, value)

    def rotated(self, keys: Iterable[str]) -> tuple[str, ...]:
        """Return the followed secret names among the rotated ``keys`` (in
        :attr:`names` order): the ones whose new value must be fetched and
        handed to :meth:`update`."""
        rotated = frozenset(keys)
        return tuple(name for name in self._source.names if name in rotated)

    def retire_previous(self) -> None:
        """Stop accepting keys that rotations replaced."""
        self._source.retire_previous()

    def load(self) -> bool:
        """Pull missing secret values through ``lookup``; returns True once ready.

        Raises what :meth:`update` raises for an unusable value.
        """
        if self._auth is None and self._lookup is not None:
            for name in self._source.names:
                value = self._lookup(name)
                if value is not None:
                    self._source.update(name, value)
        return self._auth is not None

    def _unavailable(self) -> str:
        """Try to load the keys; return "" when ready, else why not (no secret value)."""
        lookup = self._lookup
        if lookup is None:
            return "no secret lookup configured; call update() with each secret"
        missing = []
        for name in self._source.names:
            value = lookup(name)
            if value is None:
                missing.append(name)
                continue
            try:
                self._source.update(name, value)
            except ValueError as exc:  # JwtKeyError included; messages hold no key bytes
                return f"secret {name!r} is not a usable key: {exc}"
        if self._auth is not None:
            return ""
        return "secret(s) not received yet: " + ", ".join(repr(n) for n in missing)

    def _ready(self) -> JwtAuthenticator:
        """Return the authenticator over the current keys.

        Raises:
            AuthError: ``keys_unavailable`` (503) while a secret has no usable value.
        """
        if self._follow and self._lookup is not None:
            self._follow_values(self._lookup)
        auth = self._auth
        if auth is None:
            cause = self._unavailable()
            auth = self._auth
            if cause or auth is None:
                if cause not in self._warned:
                    if len(self._warned) >= _MAX_WARNED:
                        self._warned.clear()
                    self._warned.add(cause)
                    _log.warning("jwt: answering 503 (keys_unavailable): %s", cause)
                raise AuthError("keys_unavailable", www_authenticate="", status=503)
            self._warned.clear()
        return auth

    def _follow_values(self, lookup: Callable[[str], str | None]) -> None:
        seen = self._seen
        for name in self._source.names:
            value = lookup(name)
            if value is None or seen.get(name) == value:
                continue
            seen[name] = value
            try:
                self._source.update(name, value)
            except ValueError as exc:  # the previous keys stay in force
                _log.warning("jwt: secret %r is not a usable key (%s); keys unchanged", name, exc)

    def __call__(self, request: _HasHeaders, label: str, now: float) -> dict[str, Any]:
        return self._ready()(request, label, now)

    def authenticate(self, authorization: str | None, now: float) -> dict[str, Any]:
        """Validate an ``Authorization`` header value (for middleware); return the claims.

        ``now`` is epoch seconds unless this object has a ``clock``.

        Raises:
            AuthError: ``keys_unavailable`` (503) until every secret has a usable
                value; otherwise as :meth:`JwtAuthenticator.authenticate`.
        """
        auth = self._ready()
        return auth.authenticate(authorization, now if auth.clock is None else auth.clock())


def serving_module_authenticator(
    secrets: Mapping[str, str | None] | Iterable[str], **policy: Any
) -> JwtSecretAuthenticator:
    """Return an authenticator whose keys are secrets of the module serving this process.

    For ASGI/WSGI middleware built before the module runs (a FastAPI/Flask app file):
    requests are answered 503 ``keys_unavailable`` until the module has received every
    secret, then validated; rotated values are taken as they reach the module's cache
    (``follow``). ``policy``: the other :class:`JwtSecretAuthenticator` arguments.
    """
    from .._serving import serving

    policy.setdefault("follow", True)
    return JwtSecretAuthenticator(secrets, lookup=lambda n: _cached(serving(), n), **policy)


def middleware_authenticator(
    validator: JwtValidator | None,
    secrets: Mapping[str, str | None] | Iterable[str],
    policy: Mapping[str, Any],
) -> JwtAuthenticator | JwtSecretAuthenticator:
    """The ASGI/WSGI middleware's authenticator: ``validator``'s, or with None the
    :func:`serving_module_authenticator` of ``secrets`` under ``policy``."""
    if validator is not None:
        return JwtAuthenticator(validator)
    return serving_module_authenticator(secrets, **policy)


class _HasConnection(Protocol):
    @property
    def connection(self) -> ModuleConnection | None: ...


class ModuleApp(_HasConnection, Protocol):
    """What :func:`install_module_jwt` needs of a driver's ``Module``."""

    @property
    def router(self) -> Router: ...


def _cached(module: _HasConnection | None, name: str) -> str | None:
    """Secret ``name`` from ``module``'s connection cache, or None."""
    conn = None if module is None else module.connection
    return None if conn is None else conn.cached_secret(name)


def install_module_jwt(
    app: ModuleApp,
    secrets: Mapping[str, str | None] | Iterable[str],
    *,
    clock: Callable[[], float] | None,
    **policy: Any,
) -> JwtSecretAuthenticator:
    """Build a :class:`JwtSecretAuthenticator` reading ``app``'s secret cache and
    install it as ``app.router``'s authenticator; return it.

    The drivers' ``module_jwt`` call this, then add the ``on_rotation`` callback
    that fetches each of :meth:`JwtSecretAuthenticator.rotated` and hands it to
    :meth:`JwtSecretAuthenticator.update` (the only step that waits for I/O).
    """

    auth = JwtSecretAuthenticator(secrets, lookup=lambda n: _cached(app, n), clock=clock, **policy)
    app.router.set_authenticator(auth)
    return auth

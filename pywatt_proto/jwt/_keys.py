"""HS256 keys: checking, naming (``kid``), sets for rotation, and key sources (spec/jwt.md §3).

Keys shorter than :data:`MIN_KEY_BYTES` (RFC 7518 §3.2) and material that looks like an
asymmetric key (RFC 8725 §3.2: the RS256 -> HS256 confusion) are refused when configured,
not when a token arrives. :class:`JwtSecretKeys` turns named secret values into a key set
that follows rotation.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ._b64 import b64url_decode
from ._errors import JwtKeyError

#: RFC 7518 §3.2: an HS256 key must be at least as long as the SHA-256 output.
MIN_KEY_BYTES = 32

# Markers of asymmetric key material (RFC 7468 PEM labels, OpenSSH public keys).
_ASYMMETRIC_MARKERS = (
    b"-----BEGIN",
    b"ssh-rsa ",
    b"ssh-ed25519 ",
    b"ssh-dss ",
    b"ecdsa-sha2-",
)

KeyEncoding = Literal["raw", "base64url", "hex"]


def _check_secret(secret: bytes) -> None:
    # Anywhere, not just at the start: tools put text before the block or the key type.
    if any(marker in secret for marker in _ASYMMETRIC_MARKERS):
        raise JwtKeyError(
            "algorithm",
            "key looks like an asymmetric (PEM/OpenSSH) key; HS256 needs a shared secret "
            "(RFC 8725 §3.2)",
        )
    if len(secret) < MIN_KEY_BYTES:
        raise JwtKeyError(
            "size",
            f"HS256 key is {len(secret)} bytes; at least {MIN_KEY_BYTES} are required "
            "(RFC 7518 §3.2)",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtKey:
    """One HS256 secret, optionally named by a ``kid`` (RFC 7515 §4.1.4).

    Building one checks the secret: raises :class:`JwtKeyError` with reason
    ``size`` when it is shorter than 32 bytes and ``algorithm`` when it is
    asymmetric key material.  The secret is left out of ``repr``.
    """

    secret: bytes = field(repr=False)
    kid: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes):
            raise TypeError("JwtKey.secret must be bytes")
        if self.kid is not None and not isinstance(self.kid, str):
            raise TypeError("JwtKey.kid must be a str or None")
        _check_secret(self.secret)


#: What key arguments accept: a :class:`JwtKey`, or raw secret bytes / text (UTF-8).
KeyInput: TypeAlias = "JwtKey | bytes | bytearray | str"


def to_key(key: KeyInput) -> JwtKey:
    """Return ``key`` as a checked :class:`JwtKey` (raises :class:`JwtKeyError`)."""
    if isinstance(key, JwtKey):
        return key
    if isinstance(key, str):
        return JwtKey(secret=key.encode("utf-8"))
    if isinstance(key, bytes | bytearray):
        return JwtKey(secret=bytes(key))
    raise TypeError(f"unsupported key type {type(key).__name__}")


def coerce_keys(keys: KeyInput | Iterable[KeyInput]) -> tuple[JwtKey, ...]:
    """Return ``keys`` (one key or several, in order) as checked :class:`JwtKey` objects.

    Raises :class:`JwtKeyError` for a refused key, :class:`ValueError` for an
    empty set or two keys with the same ``kid``, :class:`TypeError` for other types.
    """
    if isinstance(keys, JwtKey | bytes | bytearray | str):
        result: tuple[JwtKey, ...] = (to_key(keys),)
    else:
        result = tuple(to_key(k) for k in keys)
    if not result:
        raise ValueError("at least one key is required")
    kids = [k.kid for k in result if k.kid is not None]
    if len(kids) != len(set(kids)):
        raise ValueError("two keys share a kid")
    return result


def key_from_text(
    value: str | bytes, *, kid: str | None = None, encoding: KeyEncoding = "raw"
) -> JwtKey:
    """Build a key from a secret's text as stored in an env var or secret store.

    ``encoding`` says how the text holds the bytes: ``raw`` (the UTF-8 bytes
    themselves, what the Rust SDK and the seed Python SDK use), ``base64url``
    (strict, unpadded; a JWK ``k`` value) or ``hex``.  Returns a checked
    :class:`JwtKey`; raises :class:`JwtKeyError` if the key is refused and
    :class:`ValueError` if the text is not valid in ``encoding``.
    """
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if encoding == "raw":
        secret = raw
    elif encoding == "base64url":
        secret = b64url_decode(raw.strip())
    elif encoding == "hex":
        try:
            secret = binascii.unhexlify(raw.strip())
        except binascii.Error as exc:
            raise ValueError(f"key is not hex: {exc}") from None
    else:
        raise ValueError(f"unknown key encoding {encoding!r}")
    return JwtKey(secret=secret, kid=kid)


def key_from_env(
    name: str,
    *,
    kid: str | None = None,
    encoding: KeyEncoding = "raw",
    environ: Mapping[str, str] | None = None,
) -> JwtKey:
    """Read a key from environment variable ``name`` (``environ`` defaults to ``os.environ``).

    Returns a checked :class:`JwtKey`; raises :class:`LookupError` when the
    variable is unset or empty, :class:`JwtKeyError` when the key is refused and
    :class:`ValueError` when it is not valid in ``encoding``.
    """
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value:
        raise LookupError(f"environment variable {name} is not set")
    return key_from_text(value, kid=kid, encoding=encoding)


class JwtSecretKeys:
    """Keys kept in named secrets, feeding a key set that follows rotation.

    ``names`` maps each secret name to the ``kid`` its key gets (``None``: no
    kid; a list of names gives every key no kid).  Call :meth:`update` with each
    secret's value as it arrives (at start-up and on every rotation); after the
    first value of every name is known, each update calls ``on_change`` with
    the new key tuple -- pass ``validator.set_keys``.  With
    ``keep_previous=True`` the value a rotation replaces stays in the set (after
    the current keys) so tokens signed just before the rotation still validate
    until :meth:`retire_previous` is called.  This object does no I/O: the
    module runtime fetches the secrets and calls it.  Raises :class:`ValueError`
    for no names or two names with the same ``kid``.
    """

    __slots__ = ("_current", "_encoding", "_names", "_on_change", "_previous", "keep_previous")

    def __init__(
        self,
        names: Mapping[str, str | None] | Iterable[str],
        *,
        on_change: Callable[[tuple[JwtKey, ...]], object],
        encoding: KeyEncoding = "raw",
        keep_previous: bool = True,
    ) -> None:
        mapping = dict(names) if isinstance(names, Mapping) else dict.fromkeys(names, None)
        if not mapping:
            raise ValueError("at least one secret name is required")
        kids = [kid for kid in mapping.values() if kid is not None]
        if len(kids) != len(set(kids)):
            raise ValueError("two secrets share a kid")
        self._names: dict[str, str | None] = mapping
        self._encoding: KeyEncoding = encoding
        self._on_change = on_change
        self._current: dict[str, JwtKey] = {}
        self._previous: dict[str, JwtKey] = {}
        self.keep_previous = keep_previous

    @property
    def names(self) -> tuple[str, ...]:
        """The secret names this source follows, in key order."""
        return tuple(self._names)

    @property
    def ready(self) -> bool:
        """True once every secret has a value."""
        return len(self._current) == len(self._names)

    def keys(self) -> tuple[JwtKey, ...]:
        """Return the key set: current keys in name order, then kept previous keys.

        Raises :class:`LookupError` while some secret has no value yet.
        """
        if not self.ready:
            missing = [n for n in self._names if n not in self._current]
            raise LookupError(f"no value yet for secret(s) {', '.join(missing)}")
        current = tuple(self._current[n] for n in self._names)
        previous = tuple(
            k for n, k in self._previous.items() if all(k.secret != c.secret for c in current)
        )
        if any(k.kid is not None for k in previous):
            # A previous key keeps its kid only if no current key uses it, so the
            # set stays unambiguous; otherwise it is tried by order, without kid.
            used = {k.kid for k in current}
            previous = tuple(JwtKey(secret=k.secret) if k.kid in used else k for k in previous)
        return current + previous

    def update(self, name: str, value: str | bytes) -> bool:
        """Record the value of secret ``name``; returns True if the key set changed.

        When every secret has a value, calls ``on_change(self.keys())``.
        Raises :class:`KeyError` for a name this source does not follow,
        :class:`JwtKeyError` / :class:`ValueError` for a refused value (the
        previous key set stays in force).
        """
        if name not in self._names:
            raise KeyError(name)
        key = key_from_text(value, kid=self._names[name], encoding=self._encoding)
        old = self._current.get(name)
        if old is not None and old.secret == key.secret:
            return False
        self._current[name] = key
        if old is not None and self.keep_previous:
            self._previous[name] = old
        if self.ready:
            self._on_change(self.keys())
        return True

    def retire_previous(self) -> None:
        """Drop the keys kept from before the last rotations and publish the set."""
        if self._previous:
            self._previous.clear()
            if self.ready:
                self._on_change(self.keys())

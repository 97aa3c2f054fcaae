"""HS256 JWS Compact Serialization validation (RFC 7515, 7518, 7519, 8725).

Cheapest and least trusting first (spec/jwt.md §2): size, shape, header (``alg`` exactly
``HS256``: the configuration chooses the algorithm, never the token), signature, and only
then the payload is decoded and its claims checked. The validator is immutable apart from
its key set, which :meth:`JwtValidator.set_keys` replaces in one attribute store, so a
rotation can happen while other threads validate.
"""

from __future__ import annotations

import binascii
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._b64 import ALPHABET, decode_segment
from ._claims import at_or_after, check_types
from ._errors import JwtError
from ._hmac import HmacSha256
from ._keys import JwtKey, KeyInput, coerce_keys
from ._strict_json import parse_object

# The defaults and why each (spec/jwt.md §7):
#: Bytes: tokens travel in one header line, which common servers cap near 8 KiB.
DEFAULT_MAX_TOKEN_SIZE = 8 * 1024
#: JSON nesting levels (the top-level object is level 1): serde_json's own limit.
DEFAULT_MAX_DEPTH = 128
#: Seconds of clock skew tolerated for ``exp`` and ``nbf`` (RFC 7519 §4.1.4).
DEFAULT_LEEWAY = 30.0

_TOKEN_CHARS = ALPHABET + b"."
_TO_URL = bytes.maketrans(b"+/", b"-_")
_HEADER_CACHE_LIMIT = 256
# Header parameters this implementation understands and checks.  Anything
# named in ``crit`` is refused (we implement no extension).
_REGISTERED_HEADERS = frozenset(
    {"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnverifiedToken:
    """A token's decoded parts, *not* verified: never trust these claims."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signature: bytes


def split_token(token: str | bytes, max_size: int) -> tuple[bytes, bytes, bytes]:
    """Split a compact JWS into its three ASCII segments (header, payload, signature).

    Raises :class:`JwtError`: ``size`` if longer than ``max_size``, ``malformed``
    for any character outside base64url and ``.`` or a segment count other than 3.
    """
    if len(token) > max_size:
        raise JwtError("size", f"token is longer than {max_size} bytes")
    if isinstance(token, str):
        if not token.isascii():
            raise JwtError("malformed", "token contains non-ASCII characters")
        raw = token.encode("ascii")
    elif isinstance(token, bytes | bytearray | memoryview):
        raw = bytes(token)
    else:
        raise TypeError("token must be str or bytes")
    if raw.translate(None, _TOKEN_CHARS):
        raise JwtError("malformed", "token contains characters outside base64url")
    parts = raw.split(b".")
    if len(parts) != 3:
        kind = "a JWE (five segments) is not supported" if len(parts) == 5 else ""
        raise JwtError("malformed", kind or "a JWS compact token has exactly three segments")
    return parts[0], parts[1], parts[2]


def _segment(seg: bytes, what: str) -> bytes:
    try:
        return decode_segment(seg)
    except (ValueError, binascii.Error) as exc:
        raise JwtError("malformed", f"{what} segment: {exc}") from None


def parse_header(seg: bytes, max_depth: int, expected_typ: str | None) -> dict[str, Any]:
    """Decode and check a protected header segment.

    Returns the header object.  Raises :class:`JwtError`: ``malformed`` (not
    canonical base64url / strict JSON object), ``size`` (too deep),
    ``algorithm`` (``alg`` absent or not ``HS256``), ``header`` (``crit``,
    ``zip``, a ``b64`` other than true, ``kid``/``typ``/``cty`` not strings,
    ``typ`` not ``expected_typ``).
    """
    header = parse_object(_segment(seg, "header"), max_depth, "header")
    alg = header.get("alg")
    if alg != "HS256":
        # RFC 8725 §3.1: the algorithm is fixed by configuration; "none",
        # HS384, RS256 ... are all refused, as is a missing alg.
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else type(alg).__name__
        raise JwtError("algorithm", f"algorithm {shown!r} is not accepted (only HS256)")
    if "crit" in header:
        # RFC 7515 §4.1.11: recipients MUST reject a JWS whose crit lists an
        # extension they do not understand; we understand none.
        raise JwtError("header", "crit extensions are not supported")
    if "zip" in header:
        raise JwtError("header", "zip is not defined for JWS")
    if "b64" in header and header["b64"] is not True:
        raise JwtError("header", "unencoded payloads (RFC 7797) are not supported")
    for name in ("kid", "typ", "cty"):
        if name in header and type(header[name]) is not str:
            raise JwtError("header", f"header parameter {name} is not a string")
    if expected_typ is not None:
        typ = header.get("typ")
        if typ is None or _media_type(typ) != _media_type(expected_typ):
            raise JwtError("header", "unexpected typ header")
    if "cty" in header and _media_type(header["cty"]) == "jwt":
        raise JwtError("header", "nested JWTs are not supported")
    return header


def _media_type(value: str) -> str:
    # RFC 7515 §4.1.9: "application/" may be omitted; compare case-insensitively.
    low = value.lower()
    return low[12:] if low.startswith("application/") else low


def decode_unverified(
    token: str | bytes,
    *,
    max_size: int = DEFAULT_MAX_TOKEN_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> UnverifiedToken:
    """Decode a token WITHOUT checking anything but its structure (for inspection only).

    The header is not checked either (an ``alg: none`` token decodes), so the
    result must never be trusted.  Returns an :class:`UnverifiedToken`.  Raises
    :class:`JwtError` with reason ``size`` or ``malformed`` when the token is not
    three canonical base64url segments holding strict JSON objects.
    """
    h, p, s = split_token(token, max_size)
    header = parse_object(_segment(h, "header"), max_depth, "header")
    signature = _segment(s, "signature")
    claims = parse_object(_segment(p, "payload"), max_depth, "claims")
    return UnverifiedToken(header=header, claims=claims, signature=signature)


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[JwtKey, ...]
    macs: tuple[HmacSha256, ...]
    by_kid: dict[str, HmacSha256]


def _build_keyset(keys: KeyInput | Iterable[KeyInput]) -> _KeySet:
    checked = coerce_keys(keys)
    macs = tuple(HmacSha256(k.secret) for k in checked)
    by_kid = {k.kid: m for k, m in zip(checked, macs, strict=True) if k.kid is not None}
    return _KeySet(keys=checked, macs=macs, by_kid=by_kid)


def _as_set(value: str | Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    result = frozenset((value,)) if isinstance(value, str) else frozenset(value)
    if not result or not all(isinstance(v, str) for v in result):
        raise ValueError(f"{what} must be a string or a non-empty iterable of strings")
    return result


class JwtValidator:
    """Validates HS256 tokens against a fixed policy and a replaceable key set.

    Args:
        keys: one key or several (:class:`JwtKey`, bytes, or text used as its
            UTF-8 bytes).  Keys with a ``kid`` are chosen by the token's ``kid``;
            otherwise every key is tried in order.
        leeway: seconds tolerated on ``exp``/``nbf`` (default :data:`DEFAULT_LEEWAY`).
        audience: accepted audience(s).  A token with ``aud`` is refused unless
            one of its values is accepted; when an audience is configured a
            token without ``aud`` is refused (``missing_claim``).
        issuer: accepted issuer(s); when set, ``iss`` must be present and match.
        required: claim names that must be present.
        max_size: maximum token length in bytes (default :data:`DEFAULT_MAX_TOKEN_SIZE`).
        max_depth: maximum JSON nesting (default :data:`DEFAULT_MAX_DEPTH`).
        typ: if set, the header's ``typ`` must name this media type
            (RFC 8725 §3.11 explicit typing), e.g. ``"JWT"`` or ``"at+jwt"``.

    Raises :class:`JwtKeyError` (reason ``size`` / ``algorithm``) for a refused
    key and :class:`ValueError` for an invalid policy.
    """

    __slots__ = (
        "_audience",
        "_header_cache",
        "_issuer",
        "_keyset",
        "_leeway",
        "_max_depth",
        "_max_size",
        "_required",
        "_typ",
    )

    def __init__(
        self,
        keys: KeyInput | Iterable[KeyInput],
        *,
        leeway: float = DEFAULT_LEEWAY,
        audience: str | Iterable[str] | None = None,
        issuer: str | Iterable[str] | None = None,
        required: Iterable[str] = (),
        max_size: int = DEFAULT_MAX_TOKEN_SIZE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        typ: str | None = None,
    ) -> None:
        if type(leeway) not in (int, float) or not math.isfinite(leeway) or leeway < 0:
            raise ValueError("leeway must be a finite, non-negative number of seconds")
        if max_size < 1 or max_depth < 1:
            raise ValueError("max_size and max_depth must be positive")
        self._keyset = _build_keyset(keys)
        self._leeway = leeway
        self._audience = _as_set(audience, "audience")
        self._issuer = _as_set(issuer, "issuer")
        required_set = frozenset(required)
        if not all(isinstance(r, str) for r in required_set):
            raise ValueError("required claim names must be strings")
        if self._audience is not None:
            required_set |= {"aud"}
        if self._issuer is not None:
            required_set |= {"iss"}
        self._required = tuple(sorted(required_set))
        self._max_size = max_size
        self._max_depth = max_depth
        self._typ = typ
        self._header_cache: dict[bytes, str | None] = {}

    @property
    def keys(self) -> tuple[JwtKey, ...]:
        """The current key set, in trial order."""
        return self._keyset.keys

    @property
    def leeway(self) -> float:
        """Seconds of leeway applied to ``exp`` and ``nbf``."""
        return self._leeway

    @property
    def max_size(self) -> int:
        """Maximum accepted token length in bytes."""
        return self._max_size

    def set_keys(self, keys: KeyInput | Iterable[KeyInput]) -> None:
        """Replace the whole key set (for rotation), atomically.

        Returns None.  Raises :class:`JwtKeyError` / :class:`ValueError` /
        :class:`TypeError` for a refused set, in which case the old set stays.
        """
        self._keyset = _build_keyset(keys)

    def _kid(self, seg: bytes) -> str | None:
        try:
            return self._header_cache[seg]
        except KeyError:
            pass
        header = parse_header(seg, self._max_depth, self._typ)
        kid = header.get("kid")
        if len(self._header_cache) >= _HEADER_CACHE_LIMIT:
            self._header_cache.clear()
        self._header_cache[seg] = kid
        return kid

    def validate(self, token: str | bytes, now: float) -> dict[str, Any]:
        """Check ``token`` at time ``now`` (seconds since the epoch).

        Returns the verified claims as a new dict.  Raises :class:`JwtError`
        whose ``reason`` says why the token is refused (see :data:`REASONS`);
        the validator is unchanged either way.  Raises :class:`TypeError` /
        :class:`ValueError` for a ``now`` that is not a finite int or float.
        """
        if type(now) is not float and type(now) is not int:
            raise TypeError("now must be an int or float number of seconds")
        if type(now) is float and not math.isfinite(now):
            # A NaN compares false with every exp, so it would accept expired tokens.
            raise ValueError("now must be a finite number of seconds")
        # 1-2: size and shape.
        h, p, s = split_token(token, self._max_size)
        # 3: header (cached by its exact bytes).
        kid = self._kid(h)
        # 4: signature over the exact ASCII bytes of "header.payload".
        keyset = self._keyset
        signing_input = b"%s.%s" % (h, p)
        template = keyset.by_kid.get(kid) if kid is not None else None
        for mac in (template,) if template is not None else keyset.macs:
            expected = binascii.b2a_base64(mac.mac(signing_input), newline=False)
            if hmac.compare_digest(expected[:-1].translate(_TO_URL), s):
                break
        else:
            raise JwtError("signature", "signature does not match")
        # 5: only now is the payload decoded and parsed.
        claims = parse_object(_segment(p, "payload"), self._max_depth, "claims")
        # 6: claims.
        check_types(claims)
        for name in self._required:
            if name not in claims:
                raise JwtError("missing_claim", f"required claim {name} is missing")
        leeway = self._leeway
        if "exp" in claims and at_or_after(now, claims["exp"], leeway):
            # RFC 7519 §4.1.4: the token MUST NOT be accepted on or after exp.
            raise JwtError("expired", "token has expired")
        if "nbf" in claims and not at_or_after(now, claims["nbf"], -leeway):
            # RFC 7519 §4.1.5: MUST NOT be accepted before nbf (at nbf is fine).
            raise JwtError("not_yet_valid", "token is not valid yet")
        if "aud" in claims:
            aud = claims["aud"]
            accepted = self._audience
            if accepted is None:
                # RFC 7519 §4.1.3: if the principal does not identify itself with
                # a value in aud, the JWT MUST be rejected.
                raise JwtError("audience", "token names an audience; none is configured")
            if (aud not in accepted) if type(aud) is str else accepted.isdisjoint(aud):
                raise JwtError("audience", "token audience is not accepted")
        if self._issuer is not None and claims["iss"] not in self._issuer:
            raise JwtError("issuer", "token issuer is not accepted")
        return claims

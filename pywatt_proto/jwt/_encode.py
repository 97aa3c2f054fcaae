"""Signing: ``encode`` for one-off use and :class:`JwtSigner` for hot paths.

The header is fixed per signer (``{"alg":"HS256","typ":"JWT"}`` plus ``kid``
and any extra parameters) and encoded once; the HMAC key schedule is computed
once and copied per token.  Claims are serialised as compact JSON (no
whitespace, UTF-8, ``NaN`` refused) and their registered claims are type-checked
so a signer never produces a token its own validator would call malformed.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from ._b64 import b64url_encode
from ._claims import check_types
from ._errors import JwtError
from ._hmac import HmacSha256
from ._keys import JwtKey, KeyInput, to_key
from ._validator import DEFAULT_MAX_DEPTH, parse_header

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_TO_URL = bytes.maketrans(b"+/", b"-_")


def _header_segment(kid: str | None, headers: Mapping[str, Any] | None) -> bytes:
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    if headers:
        if not all(isinstance(k, str) for k in headers):
            raise TypeError("header parameter names must be strings")
        if headers.get("alg", "HS256") != "HS256":
            raise ValueError("only alg HS256 can be produced")
        for bad in ("crit", "zip", "b64"):
            if bad in headers:
                raise ValueError(f"header parameter {bad} is not supported")
        header.update(headers)
        header = {k: v for k, v in header.items() if v is not None}
        header["alg"] = "HS256"
    segment = b64url_encode(_ENCODER.encode(header).encode("utf-8"))
    try:  # what every validator checks (kid/typ/cty types, nested cty, depth)
        parse_header(segment, DEFAULT_MAX_DEPTH, None)
    except JwtError as exc:
        raise ValueError(f"header refused by the validator: {exc.message}") from None
    return segment


class JwtSigner:
    """Signs claim sets with one HS256 key and a fixed header.

    ``headers`` adds or overrides header parameters (a value of None removes
    one, e.g. ``{"typ": None}``); ``alg`` is always ``HS256``.  Raises
    :class:`JwtKeyError` for a refused key, :class:`ValueError` for a header
    that asks for another algorithm or an unsupported extension, or that a validator
    would refuse (``kid``/``typ``/``cty`` not strings, ``cty`` ``JWT``).
    """

    __slots__ = ("_header", "_mac")

    def __init__(self, key: KeyInput, *, headers: Mapping[str, Any] | None = None) -> None:
        checked = to_key(key)
        self._header = _header_segment(checked.kid, headers) + b"."
        self._mac = HmacSha256(checked.secret)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Return the compact JWS (``header.payload.signature``) for ``claims``.

        Raises :class:`TypeError` for non-string claim names or values JSON
        cannot hold, :class:`ValueError` for ``NaN``/infinite numbers and
        :class:`JwtError` (``malformed``) for registered claims of the wrong type.
        """
        if type(claims) is not dict:
            if not isinstance(claims, Mapping):
                raise TypeError("claims must be a mapping")
            claims = dict(claims)
        for name in claims:
            if type(name) is not str:
                raise TypeError("claim names must be strings")
        check_types(claims)
        payload = _ENCODER.encode(claims).encode("utf-8")
        signing_input = self._header + b64url_encode(payload)
        sig = binascii.b2a_base64(self._mac.mac(signing_input), newline=False)
        sig = sig[:-1].translate(_TO_URL)
        return (signing_input + b"." + sig).decode("ascii")


_DEFAULT_SIGNERS: dict[JwtKey | bytes | str, JwtSigner] = {}
_SIGNER_CACHE_LIMIT = 32


def encode(
    claims: Mapping[str, Any], key: KeyInput, *, headers: Mapping[str, Any] | None = None
) -> str:
    """Return an HS256 compact JWS for ``claims`` signed with ``key``.

    Equivalent to ``JwtSigner(key, headers=headers).sign(claims)``; signers for
    the default header are cached for a few keys.  Raises what
    :class:`JwtSigner` and :meth:`JwtSigner.sign` raise.
    """
    if headers:
        return JwtSigner(key, headers=headers).sign(claims)
    cache_key = bytes(key) if isinstance(key, bytearray) else key
    signer = _DEFAULT_SIGNERS.get(cache_key)
    if signer is None:
        signer = JwtSigner(key)  # checks the key; refused keys are never cached
        if len(_DEFAULT_SIGNERS) >= _SIGNER_CACHE_LIMIT:
            _DEFAULT_SIGNERS.clear()
        _DEFAULT_SIGNERS[cache_key] = signer
    return signer.sign(claims)

"""HS256 JSON Web Tokens, hand-rolled and strict (RFC 7515, 7518, 7519, 8725).

Pure: no clock is read here -- :meth:`JwtValidator.validate` takes ``now``.
``python -m pywatt_proto.jwt`` is a small command line (encode / decode / verify).
See ``spec/jwt.md`` for the rules and the reasons a token can be refused.

This file only re-exports.
"""

from ._auth import (
    CLAIMS_ENVIRON_KEY,
    JwtAuthenticator,
    PublicPaths,
    auth_error_response,
    parse_bearer,
)
from ._b64 import b64url_decode, b64url_encode
from ._encode import JwtSigner, encode
from ._errors import REASONS, JwtError, JwtKeyError, JwtReason
from ._keys import (
    MIN_KEY_BYTES,
    JwtKey,
    JwtSecretKeys,
    KeyEncoding,
    KeyInput,
    key_from_env,
    key_from_text,
)
from ._secret_auth import JwtSecretAuthenticator
from ._validator import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_TOKEN_SIZE,
    JwtValidator,
    UnverifiedToken,
    decode_unverified,
)

__all__ = [
    "CLAIMS_ENVIRON_KEY",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_TOKEN_SIZE",
    "MIN_KEY_BYTES",
    "REASONS",
    "JwtAuthenticator",
    "JwtError",
    "JwtKey",
    "JwtKeyError",
    "JwtReason",
    "JwtSecretAuthenticator",
    "JwtSecretKeys",
    "JwtSigner",
    "JwtValidator",
    "KeyEncoding",
    "KeyInput",
    "PublicPaths",
    "UnverifiedToken",
    "auth_error_response",
    "b64url_decode",
    "b64url_encode",
    "decode_unverified",
    "encode",
    "key_from_env",
    "key_from_text",
    "parse_bearer",
]

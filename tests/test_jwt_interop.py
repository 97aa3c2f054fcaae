"""Interoperability both ways with PyJWT and jwcrypto (independent implementations)."""

from __future__ import annotations

import json
import time

import jwt as pyjwt
import pytest
from jwcrypto import jwk  # type: ignore[import-untyped]
from jwcrypto import jwt as jwcrypto_jwt
from test_jwt_helpers import KEY, b64

from pywatt_proto.jwt import JwtError, JwtKey, JwtValidator, encode

NOW = int(time.time())  # jwcrypto checks exp/nbf against the real clock
CLAIMS = {
    "sub": "user-42",
    "iss": "https://issuer.example",
    "aud": ["svc", "other"],
    "exp": NOW + 600,
    "nbf": NOW - 5,
    "iat": NOW,
    "jti": "abc",
    "name": "Zoë ☃",
    "roles": ["admin", "dev"],
    "n": 1.5,
}


def validator() -> JwtValidator:
    return JwtValidator(KEY, audience="svc", issuer="https://issuer.example", leeway=0)


def jw_key(secret: bytes = KEY) -> jwk.JWK:
    return jwk.JWK(kty="oct", k=b64(secret))


def test_pyjwt_token_validates_here() -> None:
    token = pyjwt.encode(CLAIMS, KEY, algorithm="HS256", headers={"kid": "k1"})
    assert validator().validate(token, NOW) == CLAIMS
    assert JwtValidator(JwtKey(secret=KEY, kid="k1"), audience="svc").validate(token, NOW) == CLAIMS


def test_our_token_validates_in_pyjwt() -> None:
    token = encode(CLAIMS, KEY)
    got = pyjwt.decode(
        token, KEY, algorithms=["HS256"], audience="svc", issuer="https://issuer.example"
    )
    assert got == CLAIMS
    assert pyjwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


def test_pyjwt_tokens_signed_with_other_algorithms_are_refused() -> None:
    for alg in ("HS384", "HS512"):
        token = pyjwt.encode({"a": 1}, KEY + KEY, algorithm=alg)
        with pytest.raises(JwtError) as info:
            JwtValidator(KEY + KEY).validate(token, NOW)
        assert info.value.reason == "algorithm"


def test_pyjwt_wrong_key_is_a_signature_failure() -> None:
    token = pyjwt.encode(CLAIMS, b"w" * 32, algorithm="HS256")
    with pytest.raises(JwtError) as info:
        validator().validate(token, NOW)
    assert info.value.reason == "signature"


def test_jwcrypto_token_validates_here() -> None:
    token = jwcrypto_jwt.JWT(header={"alg": "HS256", "kid": "k"}, claims=CLAIMS)
    token.make_signed_token(jw_key())
    assert validator().validate(token.serialize(), NOW) == CLAIMS


def test_our_token_validates_in_jwcrypto() -> None:
    token = encode(CLAIMS, JwtKey(secret=KEY, kid="k"))
    checked = jwcrypto_jwt.JWT(key=jw_key(), jwt=token, algs=["HS256"])
    assert json.loads(checked.claims) == CLAIMS
    assert json.loads(checked.header) == {"alg": "HS256", "typ": "JWT", "kid": "k"}


def test_jwcrypto_rejects_our_token_under_another_key() -> None:
    token = encode(CLAIMS, KEY)
    with pytest.raises(Exception):  # noqa: B017 - jwcrypto's own error type
        jwcrypto_jwt.JWT(key=jw_key(b"q" * 32), jwt=token, algs=["HS256"])


@pytest.mark.parametrize("length", [32, 63, 64, 65, 100, 1000])
def test_tokens_match_pyjwt_byte_for_byte_for_any_key_length(length: int) -> None:
    key = bytes(range(256)) * 4
    key = key[:length]
    claims = {"sub": "x", "n": length}
    assert encode(claims, key) == pyjwt.encode(claims, key, algorithm="HS256")
    assert JwtValidator(key).validate(pyjwt.encode(claims, key, algorithm="HS256"), NOW) == claims

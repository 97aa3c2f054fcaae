"""pywatt_proto.jwt core: RFC examples, every refusal reason, strictness, keys, rotation."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from test_jwt_helpers import HS256, KEY, NOW, OTHER_KEY, b64, raw_token

from pywatt_proto.jwt import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_TOKEN_SIZE,
    MIN_KEY_BYTES,
    REASONS,
    JwtError,
    JwtKey,
    JwtKeyError,
    JwtSecretKeys,
    JwtSigner,
    JwtValidator,
    b64url_decode,
    b64url_encode,
    decode_unverified,
    encode,
    key_from_env,
    key_from_text,
)

# RFC 7515 Appendix A.1 (the same token is RFC 7519 §3.1's example JWT).
RFC_JWK_K = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
RFC_TOKEN = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
RFC_EXP = 1300819380
# RFC 7519 §6.1: an Unsecured JWT ("alg":"none") with the same claims.
RFC_UNSECURED = (
    "eyJhbGciOiJub25lIn0"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
)
RFC_CLAIMS = {"iss": "joe", "exp": RFC_EXP, "http://example.com/is_root": True}


def rfc_validator(**kw: Any) -> JwtValidator:
    kw.setdefault("leeway", 0)
    return JwtValidator(key_from_text(RFC_JWK_K, encoding="base64url"), **kw)


def reason(validator: JwtValidator, token: str | bytes, now: float = NOW) -> str:
    with pytest.raises(JwtError) as info:
        validator.validate(token, now)
    return info.value.reason


def v(**kw: Any) -> JwtValidator:
    return JwtValidator(KEY, **kw)


# ---------------------------------------------------------------- RFC examples


def test_rfc7515_a1_and_rfc7519_3_1_example_validates() -> None:
    assert rfc_validator().validate(RFC_TOKEN, RFC_EXP - 1) == RFC_CLAIMS
    assert rfc_validator(issuer="joe").validate(RFC_TOKEN, RFC_EXP - 0.5) == RFC_CLAIMS


def test_rfc_example_header_bytes_are_kept_verbatim() -> None:
    parts = decode_unverified(RFC_TOKEN)
    assert parts.header == {"typ": "JWT", "alg": "HS256"}
    assert parts.claims == RFC_CLAIMS
    assert b64url_decode(RFC_TOKEN.split(".")[0]) == b'{"typ":"JWT",\r\n "alg":"HS256"}'
    assert b64url_encode(parts.signature) == RFC_TOKEN.split(".")[2].encode()


def test_rfc_example_expires_exactly_at_exp() -> None:
    assert reason(rfc_validator(), RFC_TOKEN, RFC_EXP) == "expired"
    # within the leeway it is still accepted
    assert rfc_validator(leeway=60).validate(RFC_TOKEN, RFC_EXP + 59.5) == RFC_CLAIMS
    assert reason(rfc_validator(leeway=60), RFC_TOKEN, RFC_EXP + 60) == "expired"


def test_rfc_example_with_wrong_key_is_a_signature_failure() -> None:
    assert reason(v(), RFC_TOKEN, RFC_EXP - 1) == "signature"


def test_rfc7519_unsecured_jwt_is_refused() -> None:
    assert reason(rfc_validator(), RFC_UNSECURED, RFC_EXP - 1) == "algorithm"
    # ... but can be inspected (clearly unverified)
    parts = decode_unverified(RFC_UNSECURED)
    assert parts.header == {"alg": "none"}
    assert parts.claims == RFC_CLAIMS
    assert parts.signature == b""


# ---------------------------------------------------------------- round trip & defaults


def test_encode_then_validate_round_trip() -> None:
    claims = {
        "sub": "u1",
        "iss": "me",
        "aud": ["a", "b"],
        "exp": NOW + 60,
        "iat": NOW,
        "x": {"y": [1, 2.5, None]},
    }
    token = encode(claims, KEY)
    assert v(audience="b", issuer="me").validate(token, NOW) == claims
    assert decode_unverified(token).header == {"alg": "HS256", "typ": "JWT"}


def test_signer_headers_and_kid() -> None:
    signer = JwtSigner(JwtKey(secret=KEY, kid="k1"), headers={"typ": None, "cty": "x"})
    token = signer.sign({"a": 1})
    assert decode_unverified(token).header == {"alg": "HS256", "kid": "k1", "cty": "x"}
    assert encode({"a": 1}, KEY, headers={"kid": "z"}).count(".") == 2
    with pytest.raises(ValueError):
        JwtSigner(KEY, headers={"alg": "HS512"})
    with pytest.raises(ValueError):
        JwtSigner(KEY, headers={"crit": ["exp"]})
    # Before: these were signed, and every validator refused the token (reason header).
    for bad in ({"kid": 5}, {"typ": ["JWT"]}, {"cty": 1}, {"cty": "application/JWT"}):
        with pytest.raises(ValueError, match="header"):
            JwtSigner(KEY, headers=bad)


def test_encode_refuses_claims_it_would_not_accept() -> None:
    with pytest.raises(JwtError) as info:
        encode({"exp": "tomorrow"}, KEY)
    assert info.value.reason == "malformed"
    with pytest.raises(TypeError):
        encode({1: "x"}, KEY)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        encode({"x": float("nan")}, KEY)


def test_documented_defaults() -> None:
    assert DEFAULT_MAX_TOKEN_SIZE == 8192
    assert DEFAULT_MAX_DEPTH == 128
    assert DEFAULT_LEEWAY == 30
    assert MIN_KEY_BYTES == 32
    assert v().leeway == DEFAULT_LEEWAY
    assert v().max_size == DEFAULT_MAX_TOKEN_SIZE


# ---------------------------------------------------------------- each reason


def test_reason_signature() -> None:
    token = encode({"a": 1}, OTHER_KEY)
    assert reason(v(), token) == "signature"
    h, p, s = encode({"a": 1}, KEY).split(".")
    assert reason(v(), f"{h}.{p}.") == "signature"
    assert reason(v(), f"{h}.{p}.{s[:-1]}") == "signature"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "eyJhbGciOiJIUzI1NiJ9.e30.x y",
        "eyJhbGciOiJIUzI1NiJ9.e30=.xx",
        "eyJhbGciOiJIUzI1NiJ9+.e30.xx",
        "é.e30.xx",
        "eyJhbGciOiJIUzI1NiJ9",
    ],
)
def test_reason_malformed_shapes(token: str) -> None:
    assert reason(v(), token) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b"null",
        b'"x"',
        b"{",
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":1e400}',
        b'{"a":"\\ud800"}',
        b'{"a":"\\udc00\\ud800"}',
        b'{"a":"\\ud800x"}',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xff"}',
        b'{"a":1} x',
        b"",
        b'{"exp":"1"}',
        b'{"exp":true}',
        b'{"nbf":null}',
        b'{"iat":[1]}',
        b'{"iss":1}',
        b'{"sub":false}',
        b'{"jti":{}}',
        b'{"aud":1}',
        b'{"aud":["a",1]}',
    ],
)
def test_reason_malformed_payloads(payload: bytes) -> None:
    assert reason(v(), raw_token(HS256, payload)) == "malformed"


def test_valid_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    claims = v().validate(raw_token(HS256, b'{"a":"\\ud83d\\ude00","b":"\\\\ud800"}'), NOW)
    assert claims == {"a": "\U0001f600", "b": "\\ud800"}


def test_json_whitespace_is_allowed_around_and_inside() -> None:
    for payload in (b' {"a":1}', b'{"a":1}\r\n', b'\t{ "a" : 1 }\n'):
        assert v().validate(raw_token(HS256, payload), NOW) == {"a": 1}
    assert reason(v(), raw_token(HS256, b'\x0c{"a":1}')) == "malformed"  # form feed is not JSON


def test_malformed_header_json() -> None:
    assert reason(v(), raw_token(b'{"alg":"HS256","alg":"HS256"}', b"{}")) == "malformed"
    assert reason(v(), raw_token(b'["HS256"]', b"{}")) == "malformed"


def test_non_canonical_base64_is_malformed() -> None:
    token = encode({"a": 1}, KEY)  # payload "eyJhIjoxfQ" has 2 trailing chars (len % 4 == 2)
    h, p, s = token.split(".")
    assert len(p) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # same decoded bytes, unused low bits set: the strict decoder refuses it
    tweaked = p[:-1] + alphabet[alphabet.index(p[-1]) + 1]
    assert base64.urlsafe_b64decode(tweaked + "==") == base64.urlsafe_b64decode(p + "==")
    forged = raw_token(HS256, b'{"a":1}')  # re-sign with tweaked payload below
    h2, _, _ = forged.split(".")
    import hashlib
    import hmac

    sig = b64(hmac.new(KEY, f"{h2}.{tweaked}".encode(), hashlib.sha256).digest())
    assert reason(v(), f"{h2}.{tweaked}.{sig}") == "malformed"
    # a non-canonical spelling of the right signature never matches
    s_tweaked = s[:-1] + alphabet[alphabet.index(s[-1]) + 1]
    assert reason(v(), f"{h}.{p}.{s_tweaked}") == "signature"
    with pytest.raises(ValueError):
        b64url_decode(tweaked)
    with pytest.raises(ValueError):
        b64url_decode("abcde")
    with pytest.raises(ValueError):
        b64url_decode("ab==")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none"},
        {"alg": "HS512"},
        {"alg": "RS256"},
        {"alg": "hs256"},
        {"typ": "JWT"},
        {"alg": None},
        {"alg": ["HS256"]},
    ],
)
def test_reason_algorithm(header: dict[str, Any]) -> None:
    assert reason(v(), raw_token(header, {"a": 1})) == "algorithm"


PEM_PUBLIC = (
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\n"
    b"q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n"
    b"-----END PUBLIC KEY-----\n"
)


@pytest.mark.parametrize(
    "key",
    [
        PEM_PUBLIC,
        b"  " + PEM_PUBLIC,
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x",
        # Before: only the first 32 bytes were searched, so these were taken as HS256 secrets:
        # openssl's "Bag Attributes" / -subject lines before the PEM block, and an
        # authorized_keys line with options before the key type.
        b"Bag Attributes\n    friendlyName: api\nsubject=/CN=api.example\n" + PEM_PUBLIC,
        b'from="10.0.0.0/8",no-pty,no-agent-forwarding ssh-ed25519 '
        b"AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x",
    ],
)
def test_asymmetric_public_key_is_refused_with_reason_algorithm(key: bytes) -> None:
    with pytest.raises(JwtKeyError) as info:
        JwtValidator(key)
    assert info.value.reason == "algorithm"
    with pytest.raises(JwtKeyError):
        encode({"a": 1}, key)


def test_short_key_is_refused_with_reason_size() -> None:
    for key in (b"", b"x" * 31, "y" * 31):
        with pytest.raises(JwtKeyError) as info:
            JwtValidator(key)
        assert info.value.reason == "size"
        assert isinstance(info.value, ValueError)
    JwtValidator(b"x" * 32)  # exactly 256 bits is enough


def test_reason_expired_and_exact_boundaries() -> None:
    val = v(leeway=0)
    token = encode({"exp": NOW}, KEY)
    assert reason(val, token, NOW) == "expired"
    assert val.validate(token, NOW - 0.000001) == {"exp": NOW}
    frac = encode({"exp": 1000.5}, KEY)
    assert val.validate(frac, 1000.4999999) == {"exp": 1000.5}  # never truncated to 1000
    assert reason(val, frac, 1000.5) == "expired"
    assert v(leeway=10).validate(token, NOW + 9.999) == {"exp": NOW}
    assert reason(v(leeway=10), token, NOW + 10) == "expired"


def test_leeway_addition_is_exact() -> None:
    # 2**53 + 1.0 rounds to 2**53 in floating point; the comparison must not.
    token = encode({"exp": float(2**53)}, KEY)
    assert v(leeway=1.0).validate(token, 2**53) == {"exp": float(2**53)}
    assert reason(v(leeway=1.0), token, 2**53 + 1) == "expired"
    big = encode({"exp": 10**400, "nbf": -(10**400)}, KEY)
    assert v(leeway=0.5).validate(big, NOW) == {"exp": 10**400, "nbf": -(10**400)}


def test_reason_not_yet_valid_and_boundaries() -> None:
    val = v(leeway=0)
    token = encode({"nbf": NOW}, KEY)
    assert val.validate(token, NOW) == {"nbf": NOW}  # at nbf is valid
    assert reason(val, token, NOW - 0.001) == "not_yet_valid"
    assert v(leeway=5).validate(token, NOW - 5) == {"nbf": NOW}
    assert reason(v(leeway=5), token, NOW - 5.001) == "not_yet_valid"


def test_iat_is_type_checked_only() -> None:
    assert v().validate(encode({"iat": NOW + 10_000}, KEY), NOW) == {"iat": NOW + 10_000}


def test_reason_audience() -> None:
    assert reason(v(), encode({"aud": "svc"}, KEY)) == "audience"  # named, none configured
    assert reason(v(audience="other"), encode({"aud": "svc"}, KEY)) == "audience"
    assert reason(v(audience="svc"), encode({"aud": []}, KEY)) == "audience"
    assert reason(v(audience=["x", "y"]), encode({"aud": ["a", "b"]}, KEY)) == "audience"
    assert v(audience=["x", "b"]).validate(encode({"aud": ["a", "b"]}, KEY), NOW)
    assert v(audience="svc").validate(encode({"aud": "svc"}, KEY), NOW) == {"aud": "svc"}


def test_reason_issuer() -> None:
    assert reason(v(issuer="me"), encode({"iss": "you"}, KEY)) == "issuer"
    assert v(issuer=["me", "you"]).validate(encode({"iss": "you"}, KEY), NOW) == {"iss": "you"}


def test_reason_missing_claim() -> None:
    assert reason(v(required=["exp"]), encode({"a": 1}, KEY)) == "missing_claim"
    assert reason(v(audience="svc"), encode({"a": 1}, KEY)) == "missing_claim"
    assert reason(v(issuer="me"), encode({"a": 1}, KEY)) == "missing_claim"
    assert v(required=["a"]).validate(encode({"a": 1}, KEY), NOW) == {"a": 1}


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"crit": []},
        {"zip": "DEF"},
        {"b64": False},
        {"kid": 7},
        {"typ": 1},
        {"cty": "JWT"},
    ],
)
def test_reason_header(extra: dict[str, Any]) -> None:
    assert reason(v(), raw_token({"alg": "HS256", **extra}, {"a": 1})) == "header"


def test_default_depth_accepts_what_serde_json_parses() -> None:
    # serde_json refuses input past 128 levels; every claim set a Rust issuer can
    # produce and read back (64 and 127 levels deep included) must parse here.
    for levels in (64, 127):
        claims = b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"
        assert v().validate(raw_token(HS256, claims), NOW)
    over = b'{"a":' + b"[" * 128 + b"]" * 128 + b"}"  # 129 levels
    assert reason(v(), raw_token(HS256, over)) == "size"


def test_expected_typ() -> None:
    strict = v(typ="at+jwt")
    assert strict.validate(raw_token({"alg": "HS256", "typ": "application/AT+JWT"}, {"a": 1}), NOW)
    assert reason(strict, raw_token({"alg": "HS256", "typ": "JWT"}, {"a": 1})) == "header"
    assert reason(strict, raw_token({"alg": "HS256"}, {"a": 1})) == "header"


def test_reason_size() -> None:
    small = v(max_size=100)
    token = encode({"data": "x" * 200}, KEY)
    assert reason(small, token) == "size"
    assert reason(small, "." * 10_000) == "size"
    deep = b'{"a":' + b"[" * 200 + b"]" * 200 + b"}"
    assert reason(v(), raw_token(HS256, deep)) == "size"
    assert v(max_depth=256).validate(raw_token(HS256, deep), NOW)
    assert reason(v(max_depth=16), raw_token(HS256, b'{"a":' + b"[" * 40 + b"]" * 40 + b"}")) == (
        "size"
    )
    # brackets inside strings do not count as nesting
    stringy = b'{"a":"' + b"[" * 200 + b'"}'
    assert v().validate(raw_token(HS256, stringy), NOW) == {"a": "[" * 200}
    deep_header = b'{"alg":"HS256","x":' + b"[" * 200 + b"]" * 200 + b"}"
    assert reason(v(), raw_token(deep_header, b"{}")) == "size"


def test_every_reason_is_covered_by_this_module() -> None:
    # The tests above are named test_reason_<reason> (or cover it explicitly).
    names = {n for n in globals() if n.startswith("test_reason_")}
    for r in REASONS:
        assert any(r in n for n in names), r


def test_bytes_tokens_and_bad_arguments() -> None:
    token = encode({"a": 1}, KEY)
    assert v().validate(token.encode(), NOW) == {"a": 1}
    with pytest.raises(TypeError):
        v().validate(token, "now")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        v().validate(12, NOW)  # type: ignore[arg-type]
    # A NaN now compared false with exp, so an expired token was accepted.
    expired = encode({"exp": 100}, KEY)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="finite"):
            v().validate(expired, bad)
    with pytest.raises(ValueError):
        v(leeway=-1)
    with pytest.raises(ValueError):
        v(audience=[])


def test_signature_checked_before_payload_is_parsed() -> None:
    # A payload that is not even JSON, with a bad signature, reports "signature".
    h, _, s = encode({"a": 1}, KEY).split(".")
    assert reason(v(), f"{h}.{b64(b'not json')}.{s}") == "signature"


def test_header_cache_does_not_mix_headers() -> None:
    val = v()
    assert val.validate(raw_token({"alg": "HS256", "kid": "x"}, {"a": 1}), NOW) == {"a": 1}
    assert reason(val, raw_token({"alg": "HS384"}, {"a": 1})) == "algorithm"
    assert reason(val, raw_token({"alg": "HS384"}, {"a": 1})) == "algorithm"  # not cached as ok
    for i in range(600):  # more distinct headers than the cache holds
        assert val.validate(raw_token({"alg": "HS256", "n": i}, {"a": i}), NOW) == {"a": i}


# ---------------------------------------------------------------- keys and rotation


def test_keys_chosen_by_kid_or_in_order() -> None:
    k1, k2 = JwtKey(secret=KEY, kid="one"), JwtKey(secret=OTHER_KEY, kid="two")
    val = JwtValidator([k1, k2])
    assert val.validate(encode({"a": 1}, k2), NOW) == {"a": 1}
    assert val.validate(encode({"a": 1}, OTHER_KEY), NOW) == {"a": 1}  # no kid: tried in order
    assert val.validate(encode({"a": 1}, JwtKey(secret=OTHER_KEY, kid="zzz")), NOW)  # unknown kid
    # a kid that names a key is binding: no fall-back to the other keys
    assert reason(val, encode({"a": 1}, JwtKey(secret=OTHER_KEY, kid="one"))) == "signature"
    with pytest.raises(ValueError):
        JwtValidator([k1, JwtKey(secret=OTHER_KEY, kid="one")])
    with pytest.raises(ValueError):
        JwtValidator([])


def test_set_keys_rotates_and_keeps_old_set_on_error() -> None:
    val = v()
    old_token = encode({"a": 1}, KEY)
    new_token = encode({"a": 2}, OTHER_KEY)
    val.set_keys([OTHER_KEY, KEY])
    assert val.validate(new_token, NOW) == {"a": 2}
    assert val.validate(old_token, NOW) == {"a": 1}
    val.set_keys(OTHER_KEY)
    assert reason(val, old_token) == "signature"
    with pytest.raises(JwtKeyError):
        val.set_keys(b"short")
    assert val.validate(new_token, NOW) == {"a": 2}
    assert [k.secret for k in val.keys] == [OTHER_KEY]


def test_key_repr_hides_secret() -> None:
    assert "0123" not in repr(JwtKey(secret=KEY, kid="k"))


def test_key_from_env_and_text() -> None:
    env = {"JWT_SECRET": KEY.decode(), "B64": b64(OTHER_KEY), "HEX": OTHER_KEY.hex(), "SHORT": "x"}
    assert key_from_env("JWT_SECRET", environ=env).secret == KEY
    assert key_from_env("B64", environ=env, encoding="base64url", kid="b").kid == "b"
    assert key_from_env("B64", environ=env, encoding="base64url").secret == OTHER_KEY
    assert key_from_env("HEX", environ=env, encoding="hex").secret == OTHER_KEY
    with pytest.raises(LookupError):
        key_from_env("NOPE", environ=env)
    with pytest.raises(JwtKeyError):
        key_from_env("SHORT", environ=env)
    with pytest.raises(ValueError):
        key_from_text("zz", encoding="hex")


def test_key_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYWATT_TEST_JWT_KEY", KEY.decode())
    assert key_from_env("PYWATT_TEST_JWT_KEY").secret == KEY


def test_secret_keys_follow_rotation_with_grace() -> None:
    val = v()
    source = JwtSecretKeys({"jwt_primary": "p"}, on_change=val.set_keys)
    assert not source.ready
    with pytest.raises(LookupError):
        source.keys()
    assert source.update("jwt_primary", OTHER_KEY.decode())
    assert source.names == ("jwt_primary",)
    assert val.validate(encode({"a": 1}, JwtKey(secret=OTHER_KEY, kid="p")), NOW) == {"a": 1}
    assert not source.update("jwt_primary", OTHER_KEY.decode())  # unchanged
    third = b"z" * 40
    assert source.update("jwt_primary", third)
    # previous key still accepted (tried in order, without kid) until retired
    assert val.validate(encode({"a": 2}, OTHER_KEY), NOW) == {"a": 2}
    assert val.validate(encode({"a": 3}, JwtKey(secret=third, kid="p")), NOW) == {"a": 3}
    source.retire_previous()
    assert reason(val, encode({"a": 2}, OTHER_KEY)) == "signature"
    with pytest.raises(JwtKeyError):
        source.update("jwt_primary", "short")
    assert val.validate(encode({"a": 3}, third), NOW) == {"a": 3}  # old set still in force
    with pytest.raises(KeyError):
        source.update("unknown", third)


def test_secret_keys_wait_for_all_names() -> None:
    seen: list[int] = []
    source = JwtSecretKeys(
        ["a", "b"], on_change=lambda keys: seen.append(len(keys)), keep_previous=False
    )
    source.update("a", KEY)
    assert seen == []
    source.update("b", OTHER_KEY)
    assert seen == [2]
    source.update("a", b"q" * 32)
    assert seen == [2, 2]


# ---------------------------------------------------------------- API edges


def test_api_misuse_is_reported() -> None:
    with pytest.raises(TypeError):
        JwtKey(secret="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JwtKey(secret=KEY, kid=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JwtValidator(12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JwtValidator([12345])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        key_from_text("x" * 40, encoding="rot13")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        JwtSecretKeys([], on_change=print)
    # Before: accepted; the second value then made set_keys raise, and sending it
    # again was a silent no-op (the source had already stored it).
    with pytest.raises(ValueError, match="share a kid"):
        JwtSecretKeys({"a": "k", "b": "k"}, on_change=print)
    with pytest.raises(ValueError):
        v(max_size=0)
    with pytest.raises(ValueError):
        v(required=[1])
    with pytest.raises(TypeError):
        v().validate([1], NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JwtSigner(KEY, headers={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        JwtSigner(KEY).sign(["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        b64url_decode("é")


def test_error_message_and_repr() -> None:
    err = JwtError("expired", "token has expired")
    assert err.message == "token has expired"
    assert repr(err) == "JwtError('expired', 'token has expired')"


def test_signer_accepts_any_mapping_and_encode_caches_many_keys() -> None:
    from types import MappingProxyType

    token = JwtSigner(KEY).sign(MappingProxyType({"a": 1}))
    assert v().validate(token, NOW) == {"a": 1}
    keys = [bytes([i]) * 32 for i in range(40)]  # more keys than encode() caches
    for key in keys + keys[:3]:
        assert JwtValidator(key).validate(encode({"k": key[0]}, bytearray(key)), NOW) == {
            "k": key[0]
        }


def test_more_surrogate_and_recursion_cases() -> None:
    for payload in (b'{"a":"\\ud800\\u0041"}', b'{"a":"\\ud800\\n"}', b'{"a":"\\ud800 \\udc00"}'):
        assert reason(v(), raw_token(HS256, payload)) == "malformed"
    deep = b"[" * 5000 + b"]" * 5000
    roomy = v(max_depth=100_000, max_size=100_000)
    assert reason(roomy, raw_token(HS256, b'{"a":' + deep + b"}")) == "malformed"


def test_retire_previous_without_previous_keys_is_a_no_op() -> None:
    seen: list[int] = []
    source = JwtSecretKeys(["a"], on_change=lambda keys: seen.append(len(keys)))
    source.retire_previous()
    source.update("a", KEY)
    source.retire_previous()
    assert seen == [1]
    two = JwtSecretKeys(["a", "b"], on_change=lambda keys: seen.append(len(keys)))
    two.update("a", KEY)
    two.update("a", OTHER_KEY)  # a previous key, but "b" has no value yet
    two.retire_previous()
    assert seen == [1]

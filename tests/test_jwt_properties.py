"""Property tests: tampering is always detected; round trips are exact; no stray exceptions."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from test_jwt_helpers import KEY, NOW

from pywatt_proto.jwt import JwtError, JwtValidator, encode

VALIDATOR = JwtValidator(KEY, audience="svc", issuer="iss", leeway=0)
TOKEN = encode(
    {"sub": "user-1", "iss": "iss", "aud": "svc", "exp": NOW + 3600, "iat": NOW, "jti": "j1"}, KEY
).encode("ascii")


def test_the_base_token_is_valid() -> None:
    assert VALIDATOR.validate(TOKEN, NOW)["sub"] == "user-1"


@given(st.integers(0, len(TOKEN) - 1), st.integers(1, 255))
def test_any_change_to_any_byte_is_rejected(index: int, delta: int) -> None:
    tampered = bytearray(TOKEN)
    tampered[index] = (tampered[index] + delta) % 256
    try:
        VALIDATOR.validate(bytes(tampered), NOW)
    except JwtError:
        return
    raise AssertionError(f"tampered token accepted: byte {index}")


@given(st.integers(0, len(TOKEN) - 1), st.integers(1, 255))
def test_any_change_to_any_character_of_a_str_token_is_rejected(index: int, delta: int) -> None:
    text = TOKEN.decode()
    tampered = text[:index] + chr((ord(text[index]) + delta) % 0x10000 or 1) + text[index + 1 :]
    if tampered == text:
        return
    try:
        VALIDATOR.validate(tampered, NOW)
    except JwtError:
        return
    raise AssertionError("tampered token accepted")


@given(st.integers(0, len(TOKEN)), st.binary(min_size=1, max_size=4))
def test_insertions_are_rejected(index: int, extra: bytes) -> None:
    try:
        VALIDATOR.validate(TOKEN[:index] + extra + TOKEN[index:], NOW)
    except JwtError:
        return
    raise AssertionError("token with inserted bytes accepted")


@given(st.integers(0, len(TOKEN) - 1), st.integers(1, len(TOKEN)))
def test_deletions_are_rejected(start: int, length: int) -> None:
    try:
        VALIDATOR.validate(TOKEN[:start] + TOKEN[start + length :], NOW)
    except JwtError:
        return
    raise AssertionError("token with deleted bytes accepted")


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_input_only_raises_jwt_error(data: bytes | str) -> None:
    with contextlib.suppress(JwtError):
        VALIDATOR.validate(data, NOW)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=5,
)
reserved = {"exp", "nbf", "iat", "iss", "sub", "jti", "aud"}


@given(
    st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in reserved), json_values, max_size=5
    )
)
def test_round_trip_of_arbitrary_claims(claims: dict[str, Any]) -> None:
    token = encode(claims, KEY)
    got = JwtValidator(KEY).validate(token, NOW)
    assert json.dumps(got, sort_keys=True) == json.dumps(claims, sort_keys=True)


@given(
    st.integers(NOW - 10, NOW + 10) | st.floats(NOW - 10, NOW + 10), st.sampled_from([0, 1, 2.5])
)
def test_exp_boundary_property(exp: float, leeway: float) -> None:
    token = encode({"exp": exp}, KEY)
    val = JwtValidator(KEY, leeway=leeway)
    now = NOW
    expired = now >= exp + leeway if isinstance(exp, int) and isinstance(leeway, int) else None
    try:
        val.validate(token, now)
        ok = True
    except JwtError as exc:
        assert exc.reason == "expired"
        ok = False
    if expired is not None:
        assert ok is not expired

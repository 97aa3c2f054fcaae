"""Payload formats: JSON, Base64, Binary passthrough, CBOR, and the to_format conversions."""

from __future__ import annotations

import base64
import contextlib
import math

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import (
    MAX_CBOR_ITEMS,
    MAX_PAYLOAD_DEPTH,
    EncodedMessage,
    EncodingFormat,
    LocalProtocolError,
    RemoteProtocolError,
    convert_encoded_message,
    convert_payload,
    decode_cbor,
    decode_encoded_message_value,
    decode_payload,
    encode_cbor,
    encode_payload,
    encoded_message_from_value,
)

JSON, BINARY, BASE64, AUTO = (
    EncodingFormat.JSON,
    EncodingFormat.BINARY,
    EncodingFormat.BASE64,
    EncodingFormat.AUTO,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text() | st.integers(-(2**64), 2**64 - 1), inner, max_size=5)
    ),
    max_leaves=20,
)


# ----------------------------------------------------------------------------- JSON


def test_json_is_compact_sorted_utf8() -> None:
    value = {"b": [1, 2.5, None, "\u00e9\n\u2028"], "a": True, "M": {}}
    assert encode_payload(value, JSON) == (
        '{"M":{},"a":true,"b":[1,2.5,null,"\u00e9\\n\u2028"]}'.encode()
    )


def same(a: object, b: object) -> bool:
    """Equality, except floats may differ in the last bit.

    serde_json's float parser (which pywatt reproduces, so both sides read the same
    bytes as the same number) is not correctly rounded for 17 significant digits.
    """
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(json_values)
def test_json_round_trip(value: object) -> None:
    assert same(decode_payload(encode_payload(value, JSON), JSON), value)


def test_json_writes_serde_floats() -> None:
    assert encode_payload([1e16, 1e-7, 100.0, -0.0, 0.00001], JSON) == (
        b"[1e16,1e-7,100.0,-0.0,0.00001]"
    )


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        2**64,
        -(2**63) - 1,
        b"bytes",
        {1: "int key"},
        {"s": "\ud800"},
        object(),
        {"set": {1}},
    ],
)
def test_json_encode_refuses(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_payload(value, JSON)


def test_json_depth_limit_both_ways() -> None:
    ok: object = 0
    for _ in range(MAX_PAYLOAD_DEPTH):
        ok = [ok]
    assert decode_payload(encode_payload(ok, JSON), JSON) == ok
    with pytest.raises(LocalProtocolError):
        encode_payload([ok], JSON)
    with pytest.raises(RemoteProtocolError, match="recursion limit"):
        decode_payload(b"[" * (MAX_PAYLOAD_DEPTH + 1) + b"]" * (MAX_PAYLOAD_DEPTH + 1), JSON)
    with pytest.raises(RemoteProtocolError):
        decode_payload(b"[" * 100_000, JSON)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"\xef\xbb\xbf{}",  # BOM
        b"{} x",
        b"\xff",
        b'"\\ud800"',
        b"[1,]",
        b"'a'",
        b'"\x01"',
    ],
)
def test_json_decode_rejects(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_payload(data, JSON)


def test_json_decode_numbers_like_serde() -> None:
    assert decode_payload(b"[18446744073709551615,-9223372036854775808]", JSON) == [
        2**64 - 1,
        -(2**63),
    ]
    big = decode_payload(b"[18446744073709551616, " + b"9" * 300 + b"]", JSON)
    assert isinstance(big, list) and all(isinstance(x, float) for x in big)
    # Beyond f64 range serde reports "number out of range"; so must we (not ValueError).
    with pytest.raises(RemoteProtocolError):
        decode_payload(b"9" * 5000, JSON)
    assert decode_payload(b'{"a":1,"a":2} \n', JSON) == {"a": 2}


def test_size_limit() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_payload(b"[" + b"0," * 10 + b"0]", JSON, max_size=10)
    assert info.value.error_status_hint == 413
    with pytest.raises(RemoteProtocolError):
        decode_cbor(b"\x00" * 11, max_size=10)


# ----------------------------------------------------------------------------- Binary / Base64


def test_binary_passthrough() -> None:
    data = bytes(range(256))
    assert encode_payload(data, BINARY) == data
    assert encode_payload(bytearray(data), BINARY) == data
    assert decode_payload(data, BINARY) == data
    with pytest.raises(LocalProtocolError):
        encode_payload("text", BINARY)


@given(st.binary(max_size=100))
def test_base64_round_trip(raw: bytes) -> None:
    encoded = encode_payload(raw, BASE64)
    assert encoded == base64.b64encode(raw)
    assert decode_payload(encoded, BASE64) == raw


@pytest.mark.parametrize(
    "data", [b"aGk", b"aGl=", b"aG k=", b"aGk=\n", b"aGk==", b"a-_=", b"====", b"aGk=aGk="]
)
def test_base64_strict(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_payload(data, BASE64)


def test_auto_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_payload({}, AUTO)
    with pytest.raises(RemoteProtocolError):
        decode_payload(b"{}", AUTO)
    with pytest.raises(LocalProtocolError):
        decode_payload("{}", JSON)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- CBOR


@given(cbor_values)
def test_cbor_round_trip(value: object) -> None:
    assert decode_cbor(encode_cbor(value)) == value


def test_cbor_accepts_bignums_and_indefinite_lengths() -> None:
    assert decode_cbor(cbor2.dumps(2**100)) == 2**100
    assert decode_cbor(cbor2.dumps(-(2**100))) == -(2**100)
    assert decode_cbor(b"\x9f\x01\x02\xff") == [1, 2]
    assert decode_cbor(b"\xbf\x61a\x01\xff") == {"a": 1}
    assert decode_cbor(b"\x7f\x61a\x61b\xff") == "ab"
    assert decode_cbor(b"\xf9\x3c\x00") == 1.0


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x82\x01", "more items"),
        (b"\x19\x01", "truncated"),
        (b"\xd8\x1c\x81\xd8\x1d\x00", "tag 28"),  # shared reference: cyclic list
        (b"\xc1\x00", "tag 1"),  # epoch datetime
        (b"\xc2\x01", "byte string"),  # bignum tag on an int
        (b"\x9b\xff\xff\xff\xff\xff\xff\xff\xf0", "more items"),
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xf0", "longer"),
        (b"\x01\x02", "trailing"),
        (b"\xf7", "simple value 23"),  # undefined
        (b"\xf8\x20", "simple value"),
        (b"\x1c", "reserved"),
        (b"\xff", "break"),
        (b"\x5f\x41a\x61b\xff", "wrong type"),
        (b"\x5f\x5f\xff\xff", "nested indefinite"),
        (b"\xbf\x01\xff", "between a key"),
        (b"\xa1\x81\x00\x00", "map keys"),
        (b"\x1f", "indefinite"),
        (b"\x61\xff", "invalid"),  # bad UTF-8, caught by cbor2 and wrapped
        (b"\x81" * (MAX_PAYLOAD_DEPTH + 1) + b"\x00", "deeper"),
    ],
)
def test_cbor_rejects(data: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode_cbor(data)


def test_cbor_item_limit() -> None:
    header = b"\x9a" + (MAX_CBOR_ITEMS + 1).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match="data items"):
        decode_cbor(header + b"\x00" * (MAX_CBOR_ITEMS + 1))


@pytest.mark.parametrize(
    "value", [object(), {(1, 2): 3}, {True: 1}, "\ud800", {1.5: 0}, {2**64: 0}]
)
def test_cbor_encode_refuses(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode_cbor(value)


def test_cbor_encode_refuses_cycles() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode_cbor(cyclic)


@given(st.binary(max_size=64))
def test_cbor_decoder_only_raises_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_cbor(data)


# ----------------------------------------------------------------------------- conversions


def test_conversions_follow_to_format() -> None:
    doc = b'{"b": 1, "a": [ ]}'
    assert convert_payload(doc, JSON, JSON) == doc
    assert convert_payload(doc, JSON, BINARY) == doc
    assert convert_payload(doc, JSON, BASE64) == base64.b64encode(doc)
    assert convert_payload(doc, BINARY, JSON) == b'{"a":[],"b":1}'
    assert convert_payload(b"\x00\x01", BINARY, BASE64) == b"AAE="
    assert convert_payload(b"e30=", BASE64, JSON) == b"{}"
    assert convert_payload(b"AAE=", BASE64, BINARY) == b"\x00\x01"
    with pytest.raises(RemoteProtocolError):
        convert_payload(b"\x00\x01", BINARY, JSON)
    with pytest.raises(RemoteProtocolError):
        convert_payload(b"AAE=", BASE64, JSON)
    with pytest.raises(RemoteProtocolError):
        convert_payload(b"not json", JSON, BINARY)
    with pytest.raises(LocalProtocolError):
        convert_payload(doc, JSON, AUTO)
    with pytest.raises(RemoteProtocolError):
        convert_payload(doc, AUTO, JSON)


def test_encoded_message_helpers() -> None:
    msg = encoded_message_from_value({"k": [1]})
    assert msg == EncodedMessage(data=b'{"k":[1]}', format=JSON)
    assert decode_encoded_message_value(msg) == {"k": [1]}
    as_b64 = convert_encoded_message(msg, BASE64)
    assert as_b64.format is BASE64
    assert decode_encoded_message_value(as_b64) == b'{"k":[1]}'
    assert convert_encoded_message(as_b64, JSON) == msg
    raw = encoded_message_from_value(b"\x00", BINARY)
    assert decode_encoded_message_value(raw) == b"\x00"


@given(st.binary(max_size=64), st.sampled_from([JSON, BINARY, BASE64]))
def test_decoders_only_raise_protocol_errors(data: bytes, fmt: EncodingFormat) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_payload(data, fmt)
    for target in (JSON, BINARY, BASE64):
        with contextlib.suppress(RemoteProtocolError):
            convert_payload(data, fmt, target)


@given(cbor_values, st.data())
def test_cbor_mutations_only_raise_protocol_errors(value: object, data: st.DataObject) -> None:
    # Valid encodings with bytes flipped, cut or appended: the scanner and cbor2 together
    # must turn every one into a value or a RemoteProtocolError, nothing else.
    encoded = bytearray(encode_cbor(value))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "append"]))
        if op == "flip" and encoded:
            i = data.draw(st.integers(0, len(encoded) - 1))
            encoded[i] = data.draw(st.integers(0, 255))
        elif op == "cut" and encoded:
            del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
        else:
            encoded += data.draw(st.binary(min_size=1, max_size=4))
    with contextlib.suppress(RemoteProtocolError):
        decode_cbor(bytes(encoded))

"""Regressions found after the codec landed, exercised through the public decoders."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pywatt_proto import (
    LocalProtocolError,
    Message,
    MessageMetadata,
    RemoteProtocolError,
    ServiceRequest,
    ServiceType,
    decode_envelope,
    decode_init,
    decode_module_to_orchestrator,
    decode_orchestrator_to_module,
    encode_envelope,
)


@pytest.mark.parametrize("digits", [4301, 5000, 20000])
def test_integer_longer_than_python_int_limit_is_a_protocol_error(digits: int) -> None:
    # Python's int() refuses > 4300-digit literals with a plain ValueError; serde calls
    # such a number out of range. It must surface as RemoteProtocolError.
    line = b'{"op":"heartbeat","x":' + b"9" * digits + b"}"
    with pytest.raises(RemoteProtocolError, match="out of range"):
        decode_orchestrator_to_module(line)
    neg = b'{"op":"heartbeat_ack","x":[-' + b"1" * digits + b"]}"
    with pytest.raises(RemoteProtocolError, match="out of range"):
        decode_module_to_orchestrator(neg)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b"{}", "orchestrator_api"),
        (b'{"orchestrator_api":"x"}', "module_id"),
        (b'{"orchestrator_api":"x","module_id":"m","env":{}}', "listen"),
    ],
)
def test_init_names_its_first_missing_field_in_declaration_order(line: bytes, field: str) -> None:
    # serde's derived visitor reports the first missing field in declaration order.
    with pytest.raises(RemoteProtocolError, match=f"missing field `{field}`") as info:
        decode_init(line)
    assert info.value.field == field


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_envelope_encoder_refuses_nesting_its_decoder_refuses() -> None:
    """A JSON value one level deeper inside an envelope than in a bare message (a typed
    message's config, the metadata's properties) would be written and then refused by
    serde's 127-level limit: encode_envelope refuses it instead."""

    def request(levels: int) -> Message:
        config = _nested(levels)
        sr = ServiceRequest(id="a", service_type=ServiceType.CACHE, config=config)
        return Message(id=uuid.uuid4(), content=sr)

    fits = request(125)  # envelope, message, 125 levels of config: 127
    assert decode_envelope(encode_envelope(fits), content="module_to_orchestrator") == fits
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode_envelope(request(126))
    properties = MessageMetadata(properties={"a": _nested(125)})  # 2 + 126 levels
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode_envelope(Message(id=uuid.uuid4(), content=1, metadata=properties))

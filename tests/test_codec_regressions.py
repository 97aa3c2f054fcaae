"""Regressions found after the codec landed, exercised through the public decoders."""

from __future__ import annotations

import pytest

from pywatt_proto import (
    RemoteProtocolError,
    decode_init,
    decode_module_to_orchestrator,
    decode_orchestrator_to_module,
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

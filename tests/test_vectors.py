"""Golden vectors recorded from the Rust reference (tests/vectors/, see its README).

* every ``wire`` record decodes and re-encodes to the same bytes (as parsed JSON
  where the record has ``nondeterministic_map_order``), with the right ``listen_kind``;
* every ``rust_parsed`` record gets serde's verdict, and accepted ones reserialize to
  serde's text -- except the ids in ``pywatt_proto.conformance.DEVIATIONS``, which
  must disagree (so the list can neither silently grow nor go stale);
* ``serialize_error`` records (identify) follow our documented behaviour.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from pywatt_proto import (
    Identify,
    Message,
    RemoteProtocolError,
    TcpListen,
    UnixListen,
    decode_encoded_message,
    decode_envelope,
    decode_module_to_orchestrator,
    decode_orchestrator_to_module,
    encode,
    encode_encoded_message,
    encode_envelope,
)
from pywatt_proto.conformance import DEVIATIONS, check

VECTORS = pathlib.Path(__file__).parent / "vectors"
ROOT = pathlib.Path(__file__).parent.parent


def _load(name: str) -> list[dict[str, Any]]:
    with open(VECTORS / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


EMITTED = _load("rust_emitted.jsonl")
PARSED = _load("rust_parsed.jsonl")
WIRE = [r for r in EMITTED if "wire" in r]
SERIALIZE_ERRORS = [r for r in EMITTED if "serialize_error" in r]


def _same(ours: str, theirs: str, unordered: bool) -> bool:
    if ours == theirs:
        return True
    return unordered and json.loads(ours) == json.loads(theirs)


def _roundtrip_wire(record: dict[str, Any]) -> tuple[str, object]:
    direction, text = record["direction"], record["wire"]
    decoded: object
    if direction == "module_to_orchestrator":
        decoded = decode_module_to_orchestrator(text)
        out = encode(decoded)
    elif direction == "orchestrator_to_module":
        decoded = decode_orchestrator_to_module(text)
        out = encode(decoded)
    elif direction == "encoded_message":
        decoded = decode_encoded_message(text)
        out = encode_encoded_message(decoded)
    else:
        assert direction == "message_envelope"
        typed = record["variant"] == "Message<ModuleToOrchestrator>"
        decoded = decode_envelope(text, content="module_to_orchestrator" if typed else "json")
        out = encode_envelope(decoded)
    return out.decode("utf-8"), decoded


def test_vector_files_are_complete() -> None:
    assert len(EMITTED) == 117
    assert len(PARSED) == 164
    assert len(WIRE) + len(SERIALIZE_ERRORS) == len(EMITTED)


@pytest.mark.parametrize("record", WIRE, ids=[r["id"] for r in WIRE])
def test_wire_round_trip(record: dict[str, Any]) -> None:
    out, decoded = _roundtrip_wire(record)
    assert _same(out, record["wire"], record.get("nondeterministic_map_order", False))
    if "listen_kind" in record:
        expected = TcpListen if record["listen_kind"] == "Tcp" else UnixListen
        assert type(decoded.listen) is expected  # type: ignore[attr-defined]
    # decoding our own output gives the same object back
    out2, decoded2 = _roundtrip_wire({**record, "wire": out})
    assert decoded2 == decoded and out2 == out


def _agrees(record: dict[str, Any]) -> bool:
    result = check(record["direction"], record["input"])
    if result["accepted"] != record["accepted"]:
        return False
    if not record["accepted"]:
        return True
    return _same(str(result["reserialized"]), record["reserialized"], True)


@pytest.mark.parametrize("record", PARSED, ids=[r["id"] for r in PARSED])
def test_parsed_vector(record: dict[str, Any]) -> None:
    if record["id"] in DEVIATIONS:
        assert not _agrees(record), f"{record['id']} now agrees: drop it from DEVIATIONS"
    else:
        result = check(record["direction"], record["input"])
        assert result["accepted"] == record["accepted"], result
        if record["accepted"]:
            assert _same(str(result["reserialized"]), record["reserialized"], True)


def test_rejections_are_remote_protocol_errors() -> None:
    for record in PARSED:
        if record["accepted"] or record["id"] in DEVIATIONS:
            continue
        decoders: dict[str, Callable[[str], object]] = {
            "module_to_orchestrator": decode_module_to_orchestrator,
            "orchestrator_to_module": decode_orchestrator_to_module,
            "encoded_message": decode_encoded_message,
            "message_envelope": decode_envelope,
        }
        decoder = decoders[record["direction"]]
        with pytest.raises(RemoteProtocolError):
            decoder(record["input"])


def test_agreement_counts() -> None:
    parsed_agree = sum(_agrees(r) for r in PARSED)
    wire_agree = 0
    for r in WIRE:
        out, _ = _roundtrip_wire(r)
        wire_agree += _same(out, r["wire"], r.get("nondeterministic_map_order", False))
    parsed_devs = {r["id"] for r in PARSED} & set(DEVIATIONS)
    assert wire_agree == len(WIRE) == 114
    assert parsed_agree == len(PARSED) - len(parsed_devs) == 157


def test_deviation_list_is_exact_and_documented() -> None:
    ids = {r["id"] for r in EMITTED} | {r["id"] for r in PARSED}
    assert set(DEVIATIONS) <= ids, set(DEVIATIONS) - ids
    disagree = {r["id"] for r in PARSED if not _agrees(r)}
    disagree |= {r["id"] for r in SERIALIZE_ERRORS}
    assert disagree == set(DEVIATIONS)
    doc = (ROOT / "spec" / "deviations.md").read_text(encoding="utf-8")
    for vector_id, section in DEVIATIONS.items():
        assert vector_id in doc, vector_id
        assert re.search(rf"^## {section}\b", doc, re.M), section


@pytest.mark.parametrize("record", SERIALIZE_ERRORS, ids=[r["id"] for r in SERIALIZE_ERRORS])
def test_serialize_error_records_identify_is_our_extension(record: dict[str, Any]) -> None:
    # serde cannot write identify at all; pywatt writes {"op":"identify","module_id":...}
    assert record["variant"] in ("identify", "Message<ModuleToOrchestrator>")
    msg = Identify(module_id="mod-1")
    wire = encode(msg)
    assert wire == b'{"op":"identify","module_id":"mod-1"}'
    assert decode_module_to_orchestrator(wire) == msg
    if record["direction"] == "message_envelope":
        env = decode_envelope(
            b'{"id":"a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8","content":' + wire + b',"metadata":{}}',
            content="module_to_orchestrator",
        )
        assert isinstance(env, Message) and env.content == msg
        assert decode_envelope(encode_envelope(env), content="module_to_orchestrator") == env

"""Differential conformance harness: ``python -m pywatt_proto.conformance``.

Reads one JSON control line per case on stdin and writes exactly one ASCII JSON line per
control line on stdout::

    {"direction": "module_to_orchestrator", "input": "{\\"op\\":\\"heartbeat_ack\\"}"}
    {"accepted": true, "reserialized": "{\\"op\\":\\"heartbeat_ack\\"}"}
    {"accepted": false, "error": "missing field `op`"}

``direction`` is one of :data:`DIRECTIONS` (a tagged message either way, a standalone
``EncodedMessage``, ``Message<Value>``, ``Message<ModuleToOrchestrator>``); ``reserialized``
is our encoding of the decoded value, to compare with what serde_json writes. A malformed
control line yields ``{"accepted": false, "error": "control: ..."}`` and the harness carries
on. :data:`DEVIATIONS` lists the reference vectors on which pywatt deliberately disagrees
with serde (``spec/deviations.md``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO

from ._codec import (
    decode_encoded_message,
    decode_envelope,
    decode_module_to_orchestrator,
    decode_orchestrator_to_module,
    encode,
    encode_encoded_message,
    encode_envelope,
)
from ._errors import ProtocolError

__all__ = ["DEVIATIONS", "DIRECTIONS", "check", "main", "run"]

#: Reference vector id -> deviation (a heading of ``spec/deviations.md``).
#: Every other vector must agree with serde exactly.
DEVIATIONS: Mapping[str, str] = {
    # D1: identify carries module_id and round-trips (serde can neither write nor read it)
    "p_identify_with_field": "D1",
    "m2o_identify_empty": "D1",
    "m2o_identify_plain": "D1",
    "env_typed_identify_fails": "D1",
    # D2: positional (array) forms of structs and tagged enums are rejected
    "p_seq_get_secret": "D2",
    "p_seq_route_to_module": "D2",
    "p_heartbeat_seq": "D2",
    "p_ann_endpoint_as_array": "D2",
    "p_rt_payload_as_array": "D2",
    "p_enc_array_form": "D2",
}


#: Direction name -> round trip (decode, then encode) used by :func:`check`.
DIRECTIONS: Mapping[str, Callable[[str], bytes]] = {
    "module_to_orchestrator": lambda text: encode(decode_module_to_orchestrator(text)),
    "orchestrator_to_module": lambda text: encode(decode_orchestrator_to_module(text)),
    "encoded_message": lambda text: encode_encoded_message(decode_encoded_message(text)),
    "message_envelope": lambda text: encode_envelope(decode_envelope(text, content="json")),
    "module_envelope": lambda text: encode_envelope(
        decode_envelope(text, content="module_to_orchestrator")
    ),
}


def check(direction: str, text: str) -> dict[str, object]:
    """Decode ``text`` as ``direction`` and re-encode it.

    Returns ``{"accepted": True, "reserialized": str}`` or
    ``{"accepted": False, "error": str}``. Raises KeyError for an unknown direction.
    """
    roundtrip = DIRECTIONS[direction]
    try:
        out = roundtrip(text)
    except ProtocolError as exc:
        return {"accepted": False, "error": str(exc)}
    return {"accepted": True, "reserialized": out.decode("utf-8")}


def _answer(line: bytes) -> dict[str, object]:
    try:
        control = json.loads(line)
    except ValueError as exc:  # includes UnicodeDecodeError
        return {"accepted": False, "error": f"control: not a JSON line: {exc}"}
    if not isinstance(control, dict):
        return {"accepted": False, "error": "control: expected a JSON object"}
    direction = control.get("direction")
    text = control.get("input")
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        names = ", ".join(DIRECTIONS)
        return {"accepted": False, "error": f"control: direction must be one of {names}"}
    if not isinstance(text, str):
        return {"accepted": False, "error": "control: input must be a string"}
    try:
        return check(direction, text)
    except Exception as exc:  # a bug in pywatt: report it, keep going
        return {"accepted": False, "error": f"internal error: {type(exc).__name__}: {exc}"}


def run(lines: Iterable[bytes]) -> Iterator[str]:
    """Yield one ASCII JSON answer line (no newline) per control line in ``lines``."""
    for line in lines:
        yield json.dumps(_answer(line), ensure_ascii=True)


def main(stdin: IO[bytes] | None = None, stdout: IO[str] | None = None) -> int:
    """Answer every control line of ``stdin`` on ``stdout``; return the exit status (0)."""
    source = stdin if stdin is not None else sys.stdin.buffer
    sink = stdout if stdout is not None else sys.stdout
    for answer in run(line.rstrip(b"\r\n") for line in source):
        sink.write(answer + "\n")
        sink.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m pywatt_proto.conformance`` as a subprocess, against the reference vectors."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

from pywatt_proto.conformance import DEVIATIONS

VECTORS = pathlib.Path(__file__).parent / "vectors"
ROOT = pathlib.Path(__file__).parent.parent


def _run(stdin: bytes) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "pywatt_proto.conformance"],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert proc.stderr == b""
    text = proc.stdout.decode("ascii")  # the harness writes ASCII-only JSON
    return [json.loads(line) for line in text.split("\n") if line]


def _records() -> list[dict[str, Any]]:
    text = (VECTORS / "rust_parsed.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.split("\n") if line]


def test_rust_parsed_agreement() -> None:
    records = _records()
    stdin = b"".join(
        json.dumps({"direction": r["direction"], "input": r["input"]}).encode() + b"\n"
        for r in records
    )
    answers = _run(stdin)
    assert len(answers) == len(records) == 164
    agree = set()
    for record, answer in zip(records, answers, strict=True):
        same = answer["accepted"] == record["accepted"]
        if same and record["accepted"]:
            same = json.loads(answer["reserialized"]) == json.loads(record["reserialized"])
        if same:
            agree.add(record["id"])
    disagree = {r["id"] for r in records} - agree
    assert disagree == {i for i in DEVIATIONS if i.startswith("p_")}
    assert len(agree) == 157


def test_accepted_reserialization_is_byte_exact_outside_hash_maps() -> None:
    records = _records()
    chosen = [r for r in records if r["accepted"] and r["id"] not in DEVIATIONS]
    stdin = b"".join(
        json.dumps({"direction": r["direction"], "input": r["input"]}).encode() + b"\n"
        for r in chosen
    )
    for record, answer in zip(chosen, _run(stdin), strict=True):
        assert answer == {"accepted": True, "reserialized": record["reserialized"]}, record["id"]


def test_module_envelope_direction() -> None:
    env = '{"id":"a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8","content":{"name":"K","op":"get_secret"}}'
    stdin = json.dumps({"direction": "module_envelope", "input": env}).encode() + b"\n"
    stdin += json.dumps({"direction": "message_envelope", "input": env}).encode() + b"\n"
    typed, value = _run(stdin)
    assert typed == {
        "accepted": True,
        "reserialized": '{"id":"a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8",'
        '"content":{"op":"get_secret","name":"K"},"metadata":{}}',
    }
    assert value["reserialized"].endswith('"content":{"name":"K","op":"get_secret"},"metadata":{}}')


def test_malformed_control_lines_get_error_lines() -> None:
    lines = [
        b"not json",
        b"[1,2]",
        b'{"direction":"sideways","input":"{}"}',
        b'{"direction":"module_to_orchestrator","input":5}',
        b'{"direction":"module_to_orchestrator"}',
        b"\xff\xfe",
        b"",
        b'{"direction":"module_to_orchestrator","input":"{\\"op\\":\\"get_secret\\",'
        b'\\"name\\":\\"\\ud800\\"}"}',
        b'{"direction":"orchestrator_to_module","input":"{\\"op\\":\\"heartbeat\\"}"}',
    ]
    answers = _run(b"\n".join(lines) + b"\n")
    assert len(answers) == len(lines)
    for answer in answers[:7]:
        assert answer["accepted"] is False
        assert answer["error"].startswith("control:")
    assert answers[7]["accepted"] is False and not answers[7]["error"].startswith("control")
    assert answers[8] == {"accepted": True, "reserialized": '{"op":"heartbeat"}'}

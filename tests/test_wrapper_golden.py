"""The stdout response wrapper, byte for byte as a reference module writes it.

A reference module builds ``{"content": <IpcHttpResponse>, "metadata": {...}}`` with
serde_json's ``json!`` (no ``preserve_order``), so every object in it -- the wrapper, the
content, the headers, the metadata and its properties -- is written with sorted keys
(spec/stdio.md). The golden lines below were written by hand from that rule; the property
test checks the rule itself against a sorted-keys re-encoding of every answer.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import NEED_DATA, ModuleConnection
from pywatt_proto._codec import encode_http_response

INIT = (
    b'{"orchestrator_api":"http://127.0.0.1:9900","module_id":"golden","env":{},'
    b'"listen":"127.0.0.1:4102"}\n'
)


def _request(rid: str) -> bytes:
    return (
        b'{"op":"http_request","request_id":"%s","method":"GET","uri":"/x",'
        b'"headers":{},"body":null}\n' % rid.encode()
    )


def _connection(seed: int = 7, init: bytes = INIT) -> ModuleConnection:
    conn = ModuleConnection(rng=random.Random(seed))
    conn.receive_data(init, 0.0)
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()  # the announce
    return conn


def _answer(conn: ModuleConnection, rid: str, status: int, headers: Any, body: bytes) -> bytes:
    conn.receive_data(_request(rid), 1.0)
    while conn.next_event() is not NEED_DATA:
        pass
    assert conn.send_response(rid, status, headers, body)
    return conn.data_to_send()


def test_golden_wrapper_line() -> None:
    conn = _connection()
    headers = (("X-Trace", "t1"), ("content-type", "application/json"), ("Cache-Control", "no"))
    got = _answer(conn, "req-42", 201, headers, b'{"ok":true}')
    assert got == (
        b'{"content":{"body":[123,34,111,107,34,58,116,114,117,101,125],'
        b'"headers":{"cache-control":"no","content-type":"application/json","x-trace":"t1"},'
        b'"request_id":"req-42","status_code":201},'
        b'"metadata":{"id":"6513270e-269e-4d37-b2a7-4de452e6b438",'
        b'"properties":{"correlation_id":"req-42"},"source":"golden"}}\n'
    )


def test_golden_wrapper_line_escapes_and_empty_parts() -> None:
    # No module_id -> source "unknown_module"; escapes as serde writes them; empty body [].
    init = INIT.replace(b'"golden"', b'""')
    conn = _connection(seed=1, init=init)
    conn.receive_data(
        b'{"op":"http_request","request_id":"q\\"1\\u00e9","method":"GET","uri":"/",'
        b'"headers":{},"body":null}\n',
        1.0,
    )
    while conn.next_event() is not NEED_DATA:
        pass
    assert conn.send_response('q"1\u00e9', 404, {"b": "\t", "a": "\u2028"}, None)
    assert conn.data_to_send() == (
        b'{"content":{"body":[],"headers":{"a":"\xe2\x80\xa8","b":"\\t"},'
        b'"request_id":"q\\"1\xc3\xa9","status_code":404},'
        b'"metadata":{"id":"cd613e30-d8f1-4adf-91b7-584a2265b1f5",'
        b'"properties":{"correlation_id":"q\\"1\xc3\xa9"},"source":"unknown_module"}}\n'
    )


def test_encode_http_response_writes_both_shapes_from_one_encoder() -> None:
    wrapped = encode_http_response(
        "r",
        200,
        {"b": "2", "a": "1"},
        b"hi",
        wrapper_id="00000000-0000-4000-8000-000000000000",
        source="m",
    )
    assert wrapped == (
        b'{"content":{"body":[104,105],"headers":{"a":"1","b":"2"},"request_id":"r",'
        b'"status_code":200},"metadata":{"id":"00000000-0000-4000-8000-000000000000",'
        b'"properties":{"correlation_id":"r"},"source":"m"}}'
    )
    flat = encode_http_response("r", 200, {"b": "2", "a": "1"}, b"hi")
    assert flat == (
        b'{"op":"http_response","request_id":"r","status_code":200,'
        b'"headers":{"a":"1","b":"2"},"body":[104,105]}'
    )


def test_wrapper_ids_are_fresh_uuid4_from_the_connection_source() -> None:
    conn = _connection(seed=3)
    ids = []
    for i in range(200):
        line = _answer(conn, f"r{i}", 200, (), b"")
        text = json.loads(line)["metadata"]["id"]
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case, hyphenated
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        ids.append(text)
    assert len(set(ids)) == len(ids)
    # the same seed gives the same ids (the randomness is the connection's injected source)
    again = _connection(seed=3)
    assert json.loads(_answer(again, "r0", 200, (), b""))["metadata"]["id"] == ids[0]


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABC_0123456789", min_size=1, max_size=12)
_values = st.text(max_size=20).filter(lambda s: "\r" not in s and "\n" not in s)


@given(
    rid=st.text(min_size=1, max_size=16).filter(
        lambda s: s.encode("utf-8", "ignore") == s.encode("utf-8", "surrogatepass")
    ),
    status=st.integers(min_value=100, max_value=599),
    headers=st.lists(st.tuples(_names, _values), max_size=6),
    body=st.binary(max_size=64),
)
def test_every_wrapped_answer_is_what_json_macro_writes(
    rid: str, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    conn = _connection()
    conn.receive_data(
        json.dumps(
            {
                "op": "http_request",
                "request_id": rid,
                "method": "GET",
                "uri": "/",
                "headers": {},
                "body": None,
            }
        ).encode()
        + b"\n",
        1.0,
    )
    while conn.next_event() is not NEED_DATA:
        pass
    assert conn.send_response(rid, status, tuple(headers), body)
    line = conn.data_to_send()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    value = json.loads(line)
    # serde_json's compact writer with BTreeMap objects: keys sorted at every level, the
    # same string escapes as json.dumps(ensure_ascii=False)
    assert (
        line[:-1]
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert value["content"]["request_id"] == value["metadata"]["properties"]["correlation_id"]
    assert bytes(value["content"]["body"]) == body

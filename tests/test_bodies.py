"""Bodies on the stdio line (issue 13; issue 11 defects 5, 11, 16; issue 16 point 10).

The two body forms (the reference's byte array and the ``base64_bodies`` extension), their
negotiation both ways, the body/line size rule and what each side answers past it, the
bounded request_id scan, the skipped-line log policy and the init cap -- all through the
pure cores (no I/O, fake clock).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import pytest

from pywatt_proto import LocalProtocolError, RemoteProtocolError
from pywatt_proto._bodies import (
    BASE64_LINE_LIMIT,
    LINE_ROOM,
    MAX_BASE64_BODY,
    MAX_REFERENCE_BODY,
    REFERENCE_LINE_LIMIT,
    LogThrottle,
    SkippedLineLog,
    decode_base64_body,
    decode_byte_array,
    encode_base64_body,
    encode_byte_array,
    max_body_size,
    scan_request_id,
)
from pywatt_proto._codec import (
    decode_module_line,
    decode_orchestrator_to_module,
    encode,
    encode_headers,
    http_request_line,
    http_response_line,
    read_http_request_line,
    split_body,
)
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA, LineDecoder, LineTooLong
from pywatt_proto._messages import Endpoint, HttpRequest, HttpResponse, Init, TcpListen
from pywatt_proto._module import (
    MAX_INIT_LINE,
    BadLine,
    ModuleConnection,
    RequestReceived,
    ResponseTooLarge,
)
from pywatt_proto._orchestrator import (
    BadModuleLine,
    OrchestratorConnection,
    RequestFailed,
    ResponseReceived,
)
from pywatt_proto.testing import ConnectionPair, FakeClock

EVERY_BYTE = bytes(range(256))
SIZES = [0, 1, 2, 3, 4, 255, 256, 511, 512, 1023, 1024, 2047, 2048, 65535, 65536, 65537]


def _init(extensions: tuple[str, ...]) -> Init:
    return Init(
        orchestrator_api="http://127.0.0.1:9900",
        module_id="m1",
        env={},
        listen=TcpListen(host="127.0.0.1", port=4102),
        extensions=extensions,
    )


def _drain(conn: Any) -> list[Any]:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return out
        out.append(ev)


def _running_module(extensions: tuple[str, ...] = ("http_response_op",)) -> ModuleConnection:
    mod = ModuleConnection(endpoints=(Endpoint(path="/e", methods=("POST",)),))
    init: dict[str, Any] = {
        "orchestrator_api": "http://x",
        "module_id": "m1",
        "env": {},
        "listen": "127.0.0.1:1",
    }
    if extensions:
        init["pywatt_extensions"] = list(extensions)
    mod.receive_data(json.dumps(init).encode() + b"\n", 0.0)
    _drain(mod)
    mod.data_to_send()
    return mod


# ----------------------------------------------------------------------------- the codecs


@pytest.mark.parametrize("n", SIZES)
def test_byte_array_form_every_value_every_size(n: int) -> None:
    body = (EVERY_BYTE * (n // 256 + 1))[:n] if n % 3 else os.urandom(n)
    text = encode_byte_array(body)
    assert text == json.dumps(list(body), separators=(",", ":")).encode()
    assert decode_byte_array(text) == body
    assert decode_base64_body(encode_base64_body(body)) == body


@pytest.mark.parametrize(
    "bad", [b"[256]", b"[01]", b"[00]", b"[1,,2]", b"[,1]", b"[1,]", b"[ 1]", b"[true]", b"[-1]"]
)
def test_fast_array_decoder_declines_what_serde_would_not_write(bad: bytes) -> None:
    assert decode_byte_array(bad) is None


@pytest.mark.parametrize("bad", ["QQ", "QQ=", "Q===", "QQ==QQ==", "QQ=\n=", "Q Q=", "QQ\\/", "é"])
def test_base64_decoder_is_strict(bad: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_base64_body(bad)
    assert info.value.field == "body"


@pytest.mark.parametrize("base64", [False, True])
@pytest.mark.parametrize("n", [0, 5, 256, 3000, 70000])
def test_request_and_response_lines_round_trip_in_both_forms(base64: bool, n: int) -> None:
    body = os.urandom(n)
    req = HttpRequest(request_id="r1", method="POST", uri="/e", headers={"a": "b"}, body=body)
    line = http_request_line(req, base64_bodies=base64)
    assert line == encode(req, base64_bodies=base64) + b"\n"
    assert (b'"body":"' in line) is base64
    assert read_http_request_line(line[:-1], base64_bodies=base64) == req
    assert decode_orchestrator_to_module(line[:-1], base64_bodies=base64) == req
    for wrapper_id in (None, "0b6f1c5e-1d1a-4a8e-9c5f-2f7c9a1b2c3d"):
        out = http_response_line(
            '"r1"', 200, encode_headers({"x": "y"}), body, wrapper_id, '"m1"', base64_bodies=base64
        )
        expected = HttpResponse(request_id="r1", status_code=200, headers={"x": "y"}, body=body)
        assert decode_module_line(out[:-1], base64_bodies=base64) == expected


def test_a_base64_body_without_the_extension_is_an_error() -> None:
    req = HttpRequest(request_id="r1", method="POST", uri="/e", headers={}, body=b"abc")
    line = http_request_line(req, base64_bodies=True)[:-1]
    assert read_http_request_line(line) is None
    with pytest.raises(RemoteProtocolError) as info:
        decode_orchestrator_to_module(line)
    assert info.value.field == "body"


def test_split_body_leaves_every_other_check_to_the_decoders() -> None:
    # A duplicated body: the head keeps the first one next to "body":null -> duplicate field.
    line = b'{"op":"http_request","request_id":"r","method":"GET","uri":"/","headers":{},'
    dup = line + b'"body":[1],"body":"QUJD"}'
    assert split_body(dup, True) is not None
    with pytest.raises(RemoteProtocolError):
        decode_orchestrator_to_module(dup, base64_bodies=True)
    assert split_body(line + b'"body":"QUJ\\/"}', True) is None  # an escape: general path


# ------------------------------------------------------------------ the body/line rule


def test_size_rule_is_derived_from_the_line_limit_and_the_worst_case() -> None:
    assert MAX_REFERENCE_BODY == (REFERENCE_LINE_LIMIT - LINE_ROOM) // 4 == 4_177_920
    assert MAX_BASE64_BODY == (BASE64_LINE_LIMIT - LINE_ROOM) // 4 * 3 >= 64 * 1024 * 1024
    assert max_body_size(LINE_ROOM, False) == 0
    # Worst case in each form: all 0xFF (the array), any bytes (base64), with the rest of
    # the line using its whole room.
    headers = {"x-fill": "h" * (LINE_ROOM - 300)}
    worst = HttpRequest(
        request_id="r" * 40,
        method="POST",
        uri="/e",
        headers=headers,
        body=b"\xff" * MAX_REFERENCE_BODY,
    )
    assert len(http_request_line(worst)) - 1 <= REFERENCE_LINE_LIMIT
    b64 = HttpRequest(
        request_id="r", method="POST", uri="/e", headers=headers, body=b"\0" * MAX_BASE64_BODY
    )
    assert len(http_request_line(b64, base64_bodies=True, max_line_size=BASE64_LINE_LIMIT)) - 1 <= (
        BASE64_LINE_LIMIT
    )


def _pair(orch_ext: tuple[str, ...]) -> ConnectionPair:
    module = ModuleConnection(endpoints=(Endpoint(path="/e", methods=("POST",)),))
    orch = OrchestratorConnection(init=_init(orch_ext))
    pair = ConnectionPair(module, orch, FakeClock())
    pair.start()
    pair.pump()
    return pair


def _echo(pair: ConnectionPair, body: bytes) -> tuple[bytes, HttpResponse]:
    orch, module = pair.orchestrator, pair.module
    rid = orch.send_request("POST", "/e", {"h": "v"}, body, pair.clock.now())
    wire = orch.data_to_send()
    module.receive_data(wire, pair.clock.now())
    (event,) = [e for e in _drain(module) if isinstance(e, RequestReceived)]
    assert event.request.body == body
    module.send_response(event.request_id, 200, [("content-type", "x/y")], body)
    orch.receive_data(module.data_to_send(), pair.clock.now())
    (got,) = [e for e in _drain(orch) if isinstance(e, ResponseReceived)]
    assert got.request_id == rid
    return wire, got.response


def test_both_pywatt_sides_select_base64_bodies_and_every_byte_round_trips() -> None:
    pair = _pair(("base64_bodies", "heartbeat_ack", "http_response_op"))
    assert "base64_bodies" in pair.module.extensions
    assert "base64_bodies" in pair.orchestrator.extensions
    assert pair.orchestrator.max_body == MAX_BASE64_BODY
    for body in (b"", EVERY_BYTE, EVERY_BYTE * 300, os.urandom(5 * 1024 * 1024)):
        wire, resp = _echo(pair, body)
        assert resp.body == body
        if body:
            assert b'"body":"' + encode_base64_body(body) + b'"}' in wire


def test_reference_like_orchestrator_sees_no_extension_and_arrays() -> None:
    # A reference orchestrator lists no extensions: nothing changes on the wire.
    mod = _running_module(())
    assert mod.extensions == frozenset()
    request = HttpRequest(request_id="r1", method="POST", uri="/e", headers={}, body=EVERY_BYTE)
    mod.receive_data(encode(request) + b"\n", 1.0)
    (event,) = _drain(mod)
    assert isinstance(event, RequestReceived) and event.request.body == EVERY_BYTE
    mod.send_response("r1", 200, {}, EVERY_BYTE)
    answer = json.loads(mod.data_to_send())
    assert answer["content"]["body"] == list(EVERY_BYTE)  # the wrapper, an array body
    # A base64 string body from such a peer is not a body: 400 for the request.
    mod.receive_data(encode(request, base64_bodies=True).replace(b"r1", b"r2") + b"\n", 1.0)
    (bad,) = _drain(mod)
    assert isinstance(bad, BadLine) and bad.answered_status == 400


def test_reference_like_module_gets_arrays_even_when_offered() -> None:
    # A reference module ignores pywatt_extensions and announces none.
    orch = OrchestratorConnection(init=_init(("base64_bodies", "http_response_op")))
    orch.start(0.0)
    orch.data_to_send()
    announce = {"op": "announce", "listen": "127.0.0.1:1", "endpoints": []}
    orch.receive_data(json.dumps(announce).encode() + b"\n", 0.0)
    _drain(orch)
    assert orch.extensions == frozenset() and orch.max_body == MAX_REFERENCE_BODY
    orch.send_request("POST", "/e", {}, EVERY_BYTE, 0.0)
    line = orch.data_to_send()
    assert json.loads(line)["body"] == list(EVERY_BYTE)  # what serde reads as Vec<u8>
    reply = {
        "content": {"body": list(EVERY_BYTE), "headers": {}, "request_id": "r1"},
        "metadata": {"id": "x"},
    }
    reply["content"]["status_code"] = 200  # type: ignore[index]
    orch.receive_data(json.dumps(reply, sort_keys=True).encode() + b"\n", 0.0)
    (got,) = _drain(orch)
    assert isinstance(got, ResponseReceived) and got.response.body == EVERY_BYTE


# ------------------------------------------------------------ over the limit, at once


def test_request_too_large_for_the_line_is_refused_before_anything_is_sent() -> None:
    pair = _pair(("http_response_op",))
    orch = pair.orchestrator
    # The old 4 MiB front-door limit: 0xFF bytes encode to a line over 16 MiB.
    with pytest.raises(LocalProtocolError) as info:
        orch.send_request("POST", "/e", {}, b"\xff" * (4 * 1024 * 1024), 0.0)
    assert info.value.error_status_hint == 413
    assert orch.data_to_send() == b"" and orch.in_flight == 0
    # Up to max_body it always goes through.
    orch.send_request("POST", "/e", {}, b"\xff" * orch.max_body, 0.0)
    assert len(orch.data_to_send()) <= REFERENCE_LINE_LIMIT + 1


def test_response_too_large_is_answered_500_by_the_module() -> None:
    mod = _running_module()
    mod.receive_data(
        b'{"op":"http_request","request_id":"r1","method":"POST","uri":"/e",'
        b'"headers":{},"body":null}\n',
        1.0,
    )
    (req,) = _drain(mod)
    assert isinstance(req, RequestReceived)
    assert mod.send_response("r1", 200, {}, b"\xff" * (4 * 1024 * 1024)) is True
    out = mod.data_to_send()
    assert len(out) < 1000  # the oversized line is never written
    answer = json.loads(out)
    assert answer["request_id"] == "r1" and answer["status_code"] == 500
    (event,) = _drain(mod)
    assert isinstance(event, ResponseTooLarge) and event.request_id == "r1"
    assert event.limit == MAX_REFERENCE_BODY and mod.in_flight == 0
    text = event.describe()  # what both drivers log
    assert text.startswith("response to r1: a ") and f"(limit {MAX_REFERENCE_BODY})" in text


def test_oversized_request_line_is_answered_413_for_its_id() -> None:
    mod = _running_module()
    line = (
        b'{"op":"http_request","request_id":"big","method":"POST","uri":"/e","headers":{},'
        b'"body":[' + b"255," * (REFERENCE_LINE_LIMIT // 4) + b"255]}\n"
    )
    for i in range(0, len(line), 1 << 20):
        mod.receive_data(line[i : i + (1 << 20)], 1.0)
    events = _drain(mod)
    assert [type(e) for e in events] == [BadLine]
    assert events[0].answered_status == 413
    answer = json.loads(mod.data_to_send())
    assert answer["request_id"] == "big" and answer["status_code"] == 413


def _running_orch(extensions: tuple[str, ...]) -> OrchestratorConnection:
    orch = OrchestratorConnection(init=_init(("http_response_op",)))
    orch.start(0.0)
    orch.data_to_send()
    announce = {"op": "announce", "listen": "x", "endpoints": [], "pywatt_extensions": []}
    announce["pywatt_extensions"] = list(extensions)
    orch.receive_data(json.dumps(announce).encode() + b"\n", 0.0)
    _drain(orch)
    return orch


@pytest.mark.parametrize("shape", ["flat", "sorted-wrapper"])
def test_oversized_response_line_fails_its_request_with_502_at_once(shape: str) -> None:
    orch = _running_orch(("http_response_op",) if shape == "flat" else ())
    rid = orch.send_request("GET", "/", {}, None, 0.0)
    orch.data_to_send()
    big = b"255," * (REFERENCE_LINE_LIMIT // 4) + b"255"
    if shape == "flat":
        line = (
            b'{"op":"http_response","request_id":"%s","status_code":200,"headers":{},"body":[%s]}'
        )
        line = line % (rid.encode(), big)
    else:  # what a reference module writes: keys sorted, the body first
        line = (
            b'{"content":{"body":[%s],"headers":{"request_id":"decoy"},"request_id":"%s",'
            b'"status_code":200},"metadata":{"id":"u","properties":{"correlation_id":"%s"},'
            b'"source":"m"}}'
        ) % (big, rid.encode(), rid.encode())
    for i in range(0, len(line), 1 << 20):
        orch.receive_data(line[i : i + (1 << 20)], 1.0)
    orch.receive_data(b"\n", 1.0)
    events = _drain(orch)
    assert [type(e) for e in events] == [BadModuleLine, RequestFailed]
    failed = events[1]
    assert failed.request_id == rid and failed.status == 502  # not 504 at the deadline
    assert orch.in_flight == 0


# ------------------------------------------- defect 11: recognisable requests get 400


@pytest.mark.parametrize(
    "rest",
    [
        b'"x":' + b"[" * 6000 + b"]" * 6000 + b"}",  # deep nesting
        b'"x":' + b"9" * 5000 + b"}",  # an integer over Python's 4,300 digits
        b'"uri":"/\xff\xfe","method":"GET","headers":{},"body":null}',  # invalid UTF-8
    ],
)
def test_recognisable_http_request_gets_400_whatever_else_is_wrong(rest: bytes) -> None:
    mod = _running_module()
    mod.receive_data(b'{"op":"http_request","request_id":"bad1",' + rest + b"\n", 1.0)
    (event,) = _drain(mod)
    assert isinstance(event, BadLine) and event.answered_status == 400
    answer = json.loads(mod.data_to_send())
    assert answer["request_id"] == "bad1" and answer["status_code"] == 400


def test_scan_request_id_is_bounded_and_anchored() -> None:
    head = b'{"op":"http_request","request_id":"r7","body":[' + b"1," * 10_000
    assert scan_request_id(head) == "r7"
    assert scan_request_id(b'{"op":"heartbeat"}') is None
    assert scan_request_id(b" " * 5000 + b'{"op":"http_request","request_id":"late"}') is None
    assert scan_request_id(b'{"content":{"request_id":"w1"', op="http_response") == "w1"


# --------------------------------------------- defect 16: logging skipped lines


def test_skipped_lines_first_few_in_full_then_rate_limited_summaries() -> None:
    clock = FakeClock()
    log = SkippedLineLog(burst=3, interval=10.0, max_chars=50)
    out: list[str] = []
    for i in range(615):
        out += log.skipped(clock.now(), b"junk %d " % i + b"x" * 1000, "bad line")
        clock.advance(1.0 / 60)  # 615 lines in about 10 s
    assert len(out) == 4
    assert all(len(text) < 120 for text in out[:3])  # truncated to max_chars
    assert "1007 bytes" in out[0]
    assert out[3].startswith("skipped ") and "more malformed lines in the last 10 s" in out[3]
    assert log.flush(clock.now()) == "skipped 11 more malformed lines in the last 0 s"
    assert log.flush(clock.now()) is None
    clock.advance(30.0)  # a quiet period: full lines again
    assert log.skipped(clock.now(), b"again", "bad line") == ["bad line: b'again'"]


def test_log_throttle_says_when_its_summary_is_due() -> None:
    # The front door's accept errors use this policy; its timer logs the summary at ``due``.
    log = LogThrottle("{count} more accept errors in the last {span:.0f} s", burst=1, interval=5)
    assert log.note(0.0, "accept failed: EMFILE") == ["accept failed: EMFILE"]
    assert log.due is None
    assert log.note(1.0, "accept failed: EMFILE") == []
    assert log.note(2.0, "accept failed: EMFILE") == []
    assert log.due == 6.0
    assert log.flush(6.0) == "2 more accept errors in the last 5 s"
    assert log.due is None


# ---------------------------------------------- issue 16 point 10: the init cap


def test_init_cap_is_enforced_while_buffering() -> None:
    mod = ModuleConnection()
    mod.receive_data(b'{"orchestrator_api":"' + b"a" * MAX_INIT_LINE, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        _drain(mod)
    assert isinstance(info.value, LineTooLong) and info.value.limit == MAX_INIT_LINE


def test_line_decoder_first_line_limit_then_the_normal_one() -> None:
    dec = LineDecoder(100, max_first_line_size=10)
    dec.receive_data(b"x" * 11)
    with pytest.raises(LineTooLong):
        dec.next_line()
    assert dec.buffered_size == 0
    dec.receive_data(b"\n" + b"y" * 50 + b"\n")
    assert dec.next_line() == b"y" * 50


def test_a_header_named_body_does_not_confuse_the_body_cut() -> None:
    for base64 in (False, True):
        req = HttpRequest(
            request_id="r1",
            method="POST",
            uri="/e",
            headers={"a": "1", "body": "QUJD", "z": "[1]"},
            body=EVERY_BYTE,
        )
        line = http_request_line(req, base64_bodies=base64)[:-1]
        assert read_http_request_line(line, base64_bodies=base64) == req
        assert decode_orchestrator_to_module(line, base64_bodies=base64) == req


def test_module_call_payloads_travel_as_base64_with_the_extension() -> None:
    import uuid

    from pywatt_proto._formats import EncodingFormat
    from pywatt_proto._messages import (
        EncodedMessage,
        RoutedModuleMessage,
        RoutedModuleResponse,
        RouteToModule,
    )

    payload = EncodedMessage(data=EVERY_BYTE * 40, format=EncodingFormat.JSON)
    rid = uuid.UUID(int=7, version=4)
    messages = [
        RouteToModule(target_module_id="t", target_endpoint="/p", request_id=rid, payload=payload),
        RoutedModuleMessage(source_module_id="s", original_request_id=rid, payload=payload),
        RoutedModuleResponse(source_module_id="t", request_id=rid, payload=payload),
    ]
    for msg in messages:
        wire = encode(msg, base64_bodies=True)
        assert b'"data":"' + encode_base64_body(payload.data) + b'"' in wire
        decode = (
            decode_module_line if isinstance(msg, RouteToModule) else decode_orchestrator_to_module
        )
        assert decode(wire, base64_bodies=True) == msg
        assert encode(msg) == encode(msg, base64_bodies=False)  # the reference form
        with pytest.raises(RemoteProtocolError):  # a string is no Vec<u8> without it
            decode(wire)


def _all_items(dec: LineDecoder, data: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        if b > a:
            dec.receive_data(data[a:b])
        out += _lines(dec)
    dec.receive_eof()
    return out + _lines(dec)


def _lines(dec: LineDecoder) -> list[object]:
    out: list[object] = []
    while True:
        try:
            item = dec.next_line()
        except LineTooLong as exc:
            out.append(("too long", exc.head, exc.tail))
            continue
        except RemoteProtocolError:
            out.append("truncated")
            continue
        if item is NEED_DATA or item is END_OF_INPUT:
            return out
        out.append(item)


@pytest.mark.parametrize("seed", range(40))
def test_oversized_tail_mode_reports_the_same_items_with_head_and_tail(seed: int) -> None:
    import random

    rng = random.Random(seed)
    window = 4096
    lines = [
        bytes(rng.randrange(32, 127) for _ in range(rng.choice([1, 50, 9000, 20000])))
        for _ in range(rng.randrange(1, 6))
    ]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.7 else b"")
    cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(0, 12))]
    plain = _all_items(LineDecoder(10_000), data, cuts)
    tailed = _all_items(LineDecoder(10_000, oversized_tail=True), data, cuts)
    long_lines = [x for x in data.split(b"\n") if len(x) > 10_000]
    assert [x[:2] if isinstance(x, tuple) else x for x in plain] == [
        x[:2] if isinstance(x, tuple) else x for x in tailed
    ]
    reported = [x for x in tailed if isinstance(x, tuple)]
    assert [(h, t) for _, h, t in reported] == [(x[:window], x[-window:]) for x in long_lines]

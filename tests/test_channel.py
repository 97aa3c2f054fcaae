"""ChannelConnection (pywatt_proto's framed-channel core), through its public API only.

Time comes from a FakeClock; envelope ids from a counter, so outbound bytes are exact.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import (
    CHANNEL_MACHINE,
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    Backoff,
    BadFrame,
    ChannelConnection,
    ChannelKind,
    ChannelState,
    ChannelTarget,
    EncodingFormat,
    FrameDecoder,
    FrameTooLarge,
    Heartbeat,
    HttpRequest,
    InvalidFormatCode,
    LocalProtocolError,
    PortRequest,
    PortResponse,
    RemoteProtocolError,
    RequestReceived,
    RequestTimedOut,
    Shutdown,
    ShutdownRequested,
    TruncatedInput,
    channel_targets,
    decode_envelope,
    decode_init,
    encode,
    encode_frame,
)
from pywatt_proto.testing import FakeClock, byte_by_byte, random_splits, whole


def _ids() -> Callable[[], uuid.UUID]:
    counter = iter(range(1, 1_000_000))
    return lambda: uuid.UUID(int=next(counter), version=4)


def _id(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


def _frame(msg: object) -> bytes:
    return encode_frame(EncodingFormat.JSON, encode(msg))  # type: ignore[arg-type]


def _req(rid: str, uri: str = "/hello", method: str = "GET") -> HttpRequest:
    return HttpRequest(request_id=rid, method=method, uri=uri, headers={}, body=None)


def _open(clock: FakeClock | None = None, **kwargs: object) -> ChannelConnection:
    now = clock.now() if clock is not None else 0.0
    conn = ChannelConnection(id_factory=_ids(), rng=random.Random(7), **kwargs)  # type: ignore[arg-type]
    conn.start_connect(now)
    conn.connected(now)
    return conn


def _drain(conn: ChannelConnection) -> list[object]:
    out: list[object] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return out
        out.append(ev)


def _feed(conn: ChannelConnection, chunks: list[bytes], now: float = 0.0) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        conn.receive_data(chunk, now)
        events += _drain(conn)
    return events


def _env(n: int, content: bytes) -> bytes:
    payload = b'{"id":"' + _id(n).encode() + b'","content":' + content + b',"metadata":{}}'
    return encode_frame(EncodingFormat.JSON, payload)


ACK = b'{"op":"heartbeat_ack"}'

# ------------------------------------------------------------------- input splits

STREAM = (
    _frame(Heartbeat())
    + _frame(_req("a"))
    + encode_frame(EncodingFormat.JSON, b"not json")
    + _frame(PortResponse(request_id="p", success=True, port=8080, error_message=None))
    + _frame(Heartbeat())
)


@pytest.mark.parametrize(
    "split",
    [whole, byte_by_byte, lambda d: random_splits(d, random.Random(3))],
    ids=["whole", "byte_by_byte", "random"],
)
def test_results_do_not_depend_on_how_input_is_split(split: Callable[[bytes], list[bytes]]) -> None:
    conn = _open()
    events = _feed(conn, split(STREAM))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RequestReceived", "BadFrame", "PortResponse"]
    assert conn.data_to_send() == _env(1, ACK) + _env(2, ACK)
    assert conn.next_event() is NEED_DATA


def test_heartbeat_ack_envelope_bytes() -> None:
    conn = _open()
    assert _feed(conn, [_frame(Heartbeat())]) == []
    out = conn.data_to_send()
    body = (
        b'{"id":"00000000-0000-4000-8000-000000000001",'
        b'"content":{"op":"heartbeat_ack"},"metadata":{}}'
    )
    assert out == len(body).to_bytes(4, "big") + b"\x01" + body
    assert conn.data_to_send() == b""


def test_default_ids_are_random_v4_from_the_injected_rng() -> None:
    a = ChannelConnection(rng=random.Random(1))
    b = ChannelConnection(rng=random.Random(1))
    for c in (a, b):
        c.start_connect(0.0)
        c.connected(0.0)
        _feed(c, [_frame(Heartbeat()) * 2])
    out = a.data_to_send()
    assert out == b.data_to_send()
    first, second = out[6 + 6 : 6 + 6 + 36], out[len(out) // 2 + 12 : len(out) // 2 + 48]
    assert uuid.UUID(first.decode()).version == 4
    assert first != second


def test_http_request_is_surfaced_and_answered_with_an_enveloped_http_response() -> None:
    conn = _open()
    [ev] = _feed(conn, [_frame(_req("r-1", "/hello?x=1"))])
    assert isinstance(ev, RequestReceived)
    assert (ev.request_id, ev.path, ev.query) == ("r-1", "/hello", "x=1")
    assert ev.to_router_request().method == "GET"
    assert conn.in_flight == 1
    assert conn.send_response("r-1", 200, [("Content-Type", "text/plain"), ("X-A", "1")], b"hi")
    content = (
        b'{"op":"http_response","request_id":"r-1","status_code":200,'
        b'"headers":{"content-type":"text/plain","x-a":"1"},"body":[104,105]}'
    )
    assert conn.data_to_send() == _env(1, content)
    assert conn.in_flight == 0
    with pytest.raises(LocalProtocolError):
        conn.send_response("r-1", 200, {}, b"")  # answered twice


def test_absolute_form_uri_is_reduced_to_origin_form() -> None:
    conn = _open()
    [ev] = _feed(conn, [_frame(_req("r", "http://example.com/a/b?q"))])
    assert isinstance(ev, RequestReceived)
    assert (ev.path, ev.query) == ("/a/b", "q")


def test_envelope_and_non_json_labels_are_accepted() -> None:
    conn = _open()
    hb = encode(Heartbeat())
    frames = (
        _env(99, hb)
        + encode_frame(EncodingFormat.BINARY, hb)
        + encode_frame(EncodingFormat.BASE64, base64.b64encode(hb))
    )
    assert _feed(conn, [frames]) == []
    assert conn.data_to_send() == _env(1, ACK) + _env(2, ACK) + _env(3, ACK)


@pytest.mark.parametrize(
    ("fmt", "payload"),
    [
        (EncodingFormat.JSON, b"{"),
        (EncodingFormat.JSON, b'{"op":"nope"}'),
        (EncodingFormat.JSON, b'{"id":"x","content":{"op":"heartbeat"}}'),
        (EncodingFormat.BINARY, b"\xff\x00"),
        (EncodingFormat.BASE64, b"not base64!"),
    ],
)
def test_bad_messages_are_skipped_and_reported(fmt: EncodingFormat, payload: bytes) -> None:
    conn = _open()
    events = _feed(conn, [encode_frame(fmt, payload) + _frame(Heartbeat())])
    [bad] = events
    assert isinstance(bad, BadFrame)
    assert (bad.format, bad.payload, bad.answered_status) == (fmt, payload, None)
    assert conn.data_to_send() == _env(1, ACK)  # the next frame is still handled
    assert conn.state is ChannelState.OPEN


def test_malformed_http_request_with_an_id_is_answered_400() -> None:
    conn = _open()
    [bad] = _feed(
        conn, [encode_frame(EncodingFormat.JSON, b'{"op":"http_request","request_id":"z"}')]
    )
    assert isinstance(bad, BadFrame) and bad.answered_status == 400
    assert b'"request_id":"z","status_code":400' in conn.data_to_send()


@pytest.mark.parametrize(
    ("fmt", "payload", "status"),
    [
        # spec/limits.md section 3 (applied per channel, spec/framed.md 7.3): the bounded scan
        # of the first bytes decides, whatever else is wrong with the frame
        (EncodingFormat.JSON, b'{"op":"http_request","request_id":"u","uri":"\xff"}', 400),
        (
            EncodingFormat.JSON,
            b'{"op":"http_request","request_id":"n","x":' + b"9" * 5000 + b"}",
            400,
        ),
        (EncodingFormat.JSON, b'{"id":"e","content":{"op":"http_request","request_id":"v"}}', 400),
        (EncodingFormat.BINARY, b'{"op":"http_request","request_id":"w"}', 400),
        # an id with an escape is not recognised: the frame is only skipped
        (EncodingFormat.JSON, b'{"op":"http_request","request_id":"a\\u0041"}', None),
    ],
)
def test_malformed_frames_get_the_stdio_lines_answer(
    fmt: EncodingFormat, payload: bytes, status: int | None
) -> None:
    conn = _open()
    [bad] = _feed(conn, [encode_frame(fmt, payload)])
    assert isinstance(bad, BadFrame) and bad.answered_status == status
    assert (b'"status_code":400' in conn.data_to_send()) is (status == 400)


def test_duplicate_invalid_and_excess_requests_are_refused() -> None:
    conn = _open(max_in_flight=2)
    events = _feed(
        conn,
        [
            _frame(_req("a"))
            + _frame(_req("a"))  # duplicate while in flight -> 400
            + _frame(_req("b", method="GE T"))  # not a token -> 400
            + _frame(_req("c", uri="relative"))  # not origin-form -> 400
            + _frame(_req("d"))
            + _frame(_req("e"))  # third in flight -> 503
        ],
    )
    received = [e.request_id for e in events if isinstance(e, RequestReceived)]
    assert received == ["a", "d"]
    assert [e.answered_status for e in events if isinstance(e, BadFrame)] == [400, 400, 400]
    out = conn.data_to_send()
    for rid, status in [("a", 400), ("b", 400), ("c", 400), ("e", 503)]:
        assert f'"request_id":"{rid}","status_code":{status}'.encode() in out
    assert conn.send_response("a", 204, {}, None)  # the original still gets its answer


# ------------------------------------------------------------------- fatal and EOF


@pytest.mark.parametrize(
    ("header", "error"),
    [(b"\x00\x00\x00\x02\x07", InvalidFormatCode), (b"\x7f\xff\xff\xff\x01", FrameTooLarge)],
)
def test_fatal_frame_errors_fail_the_channel(header: bytes, error: type[Exception]) -> None:
    conn = _open()
    conn.receive_data(_frame(_req("a")) + header + b"{}", 0.0)
    ev = conn.next_event()
    assert isinstance(ev, RequestReceived)  # frames before the bad header come first
    with pytest.raises(error):
        conn.next_event()
    assert conn.state is ChannelState.FAILED
    assert isinstance(conn.error, error)
    assert conn.next_event() is END_OF_INPUT
    assert conn.send_response("a", 200, {}, b"") is False  # abandoned with the stream
    assert conn.connection_lost(1.0, "closed after fatal error") is None
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x", 1.0)
    with pytest.raises(LocalProtocolError):
        conn.start_connect(2.0)


def test_end_of_stream_inside_a_frame_is_reported_then_reconnect_is_scheduled() -> None:
    conn = _open()
    conn.receive_data(_frame(Heartbeat())[:-2], 0.0)
    conn.receive_eof()
    [bad] = _drain(conn)
    assert isinstance(bad, BadFrame) and isinstance(bad.error, TruncatedInput)
    assert conn.next_event() is END_OF_INPUT
    at = conn.connection_lost(5.0, None)
    assert at is not None and 5.0 <= at < 5.1
    assert conn.state is ChannelState.BACKING_OFF
    assert conn.last_failure == "connection closed by the peer"


# ------------------------------------------------------------------- shutdown


def test_shutdown_drains_in_flight_and_refuses_new_requests() -> None:
    conn = _open()
    events = _feed(conn, [_frame(_req("a")) + _frame(Shutdown()) + _frame(_req("b"))])
    assert [type(e) for e in events] == [RequestReceived, ShutdownRequested]
    assert conn.state is ChannelState.CLOSING
    assert b'"request_id":"b","status_code":503' in conn.data_to_send()
    assert _feed(conn, [_frame(Shutdown()) + _frame(Heartbeat())]) == []  # once only; acked
    assert conn.data_to_send() == _env(2, ACK)
    assert conn.send_response("a", 200, {}, b"ok")
    assert conn.connection_lost(1.0) is None  # no reconnect after shutdown
    state: ChannelState = conn.state  # (mypy narrowed it above)
    assert state is ChannelState.CLOSED


def test_begin_shutdown_before_connecting_closes() -> None:
    conn = ChannelConnection()
    conn.begin_shutdown()
    assert conn.state is ChannelState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.start_connect(0.0)
    conn.close()
    assert conn.state is ChannelState.CLOSED


# ------------------------------------------------------------------- timers


def test_request_deadline_answers_504_and_drops_the_late_answer() -> None:
    clock = FakeClock(100.0)
    conn = _open(clock, request_timeout=2.0)
    assert conn.get_timer() is None
    _feed(conn, [_frame(_req("a"))], clock.now())
    clock.advance(1.0)
    _feed(conn, [_frame(_req("b"))], clock.now())
    assert conn.get_timer() == 102.0
    conn.handle_timer(clock.advance(1.5))
    assert _drain(conn) == [RequestTimedOut(request_id="a")]
    assert b'"request_id":"a","status_code":504' in conn.data_to_send()
    assert conn.get_timer() == 103.0
    assert conn.send_response("a", 200, {}, b"late") is False
    assert conn.data_to_send() == b""
    assert conn.send_response("b", 200, {}, b"") is True


def test_a_refused_answer_leaves_the_request_in_flight_with_its_deadline() -> None:
    clock = FakeClock(100.0)
    conn = _open(clock, request_timeout=2.0)
    _feed(conn, [_frame(_req("a"))], clock.now())
    clock.advance(1.0)
    _feed(conn, [_frame(_req("b"))], clock.now())
    with pytest.raises(LocalProtocolError):
        conn.send_response("a", 70000, {}, b"")
    assert conn.in_flight == 2
    assert conn.get_timer() == 102.0  # "a" keeps its place and its deadline
    conn.handle_timer(102.0)
    assert _drain(conn) == [RequestTimedOut(request_id="a")]


@pytest.mark.parametrize(
    ("status", "headers", "body", "field"),
    [("200", {}, b"", "status"), (200, [("a",)], b"", "headers"), (200, {}, "text", "body")],
)
def test_an_answer_of_the_wrong_type_is_refused_like_on_stdio(
    status: object, headers: object, body: object, field: str
) -> None:
    # the stdio link's checks (checked_answer): a LocalProtocolError naming the field, and
    # the request keeps waiting for its answer or its 504 (was a TypeError/ValueError that
    # left it answered by nobody)
    conn = _open(request_timeout=5.0)
    _feed(conn, [_frame(_req("a"))])
    with pytest.raises(LocalProtocolError) as caught:
        conn.send_response("a", status, headers, body)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert conn.in_flight == 1 and conn.get_timer() == 5.0
    assert conn.send_response("a", 204, (("x-a", "1"), ("X-A", "2")), None) is True
    assert b'"headers":{"x-a":"1, 2"}' in conn.data_to_send()


def test_no_deadline_when_request_timeout_is_none() -> None:
    conn = _open(request_timeout=None)
    _feed(conn, [_frame(_req("a"))])
    assert conn.get_timer() is None


# ------------------------------------------------------------------- reconnect schedule


def test_first_connect_is_bounded_and_jittered() -> None:
    clock = FakeClock()
    policy = Backoff(base=1.0, factor=2.0, cap=3.0, max_attempts=4, jitter=True)
    conn = ChannelConnection(connect_backoff=policy, rng=random.Random(11))
    waits: list[float] = []
    while True:
        conn.start_connect(clock.now())
        at = conn.connect_failed(clock.now(), "refused")
        if at is None:
            break
        assert conn.state is ChannelState.BACKING_OFF and conn.retry_at == at
        waits.append(at - clock.now())
        clock.set(at)
    assert conn.state is ChannelState.FAILED
    assert conn.last_failure == "refused" and conn.attempts == 4
    assert len(waits) == 3
    for wait, ceiling in zip(waits, [1.0, 2.0, 3.0], strict=True):
        assert 0.0 <= wait < ceiling
    assert len(set(waits)) == 3  # jitter: not lock-step
    with pytest.raises(LocalProtocolError):
        conn.start_connect(clock.now())


def test_same_seed_same_schedule_and_no_jitter_is_exact() -> None:
    def schedule(conn: ChannelConnection) -> list[float | None]:
        out: list[float | None] = []
        for _ in range(3):
            conn.start_connect(0.0)
            out.append(conn.connect_failed(0.0, "x"))
        return out

    policy = Backoff(base=0.5, factor=2.0, cap=10.0, max_attempts=None, jitter=True)
    a = schedule(ChannelConnection(connect_backoff=policy, rng=random.Random(5)))
    b = schedule(ChannelConnection(connect_backoff=policy, rng=random.Random(5)))
    assert a == b
    exact = Backoff(base=0.5, factor=2.0, cap=10.0, max_attempts=None, jitter=False)
    assert schedule(ChannelConnection(connect_backoff=exact)) == [0.5, 1.0, 2.0]


def test_after_a_connection_the_reconnect_policy_applies_and_success_resets_it() -> None:
    clock = FakeClock()
    reconnect = Backoff(base=1.0, factor=2.0, cap=8.0, max_attempts=3, jitter=False)
    conn = ChannelConnection(reconnect_backoff=reconnect, id_factory=_ids())
    conn.start_connect(clock.now())
    conn.connected(clock.now())
    assert conn.connections == 1
    assert conn.connection_lost(clock.advance(10.0), "reset") == 11.0  # loss = failure 1
    clock.set(11.0)
    conn.start_connect(clock.now())
    assert conn.connect_failed(11.0, "refused") == 13.0
    conn.start_connect(13.0)
    conn.connected(13.0)  # success: count reset
    assert conn.attempts == 0 and conn.connections == 2
    _feed(conn, [_frame(Heartbeat())], 13.0)  # a fresh decoder and output buffer
    assert conn.data_to_send() == _env(1, ACK)
    assert conn.connection_lost(20.0) == 21.0
    conn.start_connect(21.0)
    assert conn.connect_failed(21.0, "refused") == 23.0
    conn.start_connect(23.0)
    assert conn.connect_failed(23.0, "refused") is None  # 3 attempts used up
    assert conn.state is ChannelState.FAILED


def test_connection_loss_abandons_in_flight_requests() -> None:
    conn = _open()
    _feed(conn, [_frame(_req("a"))])
    assert conn.connection_lost(0.0, "reset") is not None
    assert conn.in_flight == 0
    assert conn.send_response("a", 200, {}, b"") is False
    assert conn.next_event() is END_OF_INPUT


# ------------------------------------------------------------------- misuse, state table


def test_calls_in_the_wrong_state_raise() -> None:
    conn = ChannelConnection()
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x", 0.0)
    with pytest.raises(LocalProtocolError):
        conn.send(PortRequest(request_id="p", specific_port=None))
    with pytest.raises(LocalProtocolError):
        conn.connected(0.0)
    with pytest.raises(LocalProtocolError):
        conn.connect_failed(0.0, "x")
    with pytest.raises(LocalProtocolError):
        conn.connection_lost(0.0)
    assert conn.next_event() is END_OF_INPUT
    conn.receive_eof()  # no-op without a connection
    with pytest.raises(LocalProtocolError):
        ChannelConnection(max_in_flight=0)


def test_send_wraps_other_messages_and_refuses_managed_ones() -> None:
    conn = _open()
    conn.send(PortRequest(request_id="p", specific_port=None))
    assert conn.data_to_send() == _env(1, encode(PortRequest(request_id="p", specific_port=None)))
    from pywatt_proto import HeartbeatAck, HttpResponse

    for msg in (
        HeartbeatAck(),
        HttpResponse(request_id="x", status_code=200, headers={}, body=b""),
    ):
        with pytest.raises(LocalProtocolError):
            conn.send(msg)


def test_state_diagram_comes_from_the_table() -> None:
    text = CHANNEL_MACHINE.diagram()
    assert text.startswith("stateDiagram-v2\n")
    assert "OPEN --> CLOSING: SHUTDOWN" in text
    assert "OPEN --> FAILED: FATAL" in text


# ------------------------------------------------------------------- targets from init


def test_channel_targets_from_init() -> None:
    init = decode_init(
        b'{"orchestrator_api":"http://x","module_id":"m","env":{},"listen":"127.0.0.1:1",'
        b'"tcp_channel":{"address":"127.0.0.1:9000","tls_enabled":true,"required":true},'
        b'"ipc_channel":{"socket_path":"/tmp/o.sock","required":false}}'
    )
    tcp, ipc = channel_targets(init)
    assert tcp.kind is ChannelKind.TCP and str(tcp.address) == "127.0.0.1:9000"
    assert tcp.required and tcp.tls
    assert tcp.describe() == "TCP channel 127.0.0.1:9000"
    assert ipc == ChannelTarget(kind=ChannelKind.IPC, socket_path="/tmp/o.sock", required=False)
    assert ipc.describe() == "IPC channel /tmp/o.sock"
    bare = decode_init(b'{"orchestrator_api":"http://x","module_id":"m","env":{},"listen":"x"}')
    assert channel_targets(bare) == ()
    with pytest.raises(LocalProtocolError):
        ChannelTarget(kind=ChannelKind.TCP)
    with pytest.raises(LocalProtocolError):
        ChannelTarget(kind=ChannelKind.IPC)


# ------------------------------------------------------------------- properties

_GOOD_FRAMES = [
    _frame(Heartbeat()),
    _frame(Shutdown()),
    _frame(_req("a")),
    _frame(_req("b")),
    encode_frame(EncodingFormat.JSON, b'{"op":"http_request","request_id":"c"}'),
    encode_frame(EncodingFormat.BINARY, b"\x00"),
]

_OPS = st.one_of(
    st.tuples(st.just("data"), st.one_of(st.sampled_from(_GOOD_FRAMES), st.binary(min_size=1))),
    st.tuples(st.just("eof"), st.none()),
    st.tuples(
        st.sampled_from(["connect", "connected", "failed", "lost", "shutdown", "close"]), st.none()
    ),
    st.tuples(st.just("timer"), st.floats(min_value=0, max_value=100)),
    st.tuples(st.just("respond"), st.sampled_from(["a", "b", "zz"])),
)


@given(st.lists(_OPS, max_size=40))
def test_any_call_sequence_is_legal_or_a_local_error(ops: list[tuple[str, object]]) -> None:
    """Every call either succeeds or raises LocalProtocolError (next_event may also raise
    the two fatal framing errors); output is always whole enveloped frames."""
    conn = ChannelConnection(
        id_factory=_ids(), rng=random.Random(0), max_in_flight=2, request_timeout=5.0
    )
    now = 0.0
    out = FrameDecoder()
    for op, arg in ops:
        now += 1.0
        try:
            if op == "data":
                conn.receive_data(arg, now)  # type: ignore[arg-type]
            elif op == "eof":
                conn.receive_eof()
            elif op == "connect":
                conn.start_connect(now)
            elif op == "connected":
                conn.connected(now)
            elif op == "failed":
                conn.connect_failed(now, "x")
            elif op == "lost":
                conn.connection_lost(now, "x")
            elif op == "shutdown":
                conn.begin_shutdown()
            elif op == "close":
                conn.close()
            elif op == "timer":
                conn.handle_timer(now + float(arg))  # type: ignore[arg-type]
            elif op == "respond":
                conn.send_response(str(arg), 200, {}, b"")
        except LocalProtocolError:
            pass
        try:
            _drain(conn)
        except (FrameTooLarge, InvalidFormatCode):
            assert conn.state is ChannelState.FAILED
        assert isinstance(conn.state, ChannelState)
        assert conn.in_flight <= 2
        data = conn.data_to_send()
        if data:
            out.receive_data(data)
    while True:
        frame = out.next_frame()
        if frame is NEED_DATA:
            break
        assert not isinstance(frame, type(END_OF_INPUT))
        decode_envelope(frame.payload, content="module_to_orchestrator")  # type: ignore[union-attr]


@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20))
def test_random_bytes_never_raise_anything_else(chunks: list[bytes]) -> None:
    conn = _open(max_frame_size=1024)
    for chunk in chunks:
        try:
            conn.receive_data(chunk, 0.0)
        except LocalProtocolError:
            assert conn.state is ChannelState.FAILED
            return
        try:
            events = _drain(conn)
        except RemoteProtocolError as exc:
            assert isinstance(exc, FrameTooLarge | InvalidFormatCode)
            return
        assert all(not isinstance(e, BaseException) for e in events)
    assert DEFAULT_MAX_FRAME_SIZE > 1024

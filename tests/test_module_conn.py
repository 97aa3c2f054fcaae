"""ModuleConnection (pure module side) driven through its public API with a fake clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import LocalProtocolError, RemoteProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import Endpoint, PortRequest, PortResponse
from pywatt_proto._module import (
    Announced,
    BadLine,
    InitReceived,
    ModuleConnection,
    ModuleState,
    RequestReceived,
    RequestTimedOut,
    RotationRequested,
    SecretFailed,
    SecretUnavailable,
    SecretUpdated,
    ShutdownRequested,
    join_headers,
)
from pywatt_proto.testing import SPLITTERS, FakeClock

ENDPOINTS = (
    Endpoint(path="/hello", methods=("GET",)),
    Endpoint(path="/admin", methods=("GET", "POST"), auth="jwt"),
)
FLAT = ("http_response_op", "heartbeat_ack")


def init_line(extensions: tuple[str, ...] | None = FLAT, *, op: bool = False) -> bytes:
    blob: dict[str, Any] = {
        "orchestrator_api": "http://127.0.0.1:9900",
        "module_id": "m1",
        "env": {},
        "listen": "127.0.0.1:4102",
    }
    if op:
        blob = {"op": "init", **blob}
    if extensions is not None:
        blob["pywatt_extensions"] = list(extensions)
    return json.dumps(blob).encode() + b"\n"


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def req(rid: str, method: str = "GET", uri: str = "/hello", body: list[int] | None = None) -> bytes:
    return line(
        {
            "op": "http_request",
            "request_id": rid,
            "method": method,
            "uri": uri,
            "headers": {"host": "x"},
            "body": body,
        }
    )


def drain(conn: ModuleConnection) -> list[Any]:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return out
        out.append(ev)


def sent(conn: ModuleConnection) -> list[dict[str, Any]]:
    data = conn.data_to_send()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(x) for x in data.splitlines()]


def running(
    clock: FakeClock | None = None, *, extensions: tuple[str, ...] | None = FLAT, **kw: Any
) -> ModuleConnection:
    clock = clock or FakeClock()
    conn = ModuleConnection(endpoints=ENDPOINTS, **kw)
    conn.receive_data(init_line(extensions), clock.now())
    drain(conn)
    sent(conn)
    assert conn.state is ModuleState.RUNNING
    return conn


# ---------------------------------------------------------------- handshake


@pytest.mark.parametrize("split", SPLITTERS)
@pytest.mark.parametrize("op", [False, True])
def test_init_bare_or_tagged_announces_routes(split: Any, op: bool) -> None:
    conn = ModuleConnection(endpoints=ENDPOINTS)
    events = []
    for chunk in split(init_line(op=op)):
        conn.receive_data(chunk, 0.0)
        events += drain(conn)
    assert [type(e) for e in events] == [InitReceived, Announced]
    assert events[0].extensions == frozenset(FLAT)
    assert conn.state is ModuleState.RUNNING
    (announce,) = sent(conn)
    assert announce == {
        "op": "announce",
        "listen": "127.0.0.1:4102",
        "endpoints": [
            {"path": "/hello", "methods": ["GET"]},
            {"path": "/admin", "methods": ["GET", "POST"], "auth": "jwt"},
        ],
        "pywatt_extensions": ["heartbeat_ack", "http_response_op"],
    }


def test_unknown_extensions_are_not_echoed_and_none_means_no_key() -> None:
    conn = ModuleConnection()
    conn.receive_data(init_line(("identify", "future_thing")), 0.0)
    drain(conn)
    (announce,) = sent(conn)
    assert "pywatt_extensions" not in announce
    assert conn.extensions == frozenset()


def test_invalid_init_is_fatal() -> None:
    conn = ModuleConnection()
    conn.receive_data(b'{"module_id": 5}\n', 0.0)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ModuleState.ERROR
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_eof_before_init_is_a_remote_error() -> None:
    conn = ModuleConnection()
    conn.receive_data(b'{"orchestrator_api":', 0.0)
    conn.receive_eof()
    with pytest.raises(RemoteProtocolError):
        drain(conn)
    assert conn.state is ModuleState.ERROR


# ------------------------------------------------------------------- http


def test_request_is_converted_and_answered_flat() -> None:
    conn = running()
    conn.receive_data(req("r-1", uri="/hello?x=1&y=2", body=[0, 255]), 1.0)
    (ev,) = drain(conn)
    assert isinstance(ev, RequestReceived)
    assert (ev.request_id, ev.path, ev.query) == ("r-1", "/hello", "x=1&y=2")
    r = ev.to_router_request()
    assert (r.method, r.path, r.query_string, r.body) == ("GET", "/hello", "x=1&y=2", b"\x00\xff")
    assert r.headers.get("Host") == "x"
    assert conn.in_flight == 1
    assert conn.send_response("r-1", 200, [("X-A", "1"), ("x-a", "2")], b"ok")
    assert sent(conn) == [
        {
            "op": "http_response",
            "request_id": "r-1",
            "status_code": 200,
            "headers": {"x-a": "1, 2"},
            "body": [111, 107],
        }
    ]
    assert conn.in_flight == 0
    with pytest.raises(LocalProtocolError):
        conn.send_response("r-1", 200, {}, b"")


def test_without_extension_responses_use_the_reference_wrapper() -> None:
    conn = running(extensions=None)
    conn.receive_data(req("r-9"), 0.0)
    drain(conn)
    conn.send_response("r-9", 201, {}, None)
    (out,) = sent(conn)
    assert set(out) == {"content", "metadata"}
    assert out["content"] == {"request_id": "r-9", "status_code": 201, "headers": {}, "body": []}
    assert out["metadata"]["source"] == "m1"
    assert out["metadata"]["properties"] == {"correlation_id": "r-9"}
    assert len(out["metadata"]["id"]) == 36


def test_heartbeat_is_always_acknowledged() -> None:
    conn = running(extensions=None)
    conn.receive_data(line({"op": "heartbeat"}), 0.0)
    assert drain(conn) == []
    assert sent(conn) == [{"op": "heartbeat_ack"}]


def test_duplicate_id_in_flight_answered_400_and_original_still_served() -> None:
    conn = running()
    conn.receive_data(req("d") + req("d"), 0.0)
    events = drain(conn)
    assert [type(e) for e in events] == [RequestReceived, BadLine]
    assert events[1].answered_status == 400
    assert [m["status_code"] for m in sent(conn)] == [400]
    assert conn.send_response("d", 200, {}, b"")
    assert sent(conn)[0]["status_code"] == 200


def test_overflow_beyond_max_in_flight_is_503_not_dropped() -> None:
    conn = running(max_in_flight=2)
    conn.receive_data(req("a") + req("b") + req("c"), 0.0)
    events = drain(conn)
    assert [e.request_id for e in events] == ["a", "b"]
    assert sent(conn) == [
        {
            "op": "http_response",
            "request_id": "c",
            "status_code": 503,
            "headers": {"content-type": "application/json"},
            "body": list(b'{"error":"too many requests in flight"}'),
        }
    ]


def test_deadline_answers_504_and_drops_late_result() -> None:
    clock = FakeClock()
    conn = running(clock, request_timeout=10.0)
    conn.receive_data(req("slow"), clock.now())
    drain(conn)
    clock.advance(3)
    conn.receive_data(req("later"), clock.now())
    drain(conn)
    assert conn.get_timer() == 10.0
    clock.advance(6.9)
    conn.handle_timer(clock.now())
    assert drain(conn) == [] and sent(conn) == []
    clock.set(10.0)
    conn.handle_timer(clock.now())
    assert drain(conn) == [RequestTimedOut(request_id="slow")]
    assert [(m["request_id"], m["status_code"]) for m in sent(conn)] == [("slow", 504)]
    assert conn.get_timer() == 13.0
    assert conn.send_response("slow", 200, {}, b"late") is False
    assert sent(conn) == []
    assert conn.send_response("later", 200, {}, b"") is True


def test_bad_method_is_answered_400() -> None:
    conn = running()
    conn.receive_data(req("m", method="GE T"), 0.0)
    (ev,) = drain(conn)
    assert isinstance(ev, BadLine) and ev.answered_status == 400
    assert sent(conn)[0]["status_code"] == 400


@pytest.mark.parametrize(
    "bad",
    [
        b"not json\n",
        b'{"op":"nope"}\n',
        b'{"op":"http_request","request_id":"x","method":"GET"}\n',  # missing uri/headers
        b'{"op":"secret","name":1,"value":"v"}\n',
        b"[1,2,3]\n",
    ],
)
def test_malformed_lines_are_reported_and_skipped(bad: bytes) -> None:
    conn = running()
    conn.receive_data(bad + req("ok"), 0.0)
    events = drain(conn)
    assert isinstance(events[0], BadLine)
    assert isinstance(events[1], RequestReceived)
    statuses = [m["status_code"] for m in sent(conn)]
    # an http_request that decodes far enough to have an id is answered 400
    assert statuses == ([400] if b"http_request" in bad else [])


@given(st.binary(max_size=200))
def test_any_line_never_crashes_the_running_connection(data: bytes) -> None:
    conn = running()
    conn.receive_data(data.replace(b"\n", b" ") + b"\n" + req("after"), 0.0)
    events = drain(conn)
    assert any(isinstance(e, RequestReceived) and e.request_id == "after" for e in events)
    assert conn.state is ModuleState.RUNNING


# ----------------------------------------------------------------- secrets


def test_concurrent_get_secret_shares_one_round_trip() -> None:
    clock = FakeClock()
    conn = running(clock)
    assert conn.get_secret("DB", clock.now()) is None
    assert conn.get_secret("DB", clock.now()) is None
    assert sent(conn) == [{"op": "get_secret", "name": "DB"}]
    conn.receive_data(line({"op": "secret", "name": "DB", "value": "pg://"}), clock.now())
    assert drain(conn) == [SecretUpdated(name="DB", value="pg://", rotation_id=None)]
    assert conn.get_secret("DB", clock.now()) == "pg://"
    assert sent(conn) == []


def test_a_secret_name_too_large_for_a_line_is_not_left_pending() -> None:
    conn = running()
    with pytest.raises(LocalProtocolError) as caught:
        conn.get_secret("N" * (16 * 1024 * 1024), 0.0)
    assert caught.value.error_status_hint == 413
    assert conn.get_timer() is None and conn.data_to_send() == b""
    conn.handle_timer(100.0)
    assert drain(conn) == []  # no SecretFailed for a request never sent


def test_secret_deadline_reports_failure() -> None:
    clock = FakeClock()
    conn = running(clock, secret_timeout=5.0)
    conn.get_secret("X", clock.now())
    sent(conn)
    assert conn.get_timer() == 5.0
    clock.advance(5)
    conn.handle_timer(clock.now())
    assert drain(conn) == [SecretFailed(name="X", reason="timed out")]
    conn.get_secret("X", clock.now())  # a fresh request after a failure
    assert sent(conn) == [{"op": "get_secret", "name": "X"}]


def test_prefetch_delays_announce_until_answered() -> None:
    conn = ModuleConnection(endpoints=ENDPOINTS, prefetch=["A", "B"])
    conn.receive_data(init_line(), 0.0)
    assert [type(e) for e in drain(conn)] == [InitReceived]
    assert conn.state is ModuleState.PREFETCHING
    assert sent(conn) == [{"op": "get_secret", "name": "A"}, {"op": "get_secret", "name": "B"}]
    conn.receive_data(req("early"), 0.1)
    drain(conn)
    assert sent(conn)[0]["status_code"] == 503
    conn.receive_data(line({"op": "secret", "name": "B", "value": "b"}), 0.2)
    conn.receive_data(line({"op": "secret", "name": "A", "value": "a"}), 0.3)
    assert [type(e) for e in drain(conn)] == [SecretUpdated, SecretUpdated, Announced]
    assert sent(conn)[0]["op"] == "announce"
    assert conn.cached_secret("A") == "a"


def test_prefetch_timeout_still_announces() -> None:
    clock = FakeClock()
    conn = ModuleConnection(prefetch=["A"], secret_timeout=2.0)
    conn.receive_data(init_line(), clock.now())
    drain(conn)
    sent(conn)
    clock.advance(2.0)
    conn.handle_timer(clock.now())
    assert [type(e) for e in drain(conn)] == [SecretFailed, Announced]
    assert conn.state is ModuleState.RUNNING


def test_rotation_evicts_and_is_acked_success_or_error() -> None:
    conn = running()
    conn.receive_data(line({"op": "secret", "name": "K", "value": "v1"}), 0.0)
    drain(conn)
    conn.receive_data(line({"op": "rotated", "keys": ["K"], "rotation_id": "rot-1"}), 0.0)
    conn.receive_data(line({"op": "rotated", "keys": [], "rotation_id": "rot-2"}), 0.0)
    assert drain(conn) == [
        RotationRequested(rotation_id="rot-1", keys=("K",)),
        RotationRequested(rotation_id="rot-2", keys=()),
    ]
    assert conn.cached_secret("K") is None
    conn.ack_rotation("rot-1")
    conn.ack_rotation("rot-2", error="callback failed")
    assert sent(conn) == [
        {"op": "rotation_ack", "rotation_id": "rot-1", "status": "success"},
        {
            "op": "rotation_ack",
            "rotation_id": "rot-2",
            "status": "error",
            "message": "callback failed",
        },
    ]
    with pytest.raises(LocalProtocolError):
        conn.ack_rotation("rot-1")


# ---------------------------------------------------------------- lifecycle


def test_shutdown_with_requests_in_flight_drains_then_closes() -> None:
    conn = running()
    conn.receive_data(req("a") + line({"op": "shutdown"}) + req("b"), 0.0)
    events = drain(conn)
    assert [type(e) for e in events] == [RequestReceived, ShutdownRequested]
    assert conn.state is ModuleState.CLOSING
    assert [(m["request_id"], m["status_code"]) for m in sent(conn)] == [("b", 503)]
    conn.send_response("a", 200, {}, b"")
    assert conn.state is ModuleState.CLOSED
    assert sent(conn)[0]["request_id"] == "a"


def test_eof_finishes_in_flight_then_closes() -> None:
    conn = running()
    conn.receive_data(req("a"), 0.0)
    conn.receive_eof()
    assert [type(e) for e in drain(conn)] == [RequestReceived]
    assert conn.next_event() is END_OF_INPUT
    assert conn.state is ModuleState.CLOSING
    conn.send_response("a", 204, {}, None)
    assert conn.state is ModuleState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x", 0.0)


def test_eof_fails_pending_secret_requests() -> None:
    conn = running()
    conn.get_secret("S", 0.0)
    conn.receive_eof()
    assert drain(conn) == [SecretFailed(name="S", reason="input closed")]
    assert conn.state is ModuleState.CLOSED


def test_secret_asked_after_end_of_input_fails_at_once() -> None:
    # No answer can arrive once stdin is closed: refused, nothing sent, nothing pending.
    conn = running()
    conn.receive_data(req("a"), 0.0)
    conn.receive_eof()
    assert [type(e) for e in drain(conn)] == [RequestReceived]
    with pytest.raises(SecretUnavailable, match="S: input closed"):
        conn.get_secret("S", 1.0)
    assert sent(conn) == []
    conn.send_response("a", 204, {}, None)
    assert conn.state is ModuleState.CLOSED


def test_other_messages_pass_through_and_send_guards_managed_ops() -> None:
    conn = running()
    conn.send(PortRequest(request_id="p1", specific_port=None))
    assert sent(conn) == [{"op": "port_request", "request_id": "p1", "specific_port": None}]
    resp = {"op": "port_response", "request_id": "p1", "success": True, "port": 8123}
    conn.receive_data(line(resp), 0.0)
    assert drain(conn) == [
        PortResponse(request_id="p1", success=True, port=8123, error_message=None)
    ]
    with pytest.raises(LocalProtocolError):
        conn.send(Endpoint(path="/", methods=("GET",)))


def test_join_headers_rule() -> None:
    assert join_headers(
        [("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2015"), ("set-cookie", "b=2")]
    ) == {"set-cookie": "a=1; Expires=Wed, 21 Oct 2015\nb=2"}
    assert join_headers({"Accept": "x"}) == {"accept": "x"}
    assert join_headers([("Vary", "a"), ("VARY", "b")]) == {"vary": "a, b"}


def test_close_waits_for_pending_rotation_ack() -> None:
    conn = running()
    conn.receive_data(line({"op": "rotated", "keys": ["K"], "rotation_id": "r"}), 0.0)
    conn.receive_eof()
    assert [type(e) for e in drain(conn)] == [RotationRequested]
    assert conn.state is ModuleState.CLOSING
    conn.ack_rotation("r")
    assert conn.state is ModuleState.CLOSED
    assert sent(conn) == [{"op": "rotation_ack", "rotation_id": "r", "status": "success"}]


# ------------------------------------------------ property: every request answered exactly once

_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("req"), st.sampled_from(["a", "b", "c", "d", "e"])),
        st.tuples(st.just("badmethod"), st.sampled_from(["x", "y"])),
        st.tuples(st.just("answer"), st.integers(0, 10)),
        st.tuples(st.just("tick"), st.floats(0, 6)),
        st.tuples(st.just("heartbeat"), st.none()),
        st.tuples(st.just("garbage"), st.none()),
        st.tuples(st.just("shutdown"), st.none()),
    ),
    max_size=40,
)


@given(_ACTIONS, st.booleans())
def test_every_request_line_gets_exactly_one_response(
    actions: list[tuple[str, Any]], flat: bool
) -> None:
    clock = FakeClock()
    conn = running(clock, extensions=FLAT if flat else None, max_in_flight=3, request_timeout=5.0)
    sent_count: dict[str, int] = {}
    answered: dict[str, int] = {}
    pending: list[str] = []

    def collect() -> None:
        for ev in drain(conn):
            if isinstance(ev, RequestReceived):
                pending.append(ev.request_id)
            elif isinstance(ev, RequestTimedOut):
                pending.remove(ev.request_id)
        for msg in sent(conn):
            body = msg.get("content", msg)
            if "status_code" in body:
                answered[body["request_id"]] = answered.get(body["request_id"], 0) + 1
            assert conn.in_flight <= 3

    for kind, arg in actions:
        if kind in ("req", "badmethod"):
            rid = f"{kind}-{arg}"
            sent_count[rid] = sent_count.get(rid, 0) + 1
            method = "GET" if kind == "req" else "B@D"
            conn.receive_data(req(rid, method=method), clock.now())
        elif kind == "answer" and pending:
            rid = pending.pop(arg % len(pending))
            assert conn.send_response(rid, 200, {}, b"") is True
        elif kind == "tick":
            clock.advance(arg)
            conn.handle_timer(clock.now())
        elif kind == "heartbeat":
            conn.receive_data(line({"op": "heartbeat"}), clock.now())
        elif kind == "garbage":
            conn.receive_data(b"{nope\n", clock.now())
        elif kind == "shutdown":
            conn.receive_data(line({"op": "shutdown"}), clock.now())
        collect()
    for rid in list(pending):
        conn.send_response(rid, 200, {}, b"")
    pending.clear()
    collect()
    assert answered == sent_count
    assert conn.in_flight == 0
    assert conn.state in (ModuleState.RUNNING, ModuleState.CLOSED)


def test_begin_shutdown_is_a_local_shutdown() -> None:
    conn = running()
    conn.receive_data(req("a"), 0.0)
    drain(conn)
    conn.begin_shutdown()
    conn.begin_shutdown()  # idempotent
    assert conn.state is ModuleState.CLOSING
    conn.receive_data(req("b"), 0.0)
    assert drain(conn) == []
    assert [m["status_code"] for m in sent(conn)] == [503]
    conn.send_response("a", 200, {}, b"")
    assert conn.state is ModuleState.CLOSED


@pytest.mark.parametrize(
    ("uri", "path", "query"),
    [
        ("http://h:1/a/b?x=1", "/a/b", "x=1"),
        ("HTTPS://h", "/", ""),
        ("http://h?q=2", "/", "q=2"),
        ("/plain?", "/plain", ""),
    ],
)
def test_uri_forms(uri: str, path: str, query: str) -> None:
    conn = running()
    conn.receive_data(req("u", uri=uri), 0.0)
    (ev,) = drain(conn)
    assert (ev.path, ev.query) == (path, query)


def test_relative_uri_is_answered_400() -> None:
    conn = running()
    conn.receive_data(req("u", uri="no-slash"), 0.0)
    (ev,) = drain(conn)
    assert isinstance(ev, BadLine) and ev.answered_status == 400


def test_state_diagrams_are_generated_from_the_tables() -> None:
    from pywatt_proto import MODULE_MACHINE, ORCHESTRATOR_MACHINE

    for machine in (MODULE_MACHINE, ORCHESTRATOR_MACHINE):
        text = machine.diagram()
        assert text.startswith("stateDiagram-v2\n")
        assert text.count("-->") == len(machine.transitions)


def test_whitespace_only_line_is_skipped_quietly() -> None:
    conn = running()
    conn.receive_data(b"  \t \n" + req("w"), 0.0)
    assert [type(e) for e in drain(conn)] == [RequestReceived]


def test_send_failed_moves_to_error_and_fails_fast() -> None:
    conn = running()
    conn.receive_data(req("a"), 0.0)
    drain(conn)
    conn.send_failed()
    assert conn.state is ModuleState.ERROR
    with pytest.raises(LocalProtocolError):
        conn.send_response("a", 200, {}, b"")
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_a_refused_answer_keeps_its_deadline_and_times_out_on_time() -> None:
    # "a" arrives at 0 (deadline 30), "b" at 10 (deadline 40); a refused answer for "a" leaves
    # it in flight with its own deadline, so it is answered 504 at 30, not after "b".
    conn = running()
    conn.receive_data(req("a"), 0.0)
    drain(conn)
    conn.receive_data(req("b"), 10.0)
    drain(conn)
    with pytest.raises(LocalProtocolError):
        conn.send_response("a", 70000, {}, b"")
    assert conn.in_flight == 2 and conn.get_timer() == 30.0
    conn.handle_timer(30.0)
    assert [e.request_id for e in drain(conn) if isinstance(e, RequestTimedOut)] == ["a"]
    assert [(m["request_id"], m["status_code"]) for m in sent(conn)] == [("a", 504)]
    assert conn.get_timer() == 40.0


def test_secret_answer_read_before_end_of_input_still_counts() -> None:
    # Input closed, but the answer's line is not read yet: the round trip goes on.
    conn = running()
    conn.get_secret("S", 0.0)
    sent(conn)
    conn.receive_data(line({"op": "secret", "name": "S", "value": "v"}), 0.0)
    conn.receive_eof()
    assert conn.get_secret("S", 0.0) is None  # still pending: nothing new sent
    assert sent(conn) == []
    assert drain(conn) == [SecretUpdated(name="S", value="v", rotation_id=None)]
    assert conn.get_secret("S", 0.0) == "v"

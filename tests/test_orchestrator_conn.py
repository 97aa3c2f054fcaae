"""OrchestratorConnection (pure orchestrator side), and both sides paired with no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pywatt_proto import LocalProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import Endpoint, Init, TcpListen
from pywatt_proto._module import ModuleConnection, RequestReceived, RotationRequested
from pywatt_proto._orchestrator import (
    AnnounceReceived,
    AnnounceTimedOut,
    BadModuleLine,
    ModuleUnresponsive,
    OrchestratorConnection,
    OrchestratorState,
    PortRequested,
    RequestFailed,
    ResponseReceived,
    RotationAcknowledged,
    SecretRequested,
    ShutdownGraceExpired,
)
from pywatt_proto.testing import ConnectionPair, FakeClock

INIT = Init(
    orchestrator_api="http://127.0.0.1:9900",
    module_id="m1",
    env={},
    listen=TcpListen(host="127.0.0.1", port=4102),
)


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def drain(conn: OrchestratorConnection) -> list[Any]:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return out
        out.append(ev)


def sent(conn: OrchestratorConnection) -> list[dict[str, Any]]:
    return [json.loads(x) for x in conn.data_to_send().splitlines()]


ANNOUNCE = {
    "op": "announce",
    "listen": "127.0.0.1:4102",
    "endpoints": [{"path": "/a", "methods": ["GET"]}],
    "pywatt_extensions": ["heartbeat_ack", "http_response_op"],
}


def running(clock: FakeClock, **kw: Any) -> OrchestratorConnection:
    conn = OrchestratorConnection(init=INIT, **kw)
    conn.start(clock.now())
    sent(conn)
    conn.receive_data(line(ANNOUNCE), clock.now())
    drain(conn)
    assert conn.state is OrchestratorState.RUNNING
    return conn


def test_init_offers_extensions_and_announce_is_accepted() -> None:
    clock = FakeClock()
    conn = OrchestratorConnection(init=INIT)
    conn.start(clock.now())
    (init,) = sent(conn)
    assert init["module_id"] == "m1" and init["listen"] == "127.0.0.1:4102"
    assert init["pywatt_extensions"] == ["base64_bodies", "heartbeat_ack", "http_response_op"]
    conn.receive_data(line(ANNOUNCE), 1.0)
    (ev,) = drain(conn)
    assert isinstance(ev, AnnounceReceived)
    assert ev.extensions == frozenset({"heartbeat_ack", "http_response_op"})
    assert ev.announce.endpoints == (Endpoint(path="/a", methods=("GET",)),)


def test_announce_deadline() -> None:
    clock = FakeClock()
    conn = OrchestratorConnection(init=INIT, announce_timeout=4.0)
    conn.start(clock.now())
    assert conn.get_timer() == 4.0
    clock.advance(3.9)
    conn.handle_timer(clock.now())
    assert drain(conn) == []
    clock.advance(0.1)
    conn.handle_timer(clock.now())
    assert drain(conn) == [AnnounceTimedOut()]
    assert conn.state is OrchestratorState.FAILED
    with pytest.raises(LocalProtocolError):
        conn.send_request("GET", "/", {}, None, clock.now())


@pytest.mark.parametrize("wrapped", [False, True])
def test_responses_correlate_in_both_shapes(wrapped: bool) -> None:
    clock = FakeClock()
    conn = running(clock)
    r1 = conn.send_request("GET", "/a?x=1", {"h": "v"}, b"\x00\xff", clock.now())
    r2 = conn.send_request("POST", "/a", {}, None, clock.now())
    reqs = sent(conn)
    assert [r["request_id"] for r in reqs] == [r1, r2]
    assert reqs[0] == {
        "op": "http_request",
        "request_id": r1,
        "method": "GET",
        "uri": "/a?x=1",
        "headers": {"h": "v"},
        "body": [0, 255],
    }
    content = {"request_id": r2, "status_code": 201, "headers": {}, "body": [104, 105]}
    if wrapped:
        msg = {
            "content": content,
            "metadata": {"id": "x", "source": "m1", "properties": {"correlation_id": r2}},
        }
    else:
        msg = {"op": "http_response", **content}
    conn.receive_data(line(msg), clock.now())
    (ev,) = drain(conn)
    assert isinstance(ev, ResponseReceived) and ev.request_id == r2
    assert (ev.response.status_code, ev.response.body) == (201, b"hi")
    assert conn.in_flight == 1


def test_request_timeout_then_late_response_is_a_bad_line() -> None:
    clock = FakeClock()
    conn = running(clock, request_timeout=2.0, heartbeat_interval=None)
    rid = conn.send_request("GET", "/a", {}, None, clock.now())
    assert conn.get_timer() == 2.0
    clock.advance(2.0)
    conn.handle_timer(clock.now())
    (ev,) = drain(conn)
    assert ev == RequestFailed(request_id=rid, status=504, reason="module did not answer in time")
    late = {"op": "http_response", "request_id": rid, "status_code": 200, "headers": {}}
    conn.receive_data(line(late), clock.now())
    (bad,) = drain(conn)
    assert isinstance(bad, BadModuleLine)


def test_module_exit_fails_every_in_flight_request_with_502() -> None:
    clock = FakeClock()
    conn = running(clock)
    ids = [conn.send_request("GET", "/a", {}, None, clock.now()) for _ in range(3)]
    conn.receive_eof()
    events = drain(conn)
    assert [(e.request_id, e.status) for e in events] == [(i, 502) for i in ids]
    assert conn.state is OrchestratorState.EXITED
    assert conn.next_event() is END_OF_INPUT


def test_heartbeats_and_missed_limit() -> None:
    clock = FakeClock()
    conn = running(clock, heartbeat_interval=1.0, max_missed_heartbeats=2)
    for _ in range(2):
        clock.advance(1.0)
        conn.handle_timer(clock.now())
        assert sent(conn) == [{"op": "heartbeat"}]
        assert drain(conn) == []
    clock.advance(1.0)
    conn.handle_timer(clock.now())
    assert drain(conn) == [ModuleUnresponsive(missed=2)]
    clock.advance(1.0)
    conn.handle_timer(clock.now())
    assert drain(conn) == []  # reported once per silence
    conn.receive_data(line({"op": "heartbeat_ack"}), clock.now())
    assert drain(conn) == []
    for _ in range(2):
        clock.advance(1.0)
        conn.handle_timer(clock.now())
    assert drain(conn) == []


def test_missed_heartbeats_not_counted_without_the_extension() -> None:
    clock = FakeClock()
    conn = OrchestratorConnection(init=INIT, heartbeat_interval=1.0, max_missed_heartbeats=1)
    conn.start(clock.now())
    announce = {k: v for k, v in ANNOUNCE.items() if k != "pywatt_extensions"}
    conn.receive_data(line(announce), clock.now())
    drain(conn)
    for _ in range(5):
        clock.advance(1.0)
        conn.handle_timer(clock.now())
    assert drain(conn) == []
    assert len(sent(conn)) == 6  # init + 5 heartbeats


def test_secrets_served_from_store_and_rotation_acknowledged() -> None:
    clock = FakeClock()
    conn = running(clock, secrets={"DB": "pg://1"})
    conn.receive_data(line({"op": "get_secret", "name": "DB"}), clock.now())
    conn.receive_data(line({"op": "get_secret", "name": "NOPE"}), clock.now())
    assert drain(conn) == [SecretRequested(name="NOPE")]
    assert sent(conn) == [{"op": "secret", "name": "DB", "value": "pg://1"}]
    conn.rotate({"DB": "pg://2"}, "rot-1")
    assert sent(conn) == [
        {"op": "secret", "name": "DB", "value": "pg://2", "rotation_id": "rot-1"},
        {"op": "rotated", "keys": ["DB"], "rotation_id": "rot-1"},
    ]
    ack = {"op": "rotation_ack", "rotation_id": "rot-1", "status": "error", "message": "m"}
    conn.receive_data(line(ack), clock.now())
    assert drain(conn) == [RotationAcknowledged(rotation_id="rot-1", status="error", message="m")]


def test_port_request_is_left_to_the_driver() -> None:
    clock = FakeClock()
    conn = running(clock)
    conn.receive_data(line({"op": "port_request", "request_id": "p", "specific_port": 9}), 0.0)
    (ev,) = drain(conn)
    assert isinstance(ev, PortRequested) and ev.request.specific_port == 9
    conn.answer_port("p", port=9)
    assert sent(conn) == [
        {
            "op": "port_response",
            "request_id": "p",
            "success": True,
            "port": 9,
            "error_message": None,
        }
    ]
    with pytest.raises(LocalProtocolError):
        conn.answer_port("p", port=9)


def test_shutdown_grace_period() -> None:
    clock = FakeClock()
    conn = running(clock, shutdown_grace=3.0, heartbeat_interval=None)
    rid = conn.send_request("GET", "/a", {}, None, clock.now())
    sent(conn)
    conn.shutdown(clock.now())
    assert sent(conn) == [{"op": "shutdown"}]
    assert conn.state is OrchestratorState.SHUTTING_DOWN
    clock.advance(3.0)
    conn.handle_timer(clock.now())
    assert drain(conn) == [
        RequestFailed(request_id=rid, status=502, reason="module did not stop in time"),
        ShutdownGraceExpired(),
    ]


# -------------------------------------------------------------- both sides


def test_pair_round_trip_secrets_rotation_and_shutdown() -> None:
    clock = FakeClock()
    module = ModuleConnection(endpoints=(Endpoint(path="/a", methods=("GET",)),), prefetch=["DB"])
    orch = OrchestratorConnection(init=INIT, secrets={"DB": "v1"}, heartbeat_interval=1.0)
    pair = ConnectionPair(module, orch, clock)
    pair.start()
    m_events, o_events = pair.pump()
    assert any(isinstance(e, AnnounceReceived) for e in o_events)
    assert module.cached_secret("DB") == "v1"
    assert module.extensions == frozenset({"base64_bodies", "heartbeat_ack", "http_response_op"})

    rid = orch.send_request("GET", "/a?q=1", {}, b"x", clock.now())
    m_events, _ = pair.pump()
    (req,) = [e for e in m_events if isinstance(e, RequestReceived)]
    assert (req.request_id, req.path, req.query) == (rid, "/a", "q=1")
    module.send_response(rid, 200, [("set-cookie", "a=1"), ("set-cookie", "b=2")], b"ok")
    _, o_events = pair.pump()
    (resp,) = [e for e in o_events if isinstance(e, ResponseReceived)]
    assert resp.response.headers == {"set-cookie": "a=1\nb=2"}
    assert resp.response.body == b"ok"

    clock.advance(1.0)
    pair.handle_timers()
    pair.pump()
    assert orch.state is OrchestratorState.RUNNING

    orch.rotate({"DB": "v2"}, "r1")
    m_events, _ = pair.pump()
    rot = [e for e in m_events if isinstance(e, RotationRequested)]
    assert rot == [RotationRequested(rotation_id="r1", keys=("DB",))]
    module.ack_rotation("r1")
    _, o_events = pair.pump()
    assert RotationAcknowledged(rotation_id="r1", status="success", message=None) in o_events
    assert module.cached_secret("DB") == "v2"  # pushed with the rotation, so kept

    orch.shutdown(clock.now())
    pair.pump()
    assert module.state.name == "CLOSED"


# ---------------------------------------- property: every forwarded request has one outcome

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.none()),
            st.tuples(st.just("answer"), st.integers(0, 20)),
            st.tuples(st.just("wrapped"), st.integers(0, 20)),
            st.tuples(st.just("tick"), st.floats(0, 3)),
            st.tuples(st.just("shutdown"), st.none()),
            st.tuples(st.just("junk"), st.none()),
        ),
        max_size=40,
    )
)
def test_every_forwarded_request_has_exactly_one_outcome(actions: list[tuple[str, Any]]) -> None:
    clock = FakeClock()
    conn = running(clock, request_timeout=2.0, shutdown_grace=4.0)
    outcomes: dict[str, int] = {}
    ids: list[str] = []
    live: list[str] = []

    def collect() -> None:
        for ev in drain(conn):
            if isinstance(ev, ResponseReceived | RequestFailed):
                outcomes[ev.request_id] = outcomes.get(ev.request_id, 0) + 1
                if ev.request_id in live:
                    live.remove(ev.request_id)
        sent(conn)

    for kind, arg in actions:
        if kind == "send":
            if conn.state is OrchestratorState.RUNNING:
                rid = conn.send_request("GET", "/a", {}, None, clock.now())
                ids.append(rid)
                live.append(rid)
        elif kind in ("answer", "wrapped") and ids:
            rid = ids[arg % len(ids)]  # may be answered already: then it is a BadModuleLine
            content = {"request_id": rid, "status_code": 200, "headers": {}, "body": None}
            msg = (
                {"op": "http_response", **content}
                if kind == "answer"
                else {"content": content, "metadata": {"id": "i", "source": "m"}}
            )
            conn.receive_data(line(msg), clock.now())
        elif kind == "tick":
            clock.advance(arg)
            conn.handle_timer(clock.now())
        elif kind == "shutdown":
            conn.shutdown(clock.now())
        elif kind == "junk":
            conn.receive_data(b"][\n", clock.now())
        collect()
    conn.receive_eof()
    collect()
    assert outcomes == {rid: 1 for rid in ids}
    assert conn.in_flight == 0


def test_pending_rotations_are_bounded() -> None:
    from pywatt_proto._orchestrator import MAX_PENDING_ROTATIONS

    clock = FakeClock()
    conn = running(clock)
    for i in range(MAX_PENDING_ROTATIONS):
        conn.rotate({"K": str(i)}, f"r{i}")
    sent(conn)
    with pytest.raises(LocalProtocolError):
        conn.rotate({"K": "x"}, "one-too-many")
    assert sent(conn) == []
    ack = {"op": "rotation_ack", "rotation_id": "r0", "status": "success"}
    conn.receive_data(line(ack), clock.now())
    drain(conn)
    conn.rotate({"K": "x"}, "now-fine")


def _running_reference_like(clock: FakeClock) -> OrchestratorConnection:
    """A conn whose module announced no extensions (as a reference module does)."""
    conn = OrchestratorConnection(init=INIT, secrets={"DB": "pg://1"})
    conn.start(clock.now())
    sent(conn)
    announce = {k: v for k, v in ANNOUNCE.items() if k != "pywatt_extensions"}
    conn.receive_data(line(announce), clock.now())
    drain(conn)
    sent(conn)
    return conn


def test_rotation_ack_of_reference_module_is_followed_by_one_spare_line() -> None:
    # A reference module reads one more stdin line after its rotation_ack (spec/reference.md
    # R10): the orchestrator gives it a heartbeat to swallow, so no real message is lost.
    clock = FakeClock()
    conn = _running_reference_like(clock)
    conn.rotate({"DB": "pg://2"}, "rot-1")
    sent(conn)
    ack = {"op": "rotation_ack", "rotation_id": "rot-1", "status": "success"}
    conn.receive_data(line(ack), clock.now())
    drain(conn)
    assert sent(conn) == [{"op": "heartbeat"}]


def test_rotation_ack_of_pywatt_module_needs_no_spare_line() -> None:
    clock = FakeClock()
    conn = running(clock, secrets={"DB": "pg://1"})
    conn.rotate({"DB": "pg://2"}, "rot-1")
    sent(conn)
    ack = {"op": "rotation_ack", "rotation_id": "rot-1", "status": "success"}
    conn.receive_data(line(ack), clock.now())
    drain(conn)
    assert sent(conn) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"status_code": "200", "headers": {}},  # wrong type
        {"status_code": 200, "headers": {"x-a": 5}},
        {"status_code": 200, "headers": [["x-a", "1"]]},
        {"status_code": 200, "headers": {}, "body": [256, -1]},
    ],
)
def test_undecodable_response_fails_its_request_with_502_at_once(fields: dict[str, Any]) -> None:
    # spec/limits.md "Bounded scan": a response line that cannot be decoded fails the request
    # its request_id names at once (502), never a 504 at the deadline.
    clock = FakeClock()
    conn = running(clock, request_timeout=30.0, heartbeat_interval=None)
    rid = conn.send_request("GET", "/a", {}, None, clock.now())
    other = conn.send_request("GET", "/a", {}, None, clock.now())
    conn.receive_data(line({"op": "http_response", "request_id": rid, **fields}), clock.now())
    failed, bad = drain(conn)
    assert failed == RequestFailed(request_id=rid, status=502, reason="invalid response")
    assert isinstance(bad, BadModuleLine)
    assert conn.in_flight == 1  # the other request still waits for its answer
    ok = {"op": "http_response", "request_id": other, "status_code": 200, "headers": {}}
    conn.receive_data(line(ok), clock.now())
    (answered,) = drain(conn)
    assert answered.request_id == other


def test_late_answer_names_why_the_request_was_given_up() -> None:
    # A request given up (its client left, or 504 at its deadline) then answered is not a
    # module fault to report as an unknown request: the bad line says the answer came late.
    clock = FakeClock()
    conn = running(clock, request_timeout=2.0, heartbeat_interval=None)
    left = conn.send_request("GET", "/a", {}, None, clock.now())
    late = conn.send_request("GET", "/a", {}, None, clock.now())
    assert conn.cancel_request(left)
    clock.advance(2.0)
    conn.handle_timer(clock.now())
    drain(conn)
    for rid in (left, late, "r999"):
        answer = {"op": "http_response", "request_id": rid, "status_code": 200, "headers": {}}
        conn.receive_data(line(answer), clock.now())
    messages = [str(event.error) for event in drain(conn)]
    assert messages == [
        f"late response for request {left!r} (given up: client gone or deadline passed)",
        f"late response for request {late!r} (given up: client gone or deadline passed)",
        "response for unknown request 'r999'",
    ]

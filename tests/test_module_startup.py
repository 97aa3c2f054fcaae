"""ModuleConnection with ``hold_announce=True``: startup work between prefetch and the announce
(bind first, then announce). Driven through the public API with a fake clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pywatt_proto import LocalProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._messages import Endpoint, PortRequest, PortResponse
from pywatt_proto._module import (
    MODULE_MACHINE,
    Announced,
    InitReceived,
    ModuleConnection,
    ModuleState,
    ReadyToAnnounce,
    RequestReceived,
    SecretFailed,
    SecretUpdated,
    ShutdownRequested,
)
from pywatt_proto.testing import SPLITTERS, FakeClock

ENDPOINTS = (Endpoint(path="/hello", methods=("GET",)),)
INIT: dict[str, Any] = {
    "orchestrator_api": "http://127.0.0.1:9900",
    "module_id": "m1",
    "env": {},
    "listen": "127.0.0.1:4102",
    "pywatt_extensions": ["http_response_op", "heartbeat_ack"],
}


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def req(rid: str) -> bytes:
    return line(
        {
            "op": "http_request",
            "request_id": rid,
            "method": "GET",
            "uri": "/hello",
            "headers": {},
            "body": None,
        }
    )


def drain(conn: ModuleConnection) -> list[Any]:
    out: list[Any] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is END_OF_INPUT:
            return out
        out.append(ev)


def sent(conn: ModuleConnection) -> list[dict[str, Any]]:
    data = conn.data_to_send()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(x) for x in data.splitlines()]


def starting(clock: FakeClock | None = None, **kw: Any) -> ModuleConnection:
    """A held connection that has emitted ReadyToAnnounce (nothing left to send)."""
    clock = clock or FakeClock()
    conn = ModuleConnection(endpoints=ENDPOINTS, hold_announce=True, **kw)
    conn.receive_data(line(INIT), clock.now())
    assert [type(e) for e in drain(conn)] == [InitReceived, ReadyToAnnounce]
    assert sent(conn) == []
    assert conn.state is ModuleState.STARTING
    return conn


@pytest.mark.parametrize("split", SPLITTERS)
def test_held_announce_waits_for_announce_with_the_given_listen(split: Any) -> None:
    conn = ModuleConnection(endpoints=ENDPOINTS, hold_announce=True)
    events: list[Any] = []
    for chunk in split(line(INIT)):
        conn.receive_data(chunk, 0.0)
        events += drain(conn)
    init_ev, ready = events
    assert isinstance(init_ev, InitReceived)
    assert ready == ReadyToAnnounce(init=init_ev.init, listen="127.0.0.1:4102")
    assert conn.state is ModuleState.STARTING
    assert sent(conn) == []  # nothing announced yet
    conn.announce("127.0.0.1:5555")
    assert conn.state is ModuleState.RUNNING
    (ev,) = drain(conn)
    assert isinstance(ev, Announced) and ev.announce.listen == "127.0.0.1:5555"
    assert sent(conn) == [
        {
            "op": "announce",
            "listen": "127.0.0.1:5555",
            "endpoints": [{"path": "/hello", "methods": ["GET"]}],
            "pywatt_extensions": ["heartbeat_ack", "http_response_op"],
        }
    ]


def test_requests_get_503_not_ready_until_the_announce() -> None:
    conn = starting()
    conn.receive_data(req("early"), 0.1)
    assert drain(conn) == []
    (resp,) = sent(conn)
    assert resp["request_id"] == "early" and resp["status_code"] == 503
    assert json.loads(bytes(resp["body"])) == {"error": "module not ready"}
    conn.announce()
    drain(conn)
    sent(conn)
    conn.receive_data(req("late"), 0.2)
    assert [type(e) for e in drain(conn)] == [RequestReceived]


def test_port_negotiation_works_while_the_announce_is_held() -> None:
    conn = starting()
    conn.send(PortRequest(request_id="p1", specific_port=None))
    assert sent(conn) == [{"op": "port_request", "request_id": "p1", "specific_port": None}]
    conn.receive_data(
        line({"op": "port_response", "request_id": "p1", "success": True, "port": 8123}), 0.1
    )
    conn.receive_data(line({"op": "heartbeat"}), 0.1)
    assert drain(conn) == [
        PortResponse(request_id="p1", success=True, port=8123, error_message=None)
    ]
    assert sent(conn) == [{"op": "heartbeat_ack"}]
    assert conn.state is ModuleState.STARTING
    conn.announce("127.0.0.1:8123")
    assert sent(conn)[0]["listen"] == "127.0.0.1:8123"


def test_secrets_can_be_fetched_while_held() -> None:
    conn = starting()
    assert conn.get_secret("K", 0.0) is None
    assert sent(conn) == [{"op": "get_secret", "name": "K"}]
    conn.receive_data(line({"op": "secret", "name": "K", "value": "v"}), 0.1)
    assert [type(e) for e in drain(conn)] == [SecretUpdated]
    assert conn.state is ModuleState.STARTING


def test_announce_without_listen_uses_the_constructor_listen_then_the_init() -> None:
    conn = starting(listen="10.0.0.1:9")
    assert conn.state is ModuleState.STARTING
    conn.announce()
    assert sent(conn)[0]["listen"] == "10.0.0.1:9"
    conn = starting()
    conn.announce(None)
    assert sent(conn)[0]["listen"] == "127.0.0.1:4102"


def test_ready_to_announce_comes_after_prefetch_including_a_timeout() -> None:
    clock = FakeClock()
    conn = ModuleConnection(prefetch=["A", "B"], hold_announce=True, secret_timeout=2.0)
    conn.receive_data(line(INIT), clock.now())
    assert [type(e) for e in drain(conn)] == [InitReceived]
    assert conn.state is ModuleState.PREFETCHING
    with pytest.raises(LocalProtocolError):
        conn.announce()  # prefetch not done
    assert conn.state is ModuleState.PREFETCHING
    sent(conn)
    clock.advance(1.0)
    conn.receive_data(line({"op": "secret", "name": "A", "value": "a"}), clock.now())
    assert [type(e) for e in drain(conn)] == [SecretUpdated]
    clock.advance(1.0)
    conn.handle_timer(clock.now())
    assert [type(e) for e in drain(conn)] == [SecretFailed, ReadyToAnnounce]
    assert sent(conn) == []
    conn.announce()
    assert [type(e) for e in drain(conn)] == [Announced]


def test_announce_in_the_wrong_state_raises_and_changes_nothing() -> None:
    conn = ModuleConnection(hold_announce=True)
    with pytest.raises(LocalProtocolError):
        conn.announce()  # before init
    assert conn.state is ModuleState.AWAITING_INIT
    conn = starting()
    conn.announce()
    with pytest.raises(LocalProtocolError):
        conn.announce()  # twice
    assert conn.state is ModuleState.RUNNING
    default = ModuleConnection()
    default.receive_data(line(INIT), 0.0)
    drain(default)
    with pytest.raises(LocalProtocolError):
        default.announce()  # already announced automatically
    assert default.state is ModuleState.RUNNING


def test_shutdown_while_held_closes_without_announcing() -> None:
    conn = starting()
    conn.receive_data(line({"op": "shutdown"}), 0.0)
    assert [type(e) for e in drain(conn)] == [ShutdownRequested]
    assert conn.state is ModuleState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.announce()  # the driver lost the race with shutdown
    assert conn.state is ModuleState.CLOSED
    assert sent(conn) == []


def test_eof_or_begin_shutdown_while_held_closes() -> None:
    conn = starting()
    conn.receive_eof()
    assert drain(conn) == []
    assert conn.state is ModuleState.CLOSED
    conn = starting()
    conn.begin_shutdown()
    assert conn.state is ModuleState.CLOSED
    assert sent(conn) == []


def test_default_is_unchanged_and_matches_a_held_announce_byte_for_byte() -> None:
    auto = ModuleConnection(endpoints=ENDPOINTS)
    auto.receive_data(line(INIT), 0.0)
    assert [type(e) for e in drain(auto)] == [InitReceived, Announced]
    assert auto.state is ModuleState.RUNNING
    held = starting()
    held.announce()
    drain(held)
    assert auto.data_to_send() == held.data_to_send()


def test_the_diagram_shows_the_startup_transitions() -> None:
    text = MODULE_MACHINE.diagram()
    assert "PREFETCHING --> STARTING: SECRETS_READY" in text
    assert "STARTING --> RUNNING: ANNOUNCE" in text
    assert "STARTING --> CLOSING: SHUTDOWN" in text

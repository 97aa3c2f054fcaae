"""The Sans-IO HTTP pieces of pywatt_proto, with no sockets and a fake clock."""

from __future__ import annotations

import random
from email.utils import formatdate

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    Backoff,
    ClientExchange,
    ClientResponse,
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    Headers,
    HTTPProtocolError,
    HttpServerConnection,
    LocalProtocolError,
    Origin,
    ReadTimeout,
    Request,
    Response,
    RetryPolicy,
    ServerLimits,
    ServerPhase,
    add_query,
    encode_query,
    format_access_log,
    http_date,
    join_url,
    split_url,
)

LIMITS = ServerLimits(read_timeout=1.0, request_timeout=3.0, keepalive_timeout=5.0)
REQ = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"


@given(st.integers(min_value=0, max_value=2**33))
def test_http_date_matches_email_utils(t: int) -> None:
    assert http_date(t) == formatdate(t, usegmt=True)


def test_join_url() -> None:
    assert join_url("http://h/api", "/users") == "http://h/api/users"
    assert join_url("http://h/api/", "users") == "http://h/api/users"
    assert join_url("http://h", "x") == "http://h/x"
    assert join_url("http://h/api", "https://o/x") == "https://o/x"
    assert join_url("http://h/api", "?a=1") == "http://h/api?a=1"
    assert join_url("http://h/api", "") == "http://h/api"
    with pytest.raises(LocalProtocolError):
        join_url(None, "/x")


def test_query_encoding() -> None:
    assert encode_query({"a": "x y", "b": [1, 2], "c": None, "d": True}) == "a=x%20y&b=1&b=2&d=true"
    assert encode_query([("k", "\u00e9/&=")]) == "k=%C3%A9%2F%26%3D"
    assert add_query("http://h/p?z=1#frag", {"a": 1}) == "http://h/p?z=1&a=1#frag"
    assert add_query("http://h/p", {}) == "http://h/p"


def test_split_url() -> None:
    origin, target = split_url("https://Example.com/a b?q=1")
    assert origin == Origin(scheme="https", host="example.com", port=443)
    assert target == "/a%20b?q=1"
    assert origin.host_header == "example.com"
    assert split_url("http://[::1]:8080")[0].host_header == "[::1]:8080"
    for bad in ("ftp://x/", "/relative", "http://h:99999/"):
        with pytest.raises(LocalProtocolError):
            split_url(bad)


def test_retry_policy_decisions() -> None:
    policy = RetryPolicy(backoff=Backoff(base=0.1, cap=1.0, max_attempts=3, jitter=False))
    rng = random.Random(0)
    assert policy.next_delay(method="GET", attempts=1, rng=rng, status=503) == 0.1
    assert policy.next_delay(method="GET", attempts=2, rng=rng, status=503) == 0.2
    assert policy.next_delay(method="GET", attempts=3, rng=rng, status=503) is None
    assert policy.next_delay(method="GET", attempts=1, rng=rng, status=200) is None
    assert policy.next_delay(method="POST", attempts=1, rng=rng, status=503) is None
    err = ConnectError("x")
    assert policy.next_delay(method="POST", attempts=1, rng=rng, error=err) == 0.1
    assert policy.next_delay(method="POST", attempts=1, rng=rng, error=ConnectTimeout("x")) == 0.1
    assert policy.next_delay(method="POST", attempts=1, rng=rng, error=ReadTimeout("x")) is None
    assert policy.next_delay(method="PUT", attempts=1, rng=rng, error=ReadTimeout("x")) == 0.1
    retry_after = policy.next_delay(method="GET", attempts=1, rng=rng, status=429, retry_after="7")
    assert retry_after == 1.0  # capped by the backoff cap
    # Retry-After is delay-seconds (ASCII digits); a latin-1 "\xb2" passes str.isdigit()
    # and used to raise ValueError out of the client: now ignored, as an HTTP-date is.
    for value in ("\xb2", "\xb9", " 3\xb3", "Fri, 31 Dec 1999 23:59:59 GMT"):
        got = policy.next_delay(method="GET", attempts=1, rng=rng, status=503, retry_after=value)
        assert got is not None and got <= 0.1


def test_connection_pool_bookkeeping() -> None:
    pool: ConnectionPool[str] = ConnectionPool(max_per_host=2, idle_timeout=10.0)
    o = Origin(scheme="http", host="h", port=80)
    assert pool.take(o, 0.0) == (None, [])
    assert pool.put(o, "a", 0.0) and pool.put(o, "b", 5.0)
    assert not pool.put(o, "c", 5.0)  # full
    assert pool.take(o, 6.0) == ("b", [])  # most recent first
    assert pool.take(o, 11.0) == (None, ["a"])  # expired
    pool.put(o, "d", 0.0)
    assert pool.drain() == ["d"] and pool.idle_count(o) == 0
    with pytest.raises(ValueError):
        ConnectionPool(max_per_host=0)


def test_server_limits_validate() -> None:
    with pytest.raises(ValueError):
        ServerLimits(read_timeout=0)
    with pytest.raises(ValueError):
        ServerLimits(max_body_bytes=0)


# ------------------------------------------------------------------ server connection


def feed_all(conn: HttpServerConnection, data: bytes, now: float, split: int) -> list[object]:
    events: list[object] = []
    chunks = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
    for chunk in chunks:
        conn.receive_data(chunk, now)
        while True:
            ev = conn.next_event(now)
            if ev is NEED_DATA or ev is END_OF_INPUT:
                break
            events.append(ev)
            assert isinstance(ev, Request)
            conn.send_response(Response(status=200, body=ev.path.encode()), now)
    return events


@pytest.mark.parametrize("split", [0, 1, 7])
def test_server_connection_pipelining_any_split(split: int) -> None:
    conn = HttpServerConnection(LIMITS, 0.0, client=("1.2.3.4", 5))
    data = REQ + b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi" + REQ
    events = feed_all(conn, data, 0.0, split)
    assert [(e.method, e.path) for e in events] == [("GET", "/a"), ("POST", "/b"), ("GET", "/a")]  # type: ignore[attr-defined]
    assert events[1].body == b"hi"  # type: ignore[attr-defined]
    assert events[0].query.get("x") == "1" and events[0].client == ("1.2.3.4", 5)  # type: ignore[attr-defined]
    out = conn.data_to_send()
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert conn.data_to_send() == b""
    assert conn.phase is ServerPhase.IDLE


def test_server_connection_timers() -> None:
    conn = HttpServerConnection(LIMITS, 0.0)
    assert conn.get_timer() == 5.0  # keep-alive wait for the first request
    conn.handle_timer(4.9)
    assert conn.phase is ServerPhase.IDLE
    conn.receive_data(b"GET / HTTP/1.1\r\n", 4.9)
    assert conn.next_event(4.9) is NEED_DATA
    assert conn.get_timer() == pytest.approx(5.9)  # read timeout now
    conn.receive_data(b"Host: h\r\n", 5.8)
    assert conn.get_timer() == pytest.approx(6.8)
    conn.receive_data(b"X: 1\r\n", 6.7)
    conn.receive_data(b"Y: 1\r\n", 7.6)
    assert conn.get_timer() == pytest.approx(7.9)  # whole-request deadline (4.9 + 3)
    conn.handle_timer(7.9)
    assert conn.next_event(7.9) is END_OF_INPUT
    assert conn.data_to_send().startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_server_connection_idle_close_and_shutdown() -> None:
    conn = HttpServerConnection(LIMITS, 0.0)
    conn.handle_timer(5.0)
    assert conn.next_event(5.0) is END_OF_INPUT and conn.data_to_send() == b""
    busy = HttpServerConnection(LIMITS, 0.0)
    busy.receive_data(REQ, 0.0)
    req = busy.next_event(0.0)
    assert isinstance(req, Request)
    busy.start_shutdown()
    busy.send_response(Response(status=204), 0.1)
    assert b"connection: close" in busy.data_to_send()
    assert busy.next_event(0.1) is END_OF_INPUT
    with pytest.raises(LocalProtocolError):
        busy.send_response(Response(), 0.2)


def test_server_connection_eof_and_pending_bound() -> None:
    conn = HttpServerConnection(ServerLimits(max_pending_bytes=10), 0.0)
    conn.receive_data(REQ, 0.0)
    assert not conn.wants_data
    assert isinstance(conn.next_event(0.0), Request)
    assert conn.wants_data
    conn.send_response(Response(), 0.0)
    conn.receive_data(b"", 0.0)
    assert conn.next_event(0.0) is END_OF_INPUT


@given(st.binary(max_size=300))
def test_server_connection_never_raises_on_garbage(data: bytes) -> None:
    conn = HttpServerConnection(ServerLimits(max_header_bytes=200, max_body_bytes=50), 0.0)
    conn.receive_data(data, 0.0)
    conn.receive_data(b"", 0.0)
    for _ in range(20):
        ev = conn.next_event(0.0)
        if ev is END_OF_INPUT or ev is NEED_DATA:
            break
        conn.send_response(Response(status=200), 0.0)
    out = conn.data_to_send()
    assert out == b"" or out.startswith(b"HTTP/1.1 ")


def test_access_log_line() -> None:
    req = Request.from_target("GET", '/a?q="x"')
    line = format_access_log(("10.0.0.1", 80), req, 200, 12, 0.0015)
    assert line == '10.0.0.1:80 "GET /a?q=%22x%22" 200 12 1.50ms'
    assert format_access_log(None, req, 500, 0, 0).startswith("- ")


def test_access_log_line_escapes_the_target_as_the_front_door_log_does() -> None:
    # h11 refuses such targets on the wire; a Request built by hand may still carry them.
    req = Request.from_target("GET", "/a\x1b[2J\x85?q=\xe9")
    line = format_access_log(None, req, 200, 0, 0)
    assert line == '- "GET /a\\x1b[2J\\x85?q=\\xe9" 200 0 0.00ms'


# ------------------------------------------------------------------ client exchange


def test_client_exchange_round_trip_one_byte_at_a_time() -> None:
    conn = h11.Connection(h11.CLIENT)
    ex = ClientExchange(conn, "post", "http://h:81/p?q=1", [("X-A", "1")], b"body")
    sent = ex.bytes_to_send()
    assert sent.startswith(b"POST /p?q=1 HTTP/1.1\r\nhost: h:81\r\nx-a: 1\r\ncontent-length: 4")
    assert sent.endswith(b"\r\n\r\nbody")
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nA: b\r\n\r\nok"
    )
    result: object = NEED_DATA
    for i in range(len(answer)):
        ex.receive_data(answer[i : i + 1])
        result = ex.next_event()
        if result is not NEED_DATA:
            break
    assert isinstance(result, ClientResponse)
    assert (result.status, result.body, result.reason) == (201, b"ok", "Created")
    assert result.headers.get("a") == "b"
    assert ex.reusable


def test_client_exchange_limits_and_early_close() -> None:
    ex = ClientExchange(h11.Connection(h11.CLIENT), "GET", "http://h/", [], max_response_bytes=3)
    ex.bytes_to_send()
    ex.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    with pytest.raises(HTTPProtocolError):
        ex.next_event()
    ex2 = ClientExchange(h11.Connection(h11.CLIENT), "GET", "http://h/", [])
    ex2.receive_data(b"")
    with pytest.raises(HTTPProtocolError):
        ex2.next_event()


@pytest.mark.parametrize(
    ("method", "headers", "answer"),
    [
        ("GET", [("upgrade", "websocket"), ("connection", "upgrade")],
         b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        ("CONNECT", [], b"HTTP/1.1 200 OK\r\n\r\n"),
    ],
)  # fmt: skip
def test_client_exchange_refuses_a_protocol_switch(
    method: str, headers: list[tuple[str, str]], answer: bytes
) -> None:
    # h11 pauses after the switch; next_event() used to ask it again forever (a busy hang).
    ex = ClientExchange(h11.Connection(h11.CLIENT), method, "http://h/", headers)
    ex.bytes_to_send()
    ex.receive_data(answer)
    with pytest.raises(HTTPProtocolError, match="switched protocols"):
        ex.next_event()
    assert not ex.reusable


def test_client_response_json_of_a_too_deep_body_is_a_value_error() -> None:
    # json.loads raises RecursionError for deep nesting; json() documents ValueError.
    resp = ClientResponse(status=200, headers=Headers(), body=b"[" * 100_000, url="http://h/")
    with pytest.raises(ValueError, match="nested too deeply"):
        resp.json()

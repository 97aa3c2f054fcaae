"""HttpServerConnection writes simple keep-alive answers without h11 (send_response's
direct path); those bytes must be exactly what h11 writes for the same answer.

A request followed by pipelined bytes is answered through h11 (the direct path needs
an empty receive buffer), the next one directly: both answers must be identical, and
identical to what a plain h11 server connection writes.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    HttpServerConnection,
    LocalProtocolError,
    Request,
    Response,
    ServerLimits,
    ServerPhase,
)

LIMITS = ServerLimits()
DATE = b"Thu, 26 Nov 2026 15:54:52 GMT"
GET = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"


def _h11_reference(response: Response, method: bytes = b"GET") -> bytes | None:
    """Return what h11 itself writes for ``response`` (None: h11 refuses it)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(method + b" /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert type(conn.next_event()) is h11.Request
    assert type(conn.next_event()) is h11.EndOfMessage
    headers = [(b"date", DATE)]
    framed = False
    for name, value in response.headers:
        lname = name.lower()
        if lname == "connection":
            continue
        if lname == "transfer-encoding":
            framed = True
            continue
        framed = framed or lname == "content-length"
        headers.append((lname.encode(), value.encode("latin-1")))
    if not framed and response.status not in (204, 304):
        headers.append((b"content-length", str(len(response.body)).encode()))
    try:
        out = conn.send(h11.Response(status_code=response.status, headers=headers,
                                     reason=_reason(response.status)))  # fmt: skip
        if response.body:
            out += conn.send(h11.Data(data=response.body))
        out += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return None
    return out


def _reason(status: int) -> bytes:
    from pywatt_proto import reason_phrase

    return reason_phrase(status).encode()


def _answer(core: HttpServerConnection, response: Response) -> bytes:
    event = core.next_event(0.0)
    assert isinstance(event, Request)
    core.send_response(response, 0.0, date=DATE)
    return core.data_to_send()


_NAMES = st.sampled_from(["content-type", "X-Trace", "cache-control", "set-cookie", "etag"])
_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=12)
_RESPONSES = st.builds(
    Response,
    status=st.sampled_from([200, 201, 202, 203, 301, 400, 404, 418, 500, 503, 599]),
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=4).map(tuple),
    body=st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(_RESPONSES)
def test_direct_answer_equals_h11_answer(response: Response) -> None:
    expected = _h11_reference(response)
    core = HttpServerConnection(LIMITS, 0.0)
    core.receive_data(GET + GET, 0.0)  # the first answer goes through h11 (data follows)
    if expected is None:
        with pytest.raises(LocalProtocolError):
            _answer(core, response)
        alone = HttpServerConnection(LIMITS, 0.0)
        alone.receive_data(GET, 0.0)
        with pytest.raises(LocalProtocolError):
            _answer(alone, response)
        return
    assert _answer(core, response) == expected
    assert core.phase is ServerPhase.IDLE
    assert _answer(core, response) == expected  # nothing follows: the direct path
    assert core.phase is ServerPhase.IDLE
    assert core.next_event(0.0) is NEED_DATA
    core.receive_data(GET, 1.0)  # the fresh h11 connection serves the next request
    assert _answer(core, response) == expected


@pytest.mark.parametrize(
    "response",
    [
        Response(status=204),
        Response(status=304, headers=(("etag", '"x"'),)),
        Response(status=200, headers=(("content-length", "2"),), body=b"ok"),
        Response(status=200, headers=(("transfer-encoding", "chunked"),), body=b"ok"),
        Response(status=200, headers=(("host", "x"), ("a", "b")), body=b"ok"),
        Response(status=200, headers=(("connection", "close"),), body=b"ok"),
    ],
)
def test_answers_h11_writes_itself_are_unchanged(response: Response) -> None:
    expected = _h11_reference(response)
    core = HttpServerConnection(LIMITS, 0.0)
    core.receive_data(GET, 0.0)
    assert _answer(core, response) == expected
    assert core.phase is ServerPhase.IDLE


def test_head_answer_is_written_by_h11() -> None:
    response = Response(status=200, headers=(("content-length", "5"),))
    core = HttpServerConnection(LIMITS, 0.0)
    core.receive_data(b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", 0.0)
    assert _answer(core, response) == _h11_reference(response, b"HEAD")


def test_eof_after_request_closes_after_the_answer() -> None:
    response = Response(status=200, body=b"ok")
    core = HttpServerConnection(LIMITS, 0.0)
    core.receive_data(GET, 0.0)
    event = core.next_event(0.0)
    assert isinstance(event, Request)
    core.receive_data(b"", 0.0)  # EOF while the handler runs
    core.send_response(response, 0.0, date=DATE)
    assert core.data_to_send() == _h11_reference(response)
    assert core.next_event(0.0) is END_OF_INPUT


def test_request_close_and_http10_answer_with_close() -> None:
    for request in (
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.0\r\n\r\n",
    ):
        core = HttpServerConnection(LIMITS, 0.0)
        core.receive_data(request, 0.0)
        out = _answer(core, Response(status=200, body=b"ok"))
        assert b"\r\nconnection: close\r\n" in out.lower()
        assert core.phase is ServerPhase.CLOSING


def test_request_limit_answers_with_close() -> None:
    core = HttpServerConnection(ServerLimits(max_requests_per_connection=2), 0.0)
    core.receive_data(GET, 0.0)
    assert b"connection" not in _answer(core, Response(body=b"1"))
    core.receive_data(GET, 0.0)
    assert b"\r\nconnection: close\r\n" in _answer(core, Response(body=b"2"))
    assert core.phase is ServerPhase.CLOSING


def test_eof_queued_behind_pipelined_data_is_not_lost() -> None:
    # Bytes and then EOF arrive while a handler runs: after the queued request is
    # answered the connection ends, instead of waiting for the keep-alive timeout.
    core = HttpServerConnection(LIMITS, 0.0)
    core.receive_data(GET, 0.0)
    first = core.next_event(0.0)
    assert isinstance(first, Request)
    core.receive_data(GET, 0.0)
    core.receive_data(b"", 0.0)
    core.send_response(Response(body=b"1"), 0.0, date=DATE)
    assert _answer(core, Response(body=b"2")).endswith(b"\r\n\r\n2")
    assert core.next_event(0.0) is END_OF_INPUT


@pytest.mark.parametrize(
    "response",
    [
        Response(status=200, headers=(("content-length", "1"),), body=b"abc"),
        Response(status=204, body=b"x"),
    ],
)
def test_an_answer_h11_refuses_after_its_head_leaves_room_for_a_502(response: Response) -> None:
    # h11 took the head, then refused the body: the head used to stay queued and h11 in
    # ERROR refused the caller's 502 too (the front door's fallback raised; no answer).
    core = HttpServerConnection(LIMITS, 0.0)
    core.receive_data(GET, 0.0)
    assert isinstance(core.next_event(0.0), Request)
    with pytest.raises(LocalProtocolError):
        core.send_response(response, 0.0, date=DATE)
    assert core.data_to_send() == b""
    core.send_response(Response(status=502, headers=(("x-a", "1"),), body=b"bad"), 0.0, date=DATE)
    assert core.data_to_send() == (
        b"HTTP/1.1 502 Bad Gateway\r\ndate: " + DATE + b"\r\nx-a: 1\r\n"
        b"content-length: 3\r\nconnection: close\r\n\r\nbad"
    )
    assert core.next_event(0.0) is END_OF_INPUT

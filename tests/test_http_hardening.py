"""Both ``serve()`` servers under hostile and careless clients (issue 11 defects 4, 7, 10).

Real sockets; each test runs against the asyncio and the blocking server (the ``start``
fixture of tests/test_http_server.py).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time

import pytest
from test_http_server import Starter, connect, read_responses, read_until_closed, start

from pywatt_proto import Router, ServerLimits

__all__ = ["start"]  # the fixture, imported for pytest

BIG = 4 * 1024 * 1024


def _router() -> Router:
    r = Router()
    r.add_route("/hello", lambda q: {"message": "hello"})
    r.add_route("/echo", lambda q: q.body, ("POST", "GET"))
    payload = b"x" * BIG
    r.add_route("/big", lambda q: payload)
    r.add_route("/huge", lambda q: payload * 4)
    return r


# ------------------------------------------------------------------ defect 4: send timeout


@pytest.mark.skipif(sys.platform != "linux", reason="progress is read from SIOCOUTQ (Linux)")
def test_slow_steady_reader_gets_the_whole_answer(start: Starter) -> None:
    """4 MiB read at ~1.3 MB/s (~3 s) with a send timeout of 0.5 s without progress: the
    old servers reset it (one timer from pause_writing / one deadline for the whole send)."""
    srv = start(_router(), limits=ServerLimits(read_timeout=0.5))
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.settimeout(5)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        total = 0
        while True:
            try:
                data = s.recv(64 * 1024)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            total += len(data)
            time.sleep(0.05 * len(data) / (64 * 1024))
    assert total > BIG  # head + the whole body


def test_reader_that_stops_is_still_reset(start: Starter) -> None:
    srv = start(_router(), limits=ServerLimits(read_timeout=0.3))
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(2.0)  # read nothing
        begin = time.monotonic()
        received = len(read_until_closed(s, limit=5.0))
    assert received < 4 * BIG
    assert time.monotonic() - begin < 4.0


# ------------------------------------------------------------------ defect 10: CL + TE


@pytest.mark.parametrize("method", [b"POST", b"GET"])
def test_content_length_with_transfer_encoding_is_400_and_close(
    start: Starter, method: bytes
) -> None:
    srv = start(_router())
    with connect(srv.port) as s:
        s.sendall(
            method + b" /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        raw = read_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert raw.count(b"HTTP/1.1 ") == 1  # the smuggled request is not served
    assert b"connection: close" in raw.lower()
    assert b"\r\ndate: " in raw.lower()


def test_chunked_alone_still_keeps_alive(start: Starter) -> None:
    srv = start(_router())
    with connect(srv.port) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        (first, _, body), (second, _, _) = read_responses(s, 2)
    assert (first, body, second) == (200, b"abc", 200)


# ------------------------------------------------------------------ defect 7: connection cap


def test_idle_connections_do_not_lock_others_out(start: Starter) -> None:
    """50 idle keep-alive connections with only 2 worker threads: a normal client is still
    served at once (the old blocking server capped connections at max_workers, so it
    waited in the backlog until the idle ones timed out)."""
    limits = ServerLimits(keepalive_timeout=10.0)
    options = {"max_workers": 2} if start.kind == "sync" else {}  # type: ignore[attr-defined]
    srv = start(_router(), limits=limits, **options)
    idle = [connect(srv.port) for _ in range(50)]
    try:
        time.sleep(0.2)
        begin = time.monotonic()
        with connect(srv.port) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = read_until_closed(s, limit=5.0)
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - begin < 1.0
    finally:
        for s in idle:
            s.close()


def test_past_the_connection_cap_clients_get_503(start: Starter) -> None:
    limits = ServerLimits(keepalive_timeout=10.0)
    srv = start(_router(), limits=limits, max_connections=5)
    idle = [connect(srv.port) for _ in range(5)]
    try:
        time.sleep(0.2)
        begin = time.monotonic()
        with connect(srv.port) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = read_until_closed(s, limit=5.0)
        assert raw.startswith(b"HTTP/1.1 503 "), raw[:80]
        assert time.monotonic() - begin < 1.0
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5.0
    while True:  # the slots come back once the idle connections are gone
        with connect(srv.port) as s, contextlib.suppress(OSError):
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = read_until_closed(s, limit=5.0)
        if raw.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert raw.startswith(b"HTTP/1.1 200 ")


def test_many_clients_at_the_cap_are_answered_not_queued(start: Starter) -> None:
    """More clients than the cap, all at once: each gets an answer (200 or 503) quickly."""
    srv = start(_router(), max_connections=8)
    statuses: list[bytes] = []
    lock = threading.Lock()

    def client() -> None:
        with connect(srv.port) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = read_until_closed(s, limit=5.0)
        with lock:
            statuses.append(raw[9:12])

    threads = [threading.Thread(target=client) for _ in range(40)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(statuses) == 40
    assert set(statuses) <= {b"200", b"503"} and b"200" in statuses
    assert time.monotonic() - begin < 5.0

"""One contract suite for both HTTP servers (asyncio and blocking), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import pytest

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import Request, Response, Router, ServerLimits

FAST = ServerLimits(
    read_timeout=0.4,
    request_timeout=0.8,
    keepalive_timeout=0.6,
    max_header_bytes=4096,
    max_body_bytes=1000,
)


def build_router(kind: str, gate: threading.Event | None = None) -> Router:
    r = Router()
    r.add_route("/hello", lambda q: {"message": "hello, world"})
    r.add_route("/echo", lambda q: q.body, ("POST", "PUT"))
    r.add_route("/query", lambda q: q.query.to_dict())
    r.add_route("/chunked", lambda q: ("x" * 5000, 200, {"transfer-encoding": "chunked"}))
    r.add_route(
        "/cookies",
        lambda q: ("ok", 200, [("set-cookie", "a=1"), ("set-cookie", "b=2")]),
    )

    async def slow_async(q: Request) -> Any:
        await asyncio.sleep(0.3)
        return {"slow": True}

    def slow_sync(q: Request) -> Any:
        time.sleep(0.3)
        return {"slow": True}

    r.add_route("/slow", slow_async if kind == "asyncio" else slow_sync)
    big = b"x" * (32 * 1024 * 1024)
    r.add_route("/big", lambda q: big)
    return r


class Running(Protocol):
    port: int

    def close(self) -> None: ...


class AsyncioRunning:
    def __init__(self, router: Router, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            pywatt_asyncio.start_server(router, "127.0.0.1", 0, **options), self.loop
        )
        self.server = fut.result(5)
        self.port = self.server.port

    def close(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.close(5.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class SyncRunning:
    def __init__(self, router: Router, **options: Any) -> None:
        self.server = pywatt_sync.start_server(router, "127.0.0.1", 0, **options)
        self.port = self.server.port

    def close(self) -> None:
        self.server.shutdown(5.0)


Starter = Callable[..., Running]


@pytest.fixture(params=["asyncio", "sync"])
def start(request: pytest.FixtureRequest) -> Iterator[Callable[..., Running]]:
    kind = request.param
    running: list[Running] = []

    def starter(router: Router | None = None, **options: Any) -> Running:
        cls = AsyncioRunning if kind == "asyncio" else SyncRunning
        srv = cls(router or build_router(kind), **options)
        running.append(srv)
        return srv

    starter.kind = kind  # type: ignore[attr-defined]
    yield starter
    for srv in running:
        srv.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def read_until_closed(s: socket.socket, limit: float = 5.0) -> bytes:
    s.settimeout(limit)
    chunks = []
    while True:
        try:
            data = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_responses(s: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``count`` Content-Length-framed responses from ``s``."""
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    s.settimeout(5)
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            data = s.recv(65536)
            assert data, f"closed after {len(out)} responses: {buf!r}"
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            data = s.recv(65536)
            assert data
            buf += data
        out.append((status, headers, buf[:length]))
        buf = buf[length:]
    return out


GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


# ------------------------------------------------------------------ basics


def test_get_json_with_date_and_length(start: Starter) -> None:
    srv = start()
    with connect(srv.port) as s:
        s.sendall(GET_HELLO)
        ((status, headers, body),) = read_responses(s, 1)
    assert status == 200
    assert json.loads(body) == {"message": "hello, world"}
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert headers["date"].endswith(" GMT")


def test_keepalive_and_pipelining(start: Starter) -> None:
    srv = start()
    with connect(srv.port) as s:
        s.sendall(GET_HELLO)
        read_responses(s, 1)
        s.sendall(
            b"GET /query?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /query?n=3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        got = read_responses(s, 3)
    assert [g[0] for g in got] == [200, 200, 200]
    assert json.loads(got[0][2]) == {"n": ["1"]}
    assert got[1][2] == b"abc"
    assert json.loads(got[2][2]) == {"n": ["3"]}


def test_head_and_404_405(start: Starter) -> None:
    srv = start()
    with connect(srv.port) as s:
        s.sendall(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        s.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        s.sendall(b"DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        data = b""
        while data.count(b"HTTP/1.1") < 3 or not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 26" in head
    assert rest.startswith(b"HTTP/1.1 404")  # HEAD answer carried no body
    assert b"HTTP/1.1 405" in rest and b"allow: GET, HEAD, OPTIONS" in rest


def test_chunked_in_and_out(start: Starter) -> None:
    srv = start()
    with connect(srv.port) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        ((status, _, body),) = read_responses(s, 1)
        assert (status, body) == (200, b"hello world")
        s.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = read_until_closed(s)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"1388\r\n") and body.endswith(b"\r\n0\r\n\r\n")


def test_multi_valued_response_headers(start: Starter) -> None:
    srv = start()
    resp = httpx.get(f"http://127.0.0.1:{srv.port}/cookies")
    assert resp.headers.get_list("set-cookie") == ["a=1", "b=2"]


def test_expect_100_continue(start: Starter) -> None:
    srv = start()
    with connect(srv.port) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        s.settimeout(5)
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        s.sendall(b"body")
        ((status, _, body),) = read_responses(s, 1)
    assert (status, body) == (200, b"body")


def test_expect_100_with_too_large_body_gets_413_without_continue(start: Starter) -> None:
    srv = start(limits=FAST)
    with connect(srv.port) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        raw = read_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in raw


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET nope HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000, 413),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3e8\r\n" + b"a" * 1000 + b"\r\n" + b"3e8\r\n" + b"a" * 1000 + b"\r\n0\r\n\r\n",
            413,
        ),
    ],
    ids=["request-line", "dup-length", "header-syntax", "no-host", "target", "431", "413",
         "413-chunked"],
)  # fmt: skip
def test_malformed_requests(start: Starter, payload: bytes, status: int) -> None:
    srv = start(limits=FAST)
    with connect(srv.port) as s:
        with contextlib.suppress(OSError):  # the server may close before reading it all
            s.sendall(payload)
        raw = read_until_closed(s)
    assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:80]
    assert b"connection: close" in raw.lower()
    assert raw.count(b"HTTP/1.1 ") == 1


def test_slow_loris_gets_408_and_close(start: Starter) -> None:
    srv = start(limits=FAST)
    with connect(srv.port) as s:
        begin = time.monotonic()
        s.sendall(b"GET /hello HTTP/1.1\r\n")
        # trickle a header byte every 0.2 s: each read is in time, the request is not
        for ch in b"X-Slow: abcdef":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - begin > 2.0:
                break
        raw = read_until_closed(s)
        took = time.monotonic() - begin
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert took < 3.0


def test_silent_client_after_partial_headers_gets_408(start: Starter) -> None:
    srv = start(limits=FAST)
    with connect(srv.port) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        begin = time.monotonic()
        raw = read_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert 0.3 <= time.monotonic() - begin < 2.5


def test_idle_keepalive_connection_is_closed_quietly(start: Starter) -> None:
    srv = start(limits=FAST)
    with connect(srv.port) as s:
        s.sendall(GET_HELLO)
        read_responses(s, 1)
        begin = time.monotonic()
        rest = read_until_closed(s)
    assert rest == b""
    assert 0.4 <= time.monotonic() - begin < 2.5


def test_max_requests_per_connection(start: Starter) -> None:
    srv = start(limits=ServerLimits(max_requests_per_connection=2))
    with connect(srv.port) as s:
        s.sendall(GET_HELLO * 3)
        raw = read_until_closed(s)
    assert raw.count(b"HTTP/1.1 200") == 2
    assert b"connection: close" in raw


# ------------------------------------------------------------------ lifecycle, logs, app objects


def test_graceful_shutdown_drains_in_flight(start: Starter) -> None:
    srv = start()
    with connect(srv.port) as busy, connect(srv.port) as idle:
        idle.sendall(GET_HELLO)
        read_responses(idle, 1)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        closer = threading.Thread(target=srv.close)
        closer.start()
        raw = read_until_closed(busy)
        idle_rest = read_until_closed(idle)
        closer.join(10)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b'{"slow":true}' in raw
    assert b"connection: close" in raw
    assert idle_rest == b""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        raise OSError("still accepting")  # pragma: no cover


def test_access_log_goes_to_given_stream(start: Starter) -> None:
    log = io.StringIO()
    srv = start(access_log=log)
    httpx.get(f"http://127.0.0.1:{srv.port}/query?a=1")
    deadline = time.monotonic() + 2
    while "GET /query?a=1" not in log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    line = log.getvalue().strip()
    assert '"GET /query?a=1" 200' in line and line.startswith("127.0.0.1:")


def test_serves_objects_with_router_attribute(start: Starter) -> None:
    class App:
        def __init__(self) -> None:
            self.router = build_router("sync")

    srv = start(App())
    assert httpx.get(f"http://127.0.0.1:{srv.port}/hello").json() == {"message": "hello, world"}
    with pytest.raises(TypeError):
        pywatt_sync.start_server(object())


def test_serves_on_given_socket(start: Starter) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = start(sock=sock)
    assert srv.port == port
    assert httpx.get(f"http://127.0.0.1:{port}/hello").status_code == 200


def make_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    import datetime
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as d:
        cert_path, key_path = f"{d}/c.pem", f"{d}/k.pem"
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert_path, key_path)
        client_ctx = ssl.create_default_context(cafile=cert_path)
    return server_ctx, client_ctx


def test_tls(start: Starter) -> None:
    server_ctx, client_ctx = make_tls()
    srv = start(ssl=server_ctx)
    resp = httpx.get(f"https://localhost:{srv.port}/hello", verify=client_ctx)
    assert resp.status_code == 200 and resp.json() == {"message": "hello, world"}
    with pywatt_sync.Client(ssl=client_ctx) as client:
        assert client.get(f"https://localhost:{srv.port}/hello").send().status == 200


# ------------------------------------------------------------------ real peers


def test_urllib_and_httpx_clients(start: Starter) -> None:
    srv = start()
    base = f"http://127.0.0.1:{srv.port}"
    with urllib.request.urlopen(f"{base}/query?x=%20y&x=2", timeout=5) as resp:
        assert json.loads(resp.read()) == {"x": [" y", "2"]}
    req = urllib.request.Request(f"{base}/echo", data=b"payload", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.read() == b"payload"
    with httpx.Client(base_url=base) as client:
        for _ in range(20):  # keep-alive reuse
            assert client.get("/hello").status_code == 200
        assert client.put("/echo", content=b"x" * 900).content == b"x" * 900


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(start: Starter) -> None:
    srv = start()
    out = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "5", f"http://127.0.0.1:{srv.port}/hello",
         f"http://127.0.0.1:{srv.port}/hello"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert out.count(b"HTTP/1.1 200 OK") == 2
    out = subprocess.run(
        ["curl", "-s", "--max-time", "5", "-H", "Expect: 100-continue", "--data-binary",
         "@-", f"http://127.0.0.1:{srv.port}/echo"],
        input=b"z" * 900, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert out == b"z" * 900


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_short_run_has_no_errors(start: Starter) -> None:
    srv = start()
    out = subprocess.run(
        ["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{srv.port}/hello"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "Non-2xx" not in out and "Socket errors" not in out
    assert int(out.split(" requests in")[0].split()[-1]) > 100


@pytest.mark.parametrize("example", ["http_server.py", "http_server_sync.py"])
def test_example_servers_serve_hello_and_stop_on_sigterm(example: str) -> None:
    import os
    import signal
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(
        [sys.executable, str(root / "examples" / example), "--port", str(port), "--access-log"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        assert resp.json() == {"message": "hello, world"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out == b""  # library code never prints to stdout
    assert b'"GET /hello" 200' in err  # the access log goes to stderr


def test_client_that_stops_reading_is_dropped(start: Starter) -> None:
    srv = start(limits=ServerLimits(read_timeout=0.5))
    with connect(srv.port) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(2.0)  # read nothing while the server tries to send 32 MiB
        begin = time.monotonic()
        received = len(read_until_closed(s, limit=5.0))
    assert received < 32 * 1024 * 1024  # the server gave up and reset the connection
    assert time.monotonic() - begin < 4.0


def test_tls_client_that_never_handshakes_holds_up_nobody(start: Starter) -> None:
    """Handshakes run per connection, not in the accept loop: a peer that connects and sends
    no ClientHello does not delay the next client."""
    server_ctx, client_ctx = make_tls()
    srv = start(ssl=server_ctx)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5):
        begin = time.monotonic()
        with pywatt_sync.Client(ssl=client_ctx) as client:
            assert client.get(f"https://localhost:{srv.port}/hello").send().status == 200
        assert time.monotonic() - begin < 2.0


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_a_handler_raising_systemexit_is_answered_500_and_the_server_goes_on(
    start: Starter, exc_type: type[BaseException]
) -> None:
    # As uvicorn and the blocking module do: the handler is not the process. The blocking
    # server's client used to wait for an answer that never came (its event thread died);
    # the asyncio server stopped (the exception left the event loop).
    def leave(q: Request) -> Any:
        raise exc_type(3)

    async def leave_async(q: Request) -> Any:
        await asyncio.sleep(0)
        raise exc_type(3)

    r = Router()
    r.add_route("/exit", leave)
    if start.kind == "asyncio":  # type: ignore[attr-defined]
        r.add_route("/exit-async", leave_async)
    r.add_route("/hello", lambda q: "hi")
    srv = start(r)
    paths = ["/exit", "/exit-async"] if start.kind == "asyncio" else ["/exit"]  # type: ignore[attr-defined]
    with connect(srv.port) as s:
        s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths))
        s.sendall(GET_HELLO)
        statuses = [status for status, _, _ in read_responses(s, len(paths) + 1)]
    assert statuses == [500] * len(paths) + [200]


def test_a_handler_answer_h11_refuses_gets_500_and_the_server_goes_on(
    start: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler returning what is not valid HTTP (a Content-Length its body does not have)
    is answered 500 and logged, like a handler that raised (was: no answer at all); the
    connection then closes (the HTTP core's state after a refused answer) and the server
    serves the next one."""
    r = build_router(start.kind)  # type: ignore[attr-defined]
    r.add_route("/lying", lambda q: Response(headers=[("content-length", "1")], body=b"abc"))
    srv = start(r)
    with caplog.at_level(logging.ERROR, logger="pywatt.http"), connect(srv.port) as s:
        s.sendall(b"GET /lying HTTP/1.1\r\nhost: x\r\n\r\n")
        ((status, headers, body),) = read_responses(s, 1)
    assert status == 500 and json.loads(body)["message"] == "Internal server error"
    assert headers.get("connection") == "close"
    assert any("GET /lying" in rec.getMessage() for rec in caplog.records)
    with connect(srv.port) as s:
        s.sendall(GET_HELLO)
        ((status, _, body),) = read_responses(s, 1)
    assert status == 200 and json.loads(body) == {"message": "hello, world"}

"""Both HTTP clients against the stdlib http.server, our own server and scripted raw peers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

import pywatt_asyncio
import pywatt_sync
from pywatt_proto import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    ClientCircuitOpenError,
    ClientResponse,
    ConnectError,
    HTTPClientError,
    HTTPProtocolError,
    HTTPStatusError,
    LocalProtocolError,
    ReadTimeout,
    Request,
    RetryPolicy,
    Router,
    TotalTimeout,
)

# ------------------------------------------------------------------ peers


class StdlibHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ports: ClassVar[set[int]] = set()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        StdlibHandler.ports.add(self.client_address[1])
        if self.path.startswith("/status/"):
            self._send(int(self.path.split("/")[2]), b'{"err":true}')
            return
        info = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        self._send(200, json.dumps(info).encode())

    do_HEAD = do_GET
    do_DELETE = do_GET
    do_OPTIONS = do_GET

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        info = {"body": body.decode(), "ctype": self.headers.get("Content-Type")}
        self._send(200, json.dumps(info).encode())

    do_PUT = do_POST
    do_PATCH = do_POST


@pytest.fixture(scope="module")
def stdlib_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StdlibHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Flaky:
    """Our own (blocking) server with endpoints that fail on purpose."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.ports: set[int] = set()
        self.lock = threading.Lock()
        r = Router()
        r.add_route("/flaky/{n:int}", self.flaky, ("GET", "POST"))
        r.add_route("/hello", self.hello)
        r.add_route("/slow", self.slow)
        self.server = pywatt_sync.start_server(r)
        self.url = f"http://127.0.0.1:{self.server.port}"

    def hello(self, q: Request) -> Any:
        with self.lock:
            if q.client:
                self.ports.add(q.client[1])
        return {"hello": True}

    def flaky(self, q: Request) -> Any:
        """Fail with 503 the first n calls (per method), then 200."""
        key = f"{q.method} {q.path}"
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            count = self.calls[key]
        n = int(q.path_params["n"])  # type: ignore[call-overload]
        if count <= n:
            return ({"try": count}, 503, {"retry-after": "0"})
        return {"try": count}

    def slow(self, q: Request) -> Any:
        time.sleep(0.3)
        with self.lock:
            if q.client:
                self.ports.add(q.client[1])
        return {"slow": True}


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    f = Flaky()
    yield f
    f.server.shutdown(2.0)


def raw_server(script: Callable[[socket.socket], None]) -> tuple[str, Callable[[], None]]:
    """Start a one-shot-per-connection raw TCP peer running ``script``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_run, args=(conn,), daemon=True).start()

    def _run(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            script(conn)

    threading.Thread(target=loop, daemon=True).start()

    def close() -> None:
        stop.set()
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", close


# ------------------------------------------------------------------ driver facade


class Facade:
    """Runs the same test body against the blocking and the asyncio client."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "asyncio" else None
        if kind == "asyncio":
            self.client: Any = pywatt_asyncio.AsyncClient(**options)
        else:
            self.client = pywatt_sync.Client(**options)

    def run(self, fn: Callable[[Any], Any]) -> Any:
        result = fn(self.client)
        if self.loop is not None:
            return self.loop.run_until_complete(result)
        return result

    def send(self, fn: Callable[[Any], Any]) -> ClientResponse:
        return self.run(lambda c: fn(c).send())  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.client.aclose())
            self.loop.close()
        else:
            self.client.close()


@pytest.fixture(params=["sync", "asyncio"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Facade]]:
    made: list[Facade] = []

    def factory(**options: Any) -> Facade:
        f = Facade(request.param, **options)
        made.append(f)
        return f

    yield factory
    for f in made:
        f.close()


# ------------------------------------------------------------------ tests


def test_fluent_builder_against_stdlib_server(make: Callable[..., Facade], stdlib_url: str) -> None:
    c = make(base_url=stdlib_url + "/", headers={"X-Default": "d"})
    resp = c.send(
        lambda cl: (
            cl.get("/echo/path")
            .query(q="a b&c", n=[1, 2], flag=True, skip=None)
            .header("X-Trace", "t1")
            .bearer("tok")
        )
    )
    assert resp.status == 200 and resp.is_success
    info = resp.json()
    assert info["path"] == "/echo/path?q=a%20b%26c&n=1&n=2&flag=true"
    assert info["headers"]["x-trace"] == "t1"
    assert info["headers"]["x-default"] == "d"
    assert info["headers"]["authorization"] == "Bearer tok"
    assert info["headers"]["host"] == stdlib_url.removeprefix("http://")
    assert info["headers"]["user-agent"] == "pywatt"
    posted = c.send(lambda cl: cl.post("items").json({"k": "\u00e9"})).json()
    assert posted == {"body": '{"k":"\u00e9"}', "ctype": "application/json"}
    form = c.send(lambda cl: cl.put("/f").form({"a": "1 2"})).json()
    assert form == {"body": "a=1%202", "ctype": "application/x-www-form-urlencoded"}
    assert c.send(lambda cl: cl.patch("/p").text("t")).json()["ctype"].startswith("text/plain")
    head = c.send(lambda cl: cl.head("/h"))
    assert head.status == 200 and head.body == b""
    assert c.send(lambda cl: cl.delete("/d")).status == 200
    assert c.send(lambda cl: cl.options("/o")).status == 200


def test_json_helpers_and_status_errors(make: Callable[..., Facade], stdlib_url: str) -> None:
    c = make(base_url=stdlib_url)
    assert c.run(lambda cl: cl.get_json("/x", a=1))["path"] == "/x?a=1"
    assert c.run(lambda cl: cl.post_json("/x", [1]))["body"] == "[1]"
    resp = c.send(lambda cl: cl.get("/status/404"))
    assert resp.status == 404
    with pytest.raises(HTTPStatusError) as info:
        resp.raise_for_status()
    assert info.value.response.status == 404
    with pytest.raises(HTTPStatusError):
        c.run(lambda cl: cl.get("/status/500").send_json())


def test_keepalive_reuses_connections(make: Callable[..., Facade], flaky: Flaky) -> None:
    c = make(base_url=flaky.url)
    for _ in range(10):
        assert c.send(lambda cl: cl.get("/hello")).status == 200
    assert len(flaky.ports) == 1


def test_pool_bound_per_host(flaky: Flaky) -> None:
    client = pywatt_sync.Client(flaky.url, max_per_host=2)
    threads = [threading.Thread(target=lambda: client.get("/slow").send()) for _ in range(5)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    client.close()
    assert len(flaky.ports) <= 2
    assert time.monotonic() - begin >= 0.55  # 5 requests through 2 connections: 3 waves


def test_async_pool_bound_per_host(flaky: Flaky) -> None:
    async def main() -> None:
        async with pywatt_asyncio.AsyncClient(flaky.url, max_per_host=2) as client:
            await asyncio.gather(*(client.get("/slow").send() for _ in range(5)))

    asyncio.run(main())
    assert len(flaky.ports) <= 2


def test_against_our_own_async_server(make: Callable[..., Facade]) -> None:
    router = Router()
    router.add_route("/n/{x:int}", lambda q: {"x": q.path_params["x"]})

    async def serve_and_call() -> None:
        server = await pywatt_asyncio.start_server(router)
        async with pywatt_asyncio.AsyncClient(f"http://127.0.0.1:{server.port}") as client:
            results = await asyncio.gather(*(client.get(f"/n/{i}").send() for i in range(20)))
        assert [r.json()["x"] for r in results] == list(range(20))
        await server.close()

    asyncio.run(serve_and_call())


def test_retry_on_503_for_idempotent_only(make: Callable[..., Facade], flaky: Flaky) -> None:
    policy = RetryPolicy(backoff=Backoff(base=0.01, cap=0.05, max_attempts=4))
    c = make(base_url=flaky.url, retry=policy, rng=random.Random(1))
    resp = c.send(lambda cl: cl.get("/flaky/2"))
    assert resp.status == 200 and resp.json() == {"try": 3}
    post = c.send(lambda cl: cl.post("/flaky/2"))
    assert post.status == 503  # POST is not retried
    exhausted = c.send(lambda cl: cl.get("/flaky/9"))
    assert exhausted.status == 503 and exhausted.json() == {"try": 4}


def test_connect_error_retried_then_raised(make: Callable[..., Facade]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    policy = RetryPolicy(backoff=Backoff(base=0.01, cap=0.02, max_attempts=3))
    c = make(retry=policy)
    begin = time.monotonic()
    with pytest.raises(ConnectError):
        c.send(lambda cl: cl.post(f"http://127.0.0.1:{port}/x"))
    assert time.monotonic() - begin < 2


def test_a_peer_that_never_reads_the_request_is_a_read_timeout(
    make: Callable[..., Facade],
) -> None:
    # The request's bytes must leave within read_timeout too: the asyncio client used to
    # wait in drain() forever (no total timeout) on a peer that accepts and never reads.
    done = threading.Event()

    def deaf(conn: socket.socket) -> None:
        done.wait(10.0)

    url, close = raw_server(deaf)
    try:
        c = make(read_timeout=0.3, timeout=None)
        body = b"x" * (64 * 1024 * 1024)  # more than the socket buffers hold
        begin = time.monotonic()
        with pytest.raises(ReadTimeout, match="sending the request"):
            c.send(lambda cl: cl.post(url + "/up").content(body))
        assert time.monotonic() - begin < 5.0
    finally:
        done.set()
        close()


def test_read_and_total_timeouts(make: Callable[..., Facade]) -> None:
    def silent(conn: socket.socket) -> None:
        conn.recv(65536)
        time.sleep(1.5)

    url, close = raw_server(silent)
    try:
        c = make(read_timeout=0.2)
        begin = time.monotonic()
        with pytest.raises(ReadTimeout) as info:
            c.send(lambda cl: cl.get(url + "/x"))
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - begin < 1.0
        c2 = make(read_timeout=5.0, timeout=0.3)
        with pytest.raises(TotalTimeout):
            c2.send(lambda cl: cl.get(url + "/x"))
        with pytest.raises(TotalTimeout):
            c2.send(lambda cl: cl.get(url + "/x").with_timeout(0.1))
    finally:
        close()


def test_protocol_errors(make: Callable[..., Facade]) -> None:
    def garbage(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"this is not http\r\n\r\n")

    def too_big(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000)

    def cut(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort")

    for script in (garbage, too_big, cut):
        url, close = raw_server(script)
        try:
            c = make(max_response_bytes=1000)
            with pytest.raises(HTTPProtocolError):
                c.send(functools.partial(_get, url=url + "/x"))
        finally:
            close()


def _get(cl: Any, url: str) -> Any:
    return cl.get(url)


def test_stale_keepalive_connection_is_replaced(make: Callable[..., Facade]) -> None:
    def one_then_close(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.05)  # then close without "Connection: close"

    url, close = raw_server(one_then_close)
    try:
        c = make()
        assert c.send(lambda cl: cl.get(url + "/a")).body == b"ok"
        time.sleep(0.2)
        assert c.send(lambda cl: cl.get(url + "/b")).body == b"ok"
    finally:
        close()


def test_circuit_breaker_opens(make: Callable[..., Facade], flaky: Flaky) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=30.0, name="flaky")
    c = make(base_url=flaky.url, breaker=breaker)
    assert c.send(lambda cl: cl.get("/flaky/5")).status == 503
    assert c.send(lambda cl: cl.get("/flaky/5")).status == 503
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        c.send(lambda cl: cl.get("/hello"))
    assert info.value.name == "flaky" and info.value.remaining > 0
    assert flaky.calls["GET /flaky/5"] == 2


def test_breaker_counts_one_outcome_per_call_not_per_attempt(
    make: Callable[..., Facade], flaky: Flaky
) -> None:
    # Issue 14.6: one call with 4 attempts used to open a threshold-3 breaker by itself.
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30.0)
    policy = RetryPolicy(backoff=Backoff(base=0.001, cap=0.002, max_attempts=4))
    c = make(base_url=flaky.url, breaker=breaker, retry=policy)
    assert c.send(lambda cl: cl.get("/flaky/3")).status == 200  # 3 x 503, then 200
    assert flaky.calls["GET /flaky/3"] == 4
    counters = breaker.counters
    assert (counters.calls, counters.successes, counters.failures) == (1, 1, 0)
    assert breaker.state is BreakerState.CLOSED

    assert c.send(lambda cl: cl.get("/flaky/100")).status == 503  # 4 attempts, all 503
    assert flaky.calls["GET /flaky/100"] == 4
    assert (breaker.counters.failures, breaker.counters.consecutive_failures) == (1, 1)
    assert breaker.state is BreakerState.CLOSED
    c.send(lambda cl: cl.get("/flaky/100"))
    c.send(lambda cl: cl.get("/flaky/100"))
    assert breaker.state is BreakerState.OPEN  # the third failed CALL opens it
    assert flaky.calls["GET /flaky/100"] == 12


def test_a_bad_url_is_refused_before_the_breaker_admits_the_call(
    make: Callable[..., Facade],
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30.0)
    c = make(base_url="http://127.0.0.1:99999", breaker=breaker)
    with pytest.raises(LocalProtocolError, match="bad port"):
        c.send(lambda cl: cl.get("/x"))
    assert breaker.counters.calls == 0 and breaker.state is BreakerState.CLOSED


def test_call_cancelled_while_waiting_to_retry_is_reported_cancelled(flaky: Flaky) -> None:
    # The breaker hears one outcome per call even when the call ends in its retry sleep.
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30.0)
    policy = RetryPolicy(backoff=Backoff(base=30.0, cap=30.0, max_attempts=2))

    async def main() -> None:
        async with pywatt_asyncio.AsyncClient(flaky.url, breaker=breaker, retry=policy) as c:
            task = asyncio.ensure_future(c.get("/flaky/100").send())
            while flaky.calls.get("GET /flaky/100") != 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    counters = breaker.counters
    assert (counters.calls, counters.cancelled, counters.failures) == (1, 1, 0)


def test_client_counts_calls_as_pybreaker_counts_a_wrapped_retrying_call(flaky: Flaky) -> None:
    pybreaker = pytest.importorskip("pybreaker")
    policy = RetryPolicy(backoff=Backoff(base=0.001, cap=0.002, max_attempts=4))
    plain = pywatt_sync.Client(base_url=flaky.url, retry=policy)
    theirs = pybreaker.CircuitBreaker(fail_max=3)

    def call() -> None:  # one retrying call; a 5xx answer is a failure
        plain.get("/flaky/100").send().raise_for_status()

    with pytest.raises(HTTPStatusError):
        theirs.call(call)
    ours = CircuitBreaker(failure_threshold=3)
    with pywatt_sync.Client(base_url=flaky.url, retry=policy, breaker=ours) as client:
        assert client.get("/flaky/100").send().status == 503
    plain.close()
    assert flaky.calls["GET /flaky/100"] == 8  # 4 attempts each
    assert theirs.fail_counter == ours.counters.consecutive_failures == 1


def test_circuit_open_error_is_a_client_error_with_the_cause(
    make: Callable[..., Facade], flaky: Flaky
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30.0, name="flaky")
    c = make(base_url=flaky.url, breaker=breaker)
    assert c.send(lambda cl: cl.get("/flaky/5")).status == 503
    with pytest.raises(HTTPClientError) as info:  # `except HTTPClientError` catches it
        c.send(lambda cl: cl.get("/hello"))
    err = info.value
    assert isinstance(err, CircuitOpenError) and isinstance(err, ClientCircuitOpenError)
    assert err.url == flaky.url + "/hello"
    cause = err.__cause__
    assert isinstance(cause, HTTPStatusError) and cause.response.status == 503
    assert cause.url == flaky.url + "/flaky/5"

    breaker2 = CircuitBreaker(failure_threshold=1, reset_timeout=30.0)
    c2 = make(base_url=flaky.url, breaker=breaker2, read_timeout=0.05)
    with pytest.raises(ReadTimeout) as timed_out:
        c2.send(lambda cl: cl.get("/slow"))
    with pytest.raises(CircuitOpenError) as refused:
        c2.send(lambda cl: cl.get("/hello"))
    assert refused.value.__cause__ is timed_out.value  # the ReadTimeout behind it


def test_relative_url_without_base_is_refused(make: Callable[..., Facade]) -> None:
    from pywatt_proto import LocalProtocolError

    c = make()
    with pytest.raises(LocalProtocolError):
        c.send(lambda cl: cl.get("/relative"))
    with pytest.raises(LocalProtocolError):
        c.send(lambda cl: cl.get("ftp://example.com/x"))

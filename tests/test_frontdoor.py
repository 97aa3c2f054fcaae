"""The development host's HTTP front door (pywatt_asyncio._frontdoor), against fake upstreams.

Real sockets and raw, hostile bytes; the upstream is a plain object implementing
``Upstream`` (the module side is covered by tests/test_cli.py and test_e2e_asyncio.py).
Issue 11 defects 6, 8, 9, 10, 12 and issue 12 point 4.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pywatt_asyncio._frontdoor import FrontDoor, FrontDoorLimits, FrontRequest, serve_http
from pywatt_proto._messages import HttpResponse

ROOT = Path(__file__).resolve().parent.parent
_ENV = {**os.environ, "PYWATT_STDOUT_GUARD": "0"}
# descriptor limits and the kernel's send queue (SIOCOUTQ) as Linux has them
_LINUX = pytest.mark.skipif(sys.platform != "linux", reason="Linux descriptor/socket behaviour")
FAST = FrontDoorLimits(
    read_timeout=0.3, request_timeout=0.6, keepalive_timeout=0.4, max_header_bytes=4096
)


def _ok(status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"ok") -> Any:
    return HttpResponse(
        request_id="r",
        status_code=status,
        headers={"content-type": "text/plain"} if headers is None else headers,
        body=body,
    )


class Recorder:
    """An Upstream that records each request and answers ``answer`` (200 ``ok``)."""

    def __init__(self, limit: int = 1024, answer: HttpResponse | None = None) -> None:
        self.limit = limit
        self.seen: list[FrontRequest] = []
        self.answer = answer or _ok()
        self.gate: asyncio.Event | None = None

    def body_limit(self, method: str, target: str) -> int:
        return self.limit

    async def forward(self, request: FrontRequest) -> tuple[HttpResponse, str | None]:
        self.seen.append(request)
        if self.gate is not None:
            await self.gate.wait()
        return self.answer, "mod"


Opener = Callable[..., Awaitable[tuple[Recorder, FrontDoor, int]]]


@pytest.fixture
async def open_door() -> AsyncIterator[Opener]:
    doors: list[FrontDoor] = []

    async def opener(up: Recorder | None = None, **options: Any) -> tuple[Recorder, FrontDoor, int]:
        up = up or Recorder()
        door = await serve_http(up, "127.0.0.1", 0, **options)
        doors.append(door)
        return up, door, door.sockets[0].getsockname()[1]

    yield opener
    for door in doors:
        door.close()


async def _exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` and return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await _read_all(reader, timeout)
    finally:
        writer.close()


async def _read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                out += chunk
        except ConnectionError:
            pass
    return out


def _head(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


# ------------------------------------------------------------------ forwarding


async def test_forwards_a_front_request_with_forwarding_headers(open_door: Opener) -> None:
    up, _, port = await open_door()
    out = await _exchange(
        port,
        b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"X-Forwarded-Proto: https\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    assert out.startswith(b"HTTP/1.1 200 "), out
    (req,) = up.seen
    assert (req.method, req.target, req.body, req.http_version) == ("POST", "/a?b=1", b"abc", "1.1")
    assert req.client is not None and req.client[0] == "127.0.0.1"
    # the peer is not trusted by default: the client's own values are replaced
    assert req.headers["x-forwarded-for"] == "127.0.0.1"
    assert req.headers["x-forwarded-proto"] == "http"
    assert req.headers["host"] == "x"
    assert "connection" not in req.headers  # hop-by-hop


async def test_trusted_proxy_keeps_the_forwarded_client(open_door: Opener) -> None:
    up, _, port = await open_door(forwarded_allow_ips="127.0.0.1, 10.0.0.0/8")
    await _exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6, 10.1.2.3\r\n"
        b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    )
    (req,) = up.seen
    # rightmost untrusted entry (uvicorn's rule); the list ends with it
    assert req.headers["x-forwarded-for"] == "6.6.6.6"
    assert req.headers["x-forwarded-proto"] == "https"
    assert req.client == ("6.6.6.6", 0)


async def test_chunked_request_is_forwarded_with_a_length(open_door: Opener) -> None:
    up, _, port = await open_door()
    out = await _exchange(
        port,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 ")
    (req,) = up.seen
    assert req.body == b"abc"
    assert req.headers["content-length"] == "3"
    assert "transfer-encoding" not in req.headers


# ------------------------------------------------------------------ defect 6: limits, deadlines


async def test_declared_oversized_body_is_413_at_once_without_100_continue(
    open_door: Opener,
) -> None:
    up, _, port = await open_door()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    begin = time.monotonic()
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    out = await _read_all(reader, 5.0)  # not a byte of the GiB was sent
    writer.close()
    assert out.startswith(b"HTTP/1.1 413 "), out[:80]
    assert b"100 Continue" not in out
    assert b"connection: close" in out.lower()
    assert time.monotonic() - begin < 2.0
    assert up.seen == []


async def test_body_over_the_upstream_limit_is_413_and_not_forwarded(open_door: Opener) -> None:
    up, _, port = await open_door(Recorder(limit=100))
    out = await _exchange(port, b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")
    chunked = b"2710\r\n" + b"x" * 10000 + b"\r\n0\r\n\r\n"
    out = await _exchange(
        port, b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    assert out.startswith(b"HTTP/1.1 413 ")
    assert up.seen == []


async def test_header_trickle_gets_408(open_door: Opener) -> None:
    _, _, port = await open_door(limits=FAST)
    begin = time.monotonic()
    # each byte comes in time for read_timeout (0.3 s), the request not (0.6 s)
    out = await asyncio.to_thread(
        _trickle, port, b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-Slow: abcdefghijklmnop", 0.1
    )
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert time.monotonic() - begin < 2.5


def _trickle(port: int, head: bytes, rest: bytes, pause: float) -> bytes:
    """Send ``head``, then ``rest`` a byte per ``pause`` s until the server answers;
    return what it sent before closing."""
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        for ch in rest:
            if select.select([s], [], [], pause)[0]:
                break  # the answer is there: stop writing (a write now would be reset)
            s.sendall(bytes([ch]))
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            out += data
        return out


async def test_body_trickle_gets_408(open_door: Opener) -> None:
    up, _, port = await open_door(limits=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    out = await _read_all(reader, 3.0)
    writer.close()
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert up.seen == []


async def test_idle_keepalive_connection_is_closed(open_door: Opener) -> None:
    _, _, port = await open_door(limits=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    begin = time.monotonic()
    out = await _read_all(reader, 3.0)  # the answer, then a quiet close
    writer.close()
    assert out.startswith(b"HTTP/1.1 200 ") and out.count(b"HTTP/1.1") == 1
    assert 0.3 <= time.monotonic() - begin < 2.0


async def test_silent_connection_is_closed_quietly(open_door: Opener) -> None:
    _, _, port = await open_door(limits=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    begin = time.monotonic()
    out = await _read_all(reader, 3.0)
    writer.close()
    assert out == b""
    assert time.monotonic() - begin < 2.0


async def test_connection_cap_answers_503_and_frees_up(open_door: Opener) -> None:
    _, door, port = await open_door(limits=FrontDoorLimits(max_connections=3))
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for _ in range(50):
        if door.connections == 3:
            break
        await asyncio.sleep(0.02)
    begin = time.monotonic()
    out = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503 "), out
    assert time.monotonic() - begin < 1.0
    assert door.refused == 1
    for _, w in idle:
        w.close()
    for _ in range(50):
        if door.connections == 0:
            break
        await asyncio.sleep(0.02)
    out = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")


@_LINUX
def test_default_cap_keeps_descriptors_for_the_modules_and_logs_little(tmp_path: Path) -> None:
    """Under a 256-descriptor limit, 300 idle clients: the cap derived from the limit
    answers 503 instead of exhausting descriptors (the host can still open pipes for a
    module), nothing is logged per connection, and clients are served again once the idle
    ones are closed."""
    script = tmp_path / "door.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, logging, os, resource, sys
            from pywatt_asyncio._frontdoor import FrontDoorLimits, serve_http
            from pywatt_proto._messages import HttpResponse

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

            class Up:
                def body_limit(self, method, target):
                    return 1024
                async def forward(self, request):
                    return HttpResponse(request_id="r", status_code=200, headers={},
                                        body=b"ok"), "m"

            async def main():
                limits = FrontDoorLimits(reserved_descriptors=64, keepalive_timeout=30.0)
                door = await serve_http(Up(), "127.0.0.1", 0, limits=limits)
                print(door.sockets[0].getsockname()[1], flush=True)
                loop = asyncio.get_running_loop()
                for command in ("flooded", "done"):
                    await loop.run_in_executor(None, sys.stdin.readline)
                    pipes = [os.pipe() for _ in range(20)]  # what starting modules needs
                    for r, w in pipes:
                        os.close(r)
                        os.close(w)
                    print(command, "open", door.connections, "cap", door.cap,
                          "refused", door.refused, flush=True)
                door.close()

            asyncio.run(main())
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        text=True,
        env=_ENV,  # stdout here is our pipe, not a protocol channel
    )
    assert proc.stdin is not None and proc.stdout is not None
    watchdog = threading.Timer(60.0, proc.kill)  # a hang fails the test, never the suite
    watchdog.start()
    try:
        port = int(proc.stdout.readline())
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 503 ")
        proc.stdin.write("\n")
        proc.stdin.flush()
        flooded = proc.stdout.readline()
        for s in idle:
            s.close()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200 ")
        proc.stdin.write("\n")
        proc.stdin.flush()
        done = proc.stdout.readline()
        _, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    m = re.search(r"flooded open (\d+) cap (\d+) refused (\d+)", flooded)
    assert m is not None, (flooded, err)
    opened, cap, refused = map(int, m.groups())
    assert cap == 256 - 64 and opened == cap
    assert refused >= 300 - cap
    assert done.startswith("done open 0")
    assert "Too many open files" not in err
    assert len(err) < 2000, err  # a few lines, not one per refused connection


@_LINUX
def test_accept_errors_are_logged_a_few_at_a_time(tmp_path: Path) -> None:
    """Descriptors exhausted (an explicit cap above the limit): accept fails with EMFILE
    again and again; the log says so a few times, then summarises."""
    script = tmp_path / "emfile.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, logging, resource, socket, sys
            from pywatt_asyncio._frontdoor import FrontDoorLimits, serve_http
            from pywatt_proto._messages import HttpResponse
            import pywatt_asyncio._frontdoor as fd

            fd._LOG_PERIOD = 1.0
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
            logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

            class Up:
                def body_limit(self, method, target):
                    return 1024
                async def forward(self, request):
                    return HttpResponse(request_id="r", status_code=200, headers={}, body=b""), None

            async def main():
                door = await serve_http(Up(), "127.0.0.1", 0,
                                        limits=FrontDoorLimits(max_connections=10000))
                port = door.sockets[0].getsockname()[1]
                hog = []
                try:
                    while True:
                        hog.append(open("/dev/null"))
                except OSError:
                    pass
                for f in hog[-4:]:  # room for two client sockets here, none for the server
                    f.close()
                c1 = socket.create_connection(("127.0.0.1", port))
                c2 = socket.create_connection(("127.0.0.1", port))
                await asyncio.sleep(2.5)
                for f in hog:
                    f.close()
                c1.close(); c2.close()
                door.close()

            asyncio.run(main())
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, timeout=60, cwd=str(ROOT), env=_ENV
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "accept failed" in err
    assert err.count("accept failed") <= 3 * 3, err  # a burst of 3 per 1 s period
    assert "more accept errors" in err
    assert "Traceback" not in err
    assert len(err) < 5000


# ------------------------------------------------------------------ defect 8: targets


@pytest.mark.parametrize(
    "target",
    [
        b"/<img src=x onerror=alert(1)>",
        b"/a>b",
        b"/a`b",
        b'/q?a="b"',
        b"/q?a=<b>",
        b"/caf\xc3\xa9",
        b"/a\x7f",
        b"/q?a#frag",
        b"*",  # asterisk-form with a method other than OPTIONS
        b"example.com:443",  # authority-form
    ],
)
async def test_targets_a_reference_module_would_refuse_are_400_here(
    open_door: Opener, target: bytes
) -> None:
    up, _, port = await open_door()
    out = await _exchange(
        port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert up.seen == []
    body = out.split(b"\r\n\r\n", 1)[1]
    assert target not in body and b"<" not in body
    head = _head(out)
    assert head["content-type"] == "application/json"
    assert "date" in head


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b'/json/{"a":1}', '/json/{"a":1}'),  # '"', '{', '}' pass the reference's path rule
        (b"/p|~!$&'()*+,;=:@[]\\^_", "/p|~!$&'()*+,;=:@[]\\^_"),
        (b"/q?x={}|`^~", "/q?x={}|`^~"),
        (b"/a%20b?c%22=d", "/a%20b?c%22=d"),
        (b"http://example.com/abs/p?q=1", "/abs/p?q=1"),  # absolute-form -> origin-form
        (b"http://example.com", "/"),
        (b"HTTPS://example.com:8443/x", "/x"),
    ],
)
async def test_accepted_targets_are_forwarded_in_origin_form(
    open_door: Opener, target: bytes, forwarded: str
) -> None:
    up, _, port = await open_door()
    out = await _exchange(
        port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert [r.target for r in up.seen] == [forwarded]


async def test_options_asterisk_is_answered_by_the_front_door(open_door: Opener) -> None:
    up, _, port = await open_door()
    out = await _exchange(port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert "GET" in _head(out)["allow"]
    assert up.seen == []


# ------------------------------------------------------------------ defect 9: bodyless statuses


@pytest.mark.parametrize("status", [204, 304])
async def test_no_content_length_on_204_and_304(open_door: Opener, status: int) -> None:
    up = Recorder(answer=_ok(status, {"content-length": "0", "etag": '"1"'}, b""))
    _, _, port = await open_door(up)
    out = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out
    assert "content-length" not in _head(out)
    assert _head(out)["etag"] == '"1"'


@pytest.mark.parametrize(
    "answer",
    [_ok(103, {"content-length": "0"}, b""), _ok(999), _ok(200, {"x-a": "\u20ac"})],
    ids=["1xx", "over 599", "not latin-1"],
)
async def test_invalid_answer_from_a_module_is_502_logged_with_the_module(
    open_door: Opener, caplog: pytest.LogCaptureFixture, answer: HttpResponse
) -> None:
    _, _, port = await open_door(Recorder(answer=answer))
    with caplog.at_level(logging.INFO):
        out = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502 "), out
    assert any("invalid response from module for /" in r.getMessage() for r in caplog.records)
    (access,) = [r.getMessage() for r in caplog.records if r.name == "pywatt.access"]
    assert access.endswith(" [mod]"), access  # the module that answered it, as for every 502


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-a": "a" * 70_000}, 502),  # one huge value
        ({f"x-{i}": "v" * 100 for i in range(1000)}, 502),  # very many headers
        ({"x-a": "a" * 60_000}, 200),  # under the bound
    ],
)
async def test_module_answer_with_headers_over_64_kib_is_502(
    open_door: Opener, headers: dict[str, str], status: int
) -> None:
    up = Recorder(answer=_ok(200, headers, b"ok"))
    _, _, port = await open_door(up)
    out = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:100]
    assert len(out) < 70_000 or status == 200


async def test_head_keeps_the_modules_length_and_sends_no_body(open_door: Opener) -> None:
    up = Recorder(answer=_ok(200, {"content-length": "5"}, b"hello"))
    _, _, port = await open_door(up)
    out = await _exchange(port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    assert _head(out)["content-length"] == "5"
    assert out.endswith(b"\r\n\r\n")


# ------------------------------------------------------------------ defect 10: CL + TE


async def test_content_length_with_transfer_encoding_is_400_and_close(open_door: Opener) -> None:
    up, _, port = await open_door()
    smuggle = (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    out = await _exchange(port, smuggle)
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert out.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in out.lower()
    assert up.seen == []


async def test_get_with_content_length_and_transfer_encoding_is_400(open_door: Opener) -> None:
    up, _, port = await open_door()
    out = await _exchange(
        port,
        b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1
    assert up.seen == []


# ------------------------------------------------------------------ defect 12: own 400 answers


async def test_unparsable_request_gets_a_fixed_short_400(open_door: Opener) -> None:
    _, _, port = await open_door()
    out = await _exchange(port, b"GET /<img src=x onerror=alert(1)> HTTP/1.1 junk\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    head = _head(out)
    body = out.split(b"\r\n\r\n", 1)[1]
    assert b"img" not in body and b"bytearray" not in body
    assert len(body) < 100
    assert head["content-type"] == "application/json"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", head["date"])


async def test_header_limit_is_16_kib_by_default_and_configurable(open_door: Opener) -> None:
    _, _, port = await open_door()
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n"
    out = await _exchange(port, big)
    assert out.startswith(b"HTTP/1.1 431 "), out[:60]
    ok = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 15000 + b"\r\n\r\n"
    assert (await _exchange(port, ok)).startswith(b"HTTP/1.1 200 ")
    _, _, small = await open_door(limits=FrontDoorLimits(max_header_bytes=1024))
    out = await _exchange(small, b"GET / HTTP/1.1\r\nHost: x\r\nX-B: " + b"a" * 2000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")


# ------------------------------------------------------------------ defect 4: send timeout


@_LINUX
async def test_slow_steady_reader_gets_the_whole_answer(open_door: Opener) -> None:
    """A 4 MiB answer read at ~1.3 MB/s takes ~3 s; the send timeout is 0.5 s of no
    progress, so it must not cut the download (the old timer ran from pause_writing)."""
    size = 4 * 1024 * 1024
    up = Recorder(answer=_ok(200, {"content-type": "application/octet-stream"}, b"x" * size))
    _, _, port = await open_door(up, limits=FrontDoorLimits(read_timeout=0.5))
    got = await asyncio.to_thread(_slow_download, port, 64 * 1024, 0.05)
    assert got >= size


async def test_reader_that_stops_is_reset(open_door: Opener) -> None:
    size = 16 * 1024 * 1024
    up = Recorder(answer=_ok(200, {}, b"x" * size))
    _, _, port = await open_door(up, limits=FrontDoorLimits(read_timeout=0.3))
    got = await asyncio.to_thread(_stalled_download, port, 2.0)
    assert got < size


def _slow_download(port: int, step: int, pause: float) -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        total = 0
        while True:
            try:
                data = s.recv(step)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            total += len(data)
            time.sleep(pause * len(data) / step)
        return total - len(b"HTTP/1.1 200 OK\r\n")  # roughly the head; body dominates


def _stalled_download(port: int, stall: float) -> int:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(stall)
        total = 0
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            total += len(data)
        return total


# ------------------------------------------------------------------ access log (issue 12.4)


async def test_access_log_line_in_uvicorns_shape(
    open_door: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, port = await open_door()
    with caplog.at_level(logging.INFO, logger="pywatt.access"):
        await _exchange(port, b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await _exchange(port, b"GET /a>b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "pywatt.access"]
    assert len(lines) == 2, lines
    assert re.fullmatch(
        r'127\.0\.0\.1:\d+ - "GET /a\?b=1 HTTP/1\.1" 200 OK \d+\.\d\dms \[mod\]', lines[0]
    ), lines[0]
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /a>b HTTP/1\.1" 400 Bad Request \S+ms', lines[1])


async def test_access_log_can_be_turned_off(
    open_door: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, port = await open_door(access_log=False)
    with caplog.at_level(logging.INFO, logger="pywatt.access"):
        await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [r for r in caplog.records if r.name == "pywatt.access"] == []


# ------------------------------------------------------------------ the uri rule, byte by byte


def _rust_path_ok(b: int) -> bool:
    # http crate, PathAndQuery::from_shared, path loop (0x7F..=0xFF refused here: see spec)
    return b in (0x21, 0x3D, 0x7C, 0x7E, 0x22, 0x7B, 0x7D) or (
        0x24 <= b <= 0x3B or 0x40 <= b <= 0x5F or 0x61 <= b <= 0x7A
    )


def _rust_query_ok(b: int) -> bool:
    # the query loop: 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E
    return b in (0x21, 0x3D) or 0x24 <= b <= 0x3B or 0x3F <= b <= 0x7E


@pytest.mark.parametrize("byte", range(256))
def test_uri_rule_matches_the_reference_parser_for_every_byte(byte: int) -> None:
    from pywatt_proto._errors import RemoteProtocolError
    from pywatt_proto._proxy import forward_target

    char = chr(byte)

    def accepted(path: str, query: str) -> bool:
        try:
            forward_target(path, query)
        except RemoteProtocolError:
            return False
        return True

    if char != "?":  # "?" ends the path: the HTTP parser never puts one in ``path``
        assert accepted("/a" + char, "") == _rust_path_ok(byte)
    assert accepted("/a", "q=" + char) == _rust_query_ok(byte)


# ------------------------------------------------------------------ request.client in the module


CLIENT_MODULE = """
from {package} import Module

app = Module()


@app.get("/client")
def client(request):
    return {{"client": list(request.client) if request.client else None,
             "xff": request.headers.get("x-forwarded-for")}}
"""


@pytest.mark.parametrize("package", ["pywatt_asyncio", "pywatt_sync"])
def test_module_under_pywatt_run_sees_the_client_address(tmp_path: Path, package: str) -> None:
    """Issue 12.4: the front door adds x-forwarded-for (replacing a client's forged one)
    and both drivers fill request.client from it when run by ``pywatt run``."""
    import httpx
    from test_host import run_host

    path = tmp_path / "who.py"
    path.write_text(CLIENT_MODULE.format(package=package))
    run = run_host(str(path))
    try:
        r = httpx.get(run.url + "/client", headers={"x-forwarded-for": "6.6.6.6"}, timeout=10)
        assert r.status_code == 200, run.stderr
        assert r.json() == {"client": ["127.0.0.1", 0], "xff": "127.0.0.1"}
        run.wait_for(re.compile(r'127\.0\.0\.1:\d+ - "GET /client HTTP/1\.1" 200 OK'))
    finally:
        run.stop()

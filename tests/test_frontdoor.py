"""The development host's HTTP front door (pywatt_asyncio._frontdoor), against fake upstreams.

Real sockets, raw bytes; the upstream is a plain object implementing ``Upstream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pywatt_asyncio._frontdoor import FrontRequest, serve_http
from pywatt_proto._messages import HttpResponse


class Recorder:
    """An Upstream that records each request and answers 200 ``ok`` (or ``answer``)."""

    def __init__(self, limit: int = 1024, answer: HttpResponse | None = None) -> None:
        self.limit = limit
        self.seen: list[FrontRequest] = []
        self.answer = answer or HttpResponse(
            request_id="r", status_code=200, headers={"content-type": "text/plain"}, body=b"ok"
        )

    def body_limit(self, method: str, target: str) -> int:
        return self.limit

    async def forward(self, request: FrontRequest) -> tuple[HttpResponse, str | None]:
        self.seen.append(request)
        return self.answer, "mod"


async def _exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, and return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
    finally:
        writer.close()
    return out


@pytest.fixture
async def door() -> AsyncIterator[tuple[Recorder, int]]:
    up = Recorder()
    server = await serve_http(up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield up, port
    finally:
        server.close()


async def test_forwards_a_front_request_with_forwarding_headers(
    door: tuple[Recorder, int],
) -> None:
    up, port = door
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

"""The development host's HTTP/1.1 front door (h11 over asyncio streams).

:func:`serve_http` accepts HTTP clients and hands each parsed request, as a
:class:`FrontRequest`, to an :class:`Upstream` (in ``pywatt run``, the host's module router;
:class:`ModuleUpstream` adapts one :class:`~pywatt_asyncio._orchestrator.ModuleProcess`), then
writes the answer back. The front door answers some requests itself: 413 for bodies over the
upstream's ``body_limit``, 400 for requests h11 cannot parse, 502 for an answer that is not
valid HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, Protocol

import h11

from pywatt_proto._messages import HttpResponse
from pywatt_proto._module import join_headers

if TYPE_CHECKING:
    from ._orchestrator import ModuleProcess

__all__ = [
    "HTTP_BACKLOG",
    "MAX_HTTP_BODY",
    "FrontDoorLimits",
    "FrontRequest",
    "ModuleUpstream",
    "Upstream",
    "serve_http",
]

_log = logging.getLogger("pywatt.orchestrator")

#: Largest HTTP request body forwarded: a stdio line holds at most 16 MiB and each body byte
#: costs up to 4 JSON bytes.
MAX_HTTP_BODY: Final = 4 * 1024 * 1024
#: Listen backlog of the HTTP front door (1,000 clients may connect at once).
HTTP_BACKLOG: Final = 2048
#: Hop-by-hop / framing headers the front door recomputes instead of forwarding.
_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontRequest:
    """One request as the front door forwards it.

    ``target`` is origin-form (``/path?query``); ``headers`` are joined into the wire map
    (:func:`pywatt_proto._module.join_headers`) with ``x-forwarded-for`` and
    ``x-forwarded-proto`` already set; ``body`` is None when the request had none;
    ``client`` is the peer address (None if unknown); ``http_version`` is ``"1.1"`` or
    ``"1.0"``.
    """

    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None
    client: tuple[str, int] | None
    http_version: str


class Upstream(Protocol):
    """Where the front door sends requests (one module, or the host's router)."""

    def body_limit(self, method: str, target: str) -> int:
        """Return the largest body the module that would serve this request accepts; the
        front door answers 413 before reading a larger declared body."""
        ...

    async def forward(self, request: FrontRequest) -> tuple[HttpResponse, str | None]:
        """Return the answer and the id of the module that served it (None: the host
        answered itself). Never raises for module failures (it answers 502/503/504)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontDoorLimits:
    """Limits and deadlines of the front door (seconds for times; see spec/limits.md).

    Raises:
        ValueError: a limit is not positive.
    """

    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if self.max_header_bytes <= 0:
            raise ValueError("max_header_bytes must be > 0")


class ModuleUpstream:
    """:class:`Upstream` for one :class:`~pywatt_asyncio._orchestrator.ModuleProcess`."""

    __slots__ = ("module", "module_id")

    def __init__(self, module: ModuleProcess, module_id: str | None = None) -> None:
        self.module = module
        self.module_id = module_id

    def body_limit(self, method: str, target: str) -> int:
        """Return :data:`MAX_HTTP_BODY` (what a stdio line carries in the worst case)."""
        return MAX_HTTP_BODY

    async def forward(self, request: FrontRequest) -> tuple[HttpResponse, str | None]:
        """Forward to the module; return its answer (or 502/503/504) and its module id."""
        module = self.module
        response = await module.request(
            request.method, request.target, request.headers, request.body
        )
        return response, self.module_id


async def _handle_http(
    upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                await _serve_one(upstream, conn, event, reader, writer)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                break
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                break
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(Exception):
                await _write(conn, writer, exc.error_status_hint, [], str(exc).encode())
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve_one(
    upstream: Upstream,
    conn: h11.Connection,
    req: h11.Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    chunks: list[bytes] = []
    target = req.target.decode("latin-1")
    size = 0
    too_big = False
    if conn.they_are_waiting_for_100_continue:  # curl sends Expect for bodies > 1 KiB
        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        if isinstance(ev, h11.Data):
            size += len(ev.data)
            if size > upstream.body_limit(req.method.decode("ascii"), target):
                too_big = True
            else:
                chunks.append(ev.data)
            continue
        if isinstance(ev, h11.EndOfMessage):
            break
        if isinstance(ev, h11.ConnectionClosed):
            return
    if too_big:
        await _write(conn, writer, 413, [], b'{"error":"request body too large"}')
        return
    headers = join_headers(
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in req.headers
        if k not in (b"x-forwarded-for", b"x-forwarded-proto")
    )
    peer = writer.get_extra_info("peername")
    client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
    if client is not None:
        headers["x-forwarded-for"] = client[0]
    headers["x-forwarded-proto"] = "http"
    body = b"".join(chunks) if chunks else None
    resp, _module_id = await upstream.forward(
        FrontRequest(
            method=req.method.decode("ascii"),
            target=target,
            headers=headers,
            body=body,
            client=client,
            http_version=req.http_version.decode("ascii"),
        )
    )
    out_headers: list[tuple[str, str]] = []
    for name, value in resp.headers.items():
        lname = name.lower()
        if lname in _HOP:
            continue
        if lname == "set-cookie":
            out_headers.extend((name, v) for v in value.split("\n"))
        else:
            out_headers.append((name, value))
    body_out = resp.body or b""
    try:
        if req.method == b"HEAD":
            cl = resp.headers.get("content-length")
            await _write(conn, writer, resp.status_code, out_headers, b"", content_length=cl)
        else:
            await _write(conn, writer, resp.status_code, out_headers, body_out)
    except h11.LocalProtocolError as exc:  # the module's answer is not valid HTTP/1.1
        _log.warning("invalid response from module for %s: %s", req.target, exc)
        if conn.our_state is h11.SEND_RESPONSE:
            await _write(conn, writer, 502, [], b'{"error":"invalid response from module"}')
        else:
            raise


async def _write(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    content_length: str | None = None,
) -> None:
    if not 200 <= status <= 999:
        status, body = 502, b'{"error":"module sent an invalid status"}'
    hdrs = [*headers, ("content-length", content_length or str(len(body)))]
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    data = conn.send(h11.Response(status_code=status, headers=hdrs, reason=reason))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    writer.write(data)
    await writer.drain()


async def serve_http(
    upstream: Upstream,
    host: str,
    port: int,
    *,
    limits: FrontDoorLimits = FrontDoorLimits(),
    access_log: bool = True,
    forwarded_allow_ips: Iterable[str] | str = (),
) -> asyncio.AbstractServer:
    """Start the HTTP/1.1 front door passing every request to ``upstream``; return the server.

    Raises:
        OSError: the address cannot be bound.
    """

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle_http(upstream, reader, writer)

    return await asyncio.start_server(on_client, host, port, backlog=HTTP_BACKLOG)

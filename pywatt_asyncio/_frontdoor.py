"""The development host's HTTP/1.1 front door (h11 over asyncio streams).

:func:`serve_http` accepts HTTP clients and hands each parsed request to a *forward* callable
(in ``pywatt run``, the module router of the host), then writes the answer back. The front door
answers some requests itself: 413 for bodies over :data:`MAX_HTTP_BODY`, 400 for requests h11
cannot parse, 502 for an answer that is not valid HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Final

import h11

from pywatt_proto._messages import HttpResponse
from pywatt_proto._module import join_headers

__all__ = ["HTTP_BACKLOG", "MAX_HTTP_BODY", "Forward", "serve_http"]

_log = logging.getLogger("pywatt.orchestrator")

#: ``forward(method, target, headers, body)``: the answer to one request (never raises for a
#: module failure; it returns a synthesized 502/503/504 instead).
Forward = Callable[[str, str, Mapping[str, str], "bytes | None"], Awaitable[HttpResponse]]

#: Largest HTTP request body forwarded: a stdio line holds at most 16 MiB and each body byte
#: costs up to 4 JSON bytes.
MAX_HTTP_BODY: Final = 4 * 1024 * 1024
#: Listen backlog of the HTTP front door (1,000 clients may connect at once).
HTTP_BACKLOG: Final = 2048
#: Hop-by-hop / framing headers the front door recomputes instead of forwarding.
_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"}
)


async def _handle_http(
    forward: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
                await _serve_one(forward, conn, event, reader, writer)
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
    forward: Forward,
    conn: h11.Connection,
    req: h11.Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    chunks: list[bytes] = []
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
            if size > MAX_HTTP_BODY:
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
    headers = join_headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers)
    body = b"".join(chunks) if chunks else None
    resp = await forward(req.method.decode("ascii"), req.target.decode("latin-1"), headers, body)
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


async def serve_http(forward: Forward, host: str, port: int) -> asyncio.AbstractServer:
    """Start the HTTP/1.1 front door passing every request to ``forward``; return the server."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle_http(forward, reader, writer)

    return await asyncio.start_server(on_client, host, port, backlog=HTTP_BACKLOG)

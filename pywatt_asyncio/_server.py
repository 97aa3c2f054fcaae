"""HTTP/1.1 server on asyncio serving a :class:`pywatt_proto.Router`.

One ``asyncio.Protocol`` per connection (:class:`ConnectionDriver`, shared with the front
door), and no task unless a handler waits. The protocol moves bytes into
:class:`pywatt_proto.HttpServerConnection` (limits, deadlines, keep-alive, error answers)
and runs the driver loop inline in ``data_received``: pull events, dispatch each request
with :func:`~pywatt_asyncio._dispatch.dispatch_eager`, write the answers, arm the core's
timer. A handler that suspends is finished by a task; the connection handles nothing else
meanwhile, so pipelined requests are answered in order (reading pauses while more than
``ServerLimits.max_pending_bytes`` are queued).

Send timeout (:class:`pywatt_proto._http.SendProgress`): while writing is paused, what is
still to be delivered -- the transport's buffer plus the kernel's send queue (``SIOCOUTQ``;
with a few MiB of socket buffer the transport's own may not move for seconds while a client
reads steadily) -- is watched; if nothing was delivered for ``read_timeout`` seconds the
connection is reset (``SO_LINGER`` 0, then ``abort``). A slow but steady reader is never
cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl as _ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    HttpServerConnection,
    Request,
    Response,
    Router,
    ServerLimits,
    format_access_log,
    http_date,
)
from pywatt_proto._driver import refused_answer
from pywatt_proto._errors import LocalProtocolError
from pywatt_proto._http import SendProgress, busy_response
from pywatt_proto._router import router_of
from pywatt_sync._server import reset_on_close, unsent_bytes

from ._dispatch import dispatch_eager

_log = logging.getLogger("pywatt.http")

# Open connections per server; one more is answered 503 and closed. Each idle
# connection costs a task and ~64 KiB of buffers at most (max_pending_bytes).
DEFAULT_MAX_CONNECTIONS = 1024
# Seconds a graceful close waits for in-flight requests before cancelling them.
DEFAULT_DRAIN_TIMEOUT = 10.0
_BUSY = busy_response()


class _DateCache:
    """The Date header value, recomputed at most every 0.1 s of loop time."""

    __slots__ = ("until", "value")

    def __init__(self) -> None:
        self.until = -1.0
        self.value = b""

    def refresh(self, loop_now: float) -> bytes:
        self.until = loop_now + 0.1
        self.value = http_date(time.time()).encode("ascii")
        return self.value

    def get(self) -> bytes:
        now = asyncio.get_running_loop().time()
        return self.value if self.until > now else self.refresh(now)


class ConnectionDriver(asyncio.Protocol):
    """What every HTTP connection driver on asyncio does around its core: the protocol
    callbacks, back-pressure both ways, the send timeout (see the module docstring),
    graceful shutdown, closing and the core's timer (one lazily re-armed handle).

    Used by ``serve()`` (:class:`_Connection`) and the front door
    (``pywatt_asyncio._frontdoor._FrontConnection``). ``serve()`` keeps the loop's own
    accept (not the front door's loop): TLS handshakes must not wait in line. A subclass
    sets ``_core`` in ``connection_made`` and provides :meth:`_request` (answer one
    request); ``_busy`` is True while an answer is awaited, and nothing is driven meanwhile.
    """

    __slots__ = (
        "_busy",
        "_core",
        "_loop",
        "_lost",
        "_now",
        "_paused",
        "_send_check",
        "_send_progress",
        "_send_timeout",
        "_task",
        "_timer",
        "_timer_at",
        "_transport",
        "_write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, send_timeout: float) -> None:
        self._loop = loop
        self._now = loop.time
        self._transport: asyncio.Transport | None = None
        self._core: HttpServerConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._paused = False
        self._write_paused = False
        self._send_timeout = send_timeout
        self._send_progress: SendProgress | None = None
        self._send_check: asyncio.TimerHandle | None = None
        self._busy = False
        self._lost = False
        self._task: asyncio.Task[None] | None = None

    def _request(self, request: Request, start: float) -> Coroutine[Any, Any, None] | None:
        """Answer ``request`` now (return None) or return the coroutine that will: it runs
        as a task, and the connection handles nothing else until it called :meth:`_drive`."""
        raise NotImplementedError

    def _drive(self, start: float) -> None:
        """Handle every complete request buffered, in order, until the core needs data or an
        answer is awaited. ``start`` (loop time the bytes arrived) stands for "now" in the
        core's bookkeeping during this call."""
        core = self._core
        transport = self._transport
        assert core is not None and transport is not None
        while not self._write_paused and not self._lost:
            event = core.next_event(start)
            if event is NEED_DATA:
                self._need_data()
                return
            if event is END_OF_INPUT:
                self._close()
                return
            assert isinstance(event, Request)
            later = self._request(event, start)
            if later is not None:
                out = core.data_to_send()
                if out:
                    transport.write(out)
                self._busy = True
                self._task = self._loop.create_task(later)
                return

    @staticmethod
    def peer(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
        """Return the transport's peer address as ``(host, port)``, or None if not IP."""
        peer = transport.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None

    # -- protocol callbacks ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        core = self._core
        if core is None:
            return
        now = self._now()
        if not core.receive_data(data, now) and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]
        if not self._busy:
            self._drive(now)

    def eof_received(self) -> bool:
        if self._core is not None:
            self._core.receive_data(b"", self._now())
            self._kick()
        return True  # keep the write side open for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.resume_writing()  # stops the send timeout
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._core is not None:
            self._core.send_failed()

    def pause_writing(self) -> None:
        self._write_paused = True
        progress = SendProgress(self._send_timeout, self._unsent(), self._now())
        self._send_progress = progress
        if self._send_check is None:
            self._send_check = self._loop.call_later(progress.check_interval(), self._check_send)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._send_progress = None
        if self._send_check is not None:
            self._send_check.cancel()
            self._send_check = None
        self._kick()

    def shutdown(self) -> None:
        """Finish: an idle connection closes now, a busy one after its answer."""
        if self._core is not None and not self._lost:
            self._core.start_shutdown()
            self._kick()

    def _kick(self) -> None:
        """Handle what the core has buffered, unless an answer is awaited."""
        if not self._busy and not self._lost:
            self._drive(self._now())

    def _unsent(self) -> int:
        transport = self._transport
        assert transport is not None
        return transport.get_write_buffer_size() + unsent_bytes(transport.get_extra_info("socket"))

    def _check_send(self) -> None:
        self._send_check = None
        progress = self._send_progress
        transport = self._transport
        if progress is None or transport is None or transport.is_closing():
            return
        now = self._now()
        progress.update(self._unsent(), now)
        if not progress.expired(now):
            self._send_check = self._loop.call_later(progress.check_interval(), self._check_send)
            return
        self._send_progress = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            reset_on_close(sock)
        transport.abort()

    def _need_data(self) -> None:
        """The core waits for bytes: write what it has, resume reading if it takes more,
        and arm its timer if it is not armed early enough."""
        core = self._core
        transport = self._transport
        assert core is not None and transport is not None
        out = core.data_to_send()
        if out:
            transport.write(out)
        if self._paused and core.wants_data:
            self._paused = False
            transport.resume_reading()
        deadline = core.get_timer()
        if deadline is not None and (self._timer is None or self._timer_at > deadline):
            self._arm()

    def _close(self) -> None:
        core = self._core
        transport = self._transport
        if core is not None and transport is not None and not self._lost:
            out = core.data_to_send()
            if out:
                transport.write(out)
            transport.close()

    # -- timer: one lazily re-armed handle per connection --------------------------------------

    def _arm(self) -> None:
        core = self._core
        deadline = core.get_timer() if core is not None else None
        if deadline is None:
            return
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return  # fires early and re-arms itself
            timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        core = self._core
        if core is None or self._lost:
            return
        deadline = core.get_timer()
        if deadline is None:
            return
        now = self._now()
        if now >= deadline:
            core.handle_timer(now)
            self._kick()
        else:
            self._arm()


class _Connection(ConnectionDriver):
    """Driver for one ``serve()`` connection: runs handlers and writes their answers."""

    __slots__ = ("_server",)

    def __init__(self, server: HttpServer) -> None:
        super().__init__(server.loop, server.limits.read_timeout)
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        server = self._server
        if len(server.connections) >= server.max_connections or server.closing:
            transport.write(_BUSY)
            transport.close()
            self._lost = True
            return
        self._core = HttpServerConnection(
            server.limits, self._now(), client=self.peer(transport), date=server.date.get
        )
        server.connections.add(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._core is not None:
            self._server.connection_done(self)

    def _request(self, request: Request, start: float) -> Coroutine[Any, Any, None] | None:
        # ``async def`` handlers are never stepped outside a task: they must see
        # themselves as ``asyncio.current_task()`` (``asyncio.timeout`` needs it).
        # Plain ``def`` handlers still answer without any task.
        server = self._server
        outcome = dispatch_eager(server.router, request, self._now)
        if not isinstance(outcome, Response):
            return self._finish(outcome, request, start)
        date = server.date
        self._answer(
            request, outcome, start, date.value if date.until > start else date.refresh(start)
        )
        return None

    async def _finish(
        self, coro: Coroutine[Any, Any, Response], request: Request, start: float
    ) -> None:
        try:
            response = await coro
        except asyncio.CancelledError:
            self._close()
            raise
        self._busy = False
        self._task = None
        if not self._lost:
            self._answer(request, response, start, self._server.date.get())
            self._drive(self._now())

    def _answer(self, request: Request, response: Response, start: float, date: bytes) -> None:
        core = self._core
        assert core is not None
        try:
            core.send_response(response, start, date=date)
        except LocalProtocolError as exc:  # nothing was queued: answer 500 instead
            response = refused_answer(self._server.router, request, exc)
            core.send_response(response, start, date=date)
        if self._server.access_log is not None:
            self._server.log_access(core.client, request, response, self._now() - start)

    def cancel(self) -> None:
        """Abort: cancel a running handler and drop the connection."""
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """A running HTTP server (from :func:`start_server`).

    ``port``/``host`` give the bound address; ``await close()`` stops accepting,
    lets in-flight requests finish (answered with ``Connection: close``) for up
    to ``drain_timeout`` seconds, then cancels the rest. Usable as
    ``async with``.
    """

    def __init__(
        self,
        router: Router,
        *,
        limits: ServerLimits,
        max_connections: int,
        access_log: TextIO | None,
    ) -> None:
        self.router = router
        self.limits = limits
        self.max_connections = max_connections
        self.access_log = access_log
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.date = _DateCache()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._idle: asyncio.Event | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """Return the listening sockets."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """Return the port of the first listening socket."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        """Return the host of the first listening socket."""
        return str(self.sockets[0].getsockname()[0])

    def log_access(
        self, client: tuple[str, int] | None, request: Request, response: Response, took: float
    ) -> None:
        """Write one access-log line to the configured stream."""
        if self.access_log is not None:
            line = format_access_log(client, request, response.status, len(response.body), took)
            self.access_log.write(line + "\n")

    def connection_done(self, conn: _Connection) -> None:
        """Called by connections when they end (wakes a draining close)."""
        self.connections.discard(conn)
        if self._idle is not None and not self.connections:
            self._idle.set()

    async def serve_forever(self) -> None:
        """Serve until cancelled; then close gracefully."""
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            await self.close()
            raise

    async def close(self, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Stop accepting, drain in-flight requests, then cancel what is left."""
        if self._server is None:
            return
        self.closing = True
        self._server.close()
        self._idle = asyncio.Event()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout)
        for conn in list(self.connections):
            conn.cancel()
        await self._server.wait_closed()

    async def __aenter__(self) -> HttpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
    limits: ServerLimits | None = None,
    ssl: _ssl.SSLContext | None = None,
    access_log: bool | TextIO = False,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    backlog: int = 1024,
) -> HttpServer:
    """Start serving ``app`` (a Router, or anything with ``.router``) and return the server.

    Binds ``host:port`` (port 0 picks a free one) unless ``sock``, an already
    bound socket, is given. ``access_log=True`` logs to stderr; a stream logs there.

    Raises:
        TypeError: ``app`` has no router. OSError: the address cannot be bound.
    """
    router = router_of(app)
    log_stream: TextIO | None = sys.stderr if access_log is True else (access_log or None)
    server = HttpServer(
        router,
        limits=limits or ServerLimits(),
        max_connections=max_connections,
        access_log=log_stream,
    )
    loop = server.loop

    def factory() -> _Connection:
        return _Connection(server)

    if sock is not None:
        server._server = await loop.create_server(factory, sock=sock, ssl=ssl, backlog=backlog)
    else:
        server._server = await loop.create_server(
            factory, host, port, ssl=ssl, backlog=backlog, reuse_address=True
        )
    return server


async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ready: Callable[[HttpServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until cancelled (or SIGTERM, when run in the main thread), then
    close gracefully.

    ``options`` are those of :func:`start_server`; ``ready`` is called with the
    server once it listens (to learn the port when ``port=0``).
    """
    server = await start_server(app, host, port, **options)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    handled = False
    terminated: list[bool] = []

    def on_term() -> None:
        terminated.append(True)
        if task is not None:
            task.cancel()

    if task is not None and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_term)
            handled = True
    if ready is not None:
        ready(server)
    try:
        await server.serve_forever()
    except asyncio.CancelledError:
        if not terminated:
            raise  # cancelled by our caller: propagate after the graceful close
        task.uncancel()  # type: ignore[union-attr]  # SIGTERM: a normal, graceful exit
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)

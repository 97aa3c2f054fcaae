"""HTTP/1.1 server with blocking sockets and one thread per connection.

Concurrency bound: at most ``max_workers`` connection threads (default
:data:`DEFAULT_MAX_WORKERS`). The accept loop takes a worker slot *before*
accepting, so when every slot is busy further clients wait in the kernel's
listen backlog instead of piling up threads. A keep-alive connection holds its
slot until it closes (at most ``ServerLimits.keepalive_timeout`` idle).

Each connection thread is the driver loop over
:class:`pywatt_proto.HttpServerConnection`: pull an event; on ``NEED_DATA``
send what is queued and wait for bytes until the core's deadline (poll() on a
non-blocking plain socket, a socket timeout under TLS); on a request run
:func:`pywatt_sync.dispatch` and send the answer; on ``END_OF_INPUT`` flush
and close. Idle waits are cut into slices of
``_SHUTDOWN_POLL`` seconds so a graceful shutdown reaches idle connections
without touching the core from another thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import selectors
import signal
import socket
import ssl as _ssl
import struct
import sys
import threading
import time
from typing import Any, Protocol, TextIO

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    HttpServerConnection,
    Request,
    Response,
    Router,
    ServerLimits,
    ServerPhase,
    format_access_log,
    http_date,
)

from ._dispatch import dispatch

__all__ = ["DEFAULT_MAX_WORKERS", "HttpServer", "serve", "start_server"]

_log = logging.getLogger("pywatt.http")

# Connection threads at most (each ~8 MiB of reserved, mostly untouched, stack
# and at most 64 KiB of buffered input). Clients beyond it wait in the backlog.
DEFAULT_MAX_WORKERS = 256
# Seconds a graceful shutdown waits for in-flight requests.
DEFAULT_DRAIN_TIMEOUT = 10.0
# Longest single blocking wait of an idle connection, so shutdown is noticed.
_SHUTDOWN_POLL = 0.25
_RECV_SIZE = 64 * 1024
# SO_LINGER on with a zero timeout: close() resets the connection, dropping unsent data.
_ABORT_LINGER = struct.pack("ii", 1, 0)
_HAS_POLL = hasattr(select, "poll")
_IN = select.POLLIN if _HAS_POLL else 1
_OUT = select.POLLOUT if _HAS_POLL else 4


def router_of(app: Any) -> Router:
    """Return ``app`` if it is a Router, else ``app.router``.

    Raises:
        TypeError: neither.
    """
    if isinstance(app, Router):
        return app
    router = getattr(app, "router", None)
    if isinstance(router, Router):
        return router
    raise TypeError(f"expected a Router or an object with a .router, got {type(app).__name__}")


class _DateCache:
    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:  # benign race: both threads compute the same value
            self._value = http_date(now).encode("ascii")
            self._second = now
        return self._value


class _Wire(Protocol):
    """How a connection thread reads and writes its socket."""

    def recv(self, wait: float) -> bytes | None:
        """Return the next bytes (``b""`` at EOF), or None when none came within ``wait`` s."""

    def sendall(self, data: bytes, timeout: float) -> None:
        """Send all of ``data`` within ``timeout`` seconds (OSError / TimeoutError if not)."""

    def abort_on_close(self) -> None:
        """Make the coming close reset the connection (drop what the kernel still queues)."""


class _PollWire:
    """A plain socket in non-blocking mode: a read waits in poll() and then reads; a
    write sends at once and polls only when the kernel's buffer is full.

    With ``settimeout`` before each call (an ioctl) and CPython's poll before every
    ``recv``/``send`` on a socket with a timeout, an answer cost six syscalls, each
    handing the GIL to another connection thread; this costs three. Reading before
    polling was tried: the read usually finds data only because the threads queue
    for the GIL, and it measured slower.
    """

    __slots__ = ("_fd", "_poll", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._poll: Any = select.poll() if _HAS_POLL else None

    def _ready(self, events: int, wait: float) -> bool:
        if self._poll is None:
            w = (self._fd,)
            r, x, _ = select.select(
                w if events == _IN else (), w if events == _OUT else (), (), wait
            )
            return bool(r or x)
        self._poll.register(self._fd, events)
        # poll() takes milliseconds; round up so the deadline is never early
        return bool(self._poll.poll(math.ceil(wait * 1000)))

    def recv(self, wait: float) -> bytes | None:
        sock = self._sock
        if not self._ready(_IN, wait):
            return None
        try:
            return sock.recv(_RECV_SIZE)
        except BlockingIOError:  # a spurious wake-up: the caller checks its deadline
            return None

    def sendall(self, data: bytes, timeout: float) -> None:
        sock = self._sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        deadline = time.monotonic() + timeout
        while view:
            wait = deadline - time.monotonic()
            if wait <= 0 or not self._ready(_OUT, wait):
                raise TimeoutError("send timed out")
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                continue

    def abort_on_close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)


class _TimeoutWire:
    """A TLS socket, driven with socket timeouts (it may hold decrypted bytes that a
    poll() on its file descriptor would not see)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, wait: float) -> bytes | None:
        self._sock.settimeout(wait)
        try:
            return self._sock.recv(_RECV_SIZE)
        except (TimeoutError, _ssl.SSLWantReadError):
            return None

    def sendall(self, data: bytes, timeout: float) -> None:
        self._sock.settimeout(timeout)
        self._sock.sendall(data)

    def abort_on_close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)


class HttpServer:
    """A blocking HTTP server. Start with :func:`start_server` (background thread)
    or :meth:`serve_forever` (current thread); stop with :meth:`shutdown`.
    Usable as a context manager (shuts down on exit)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        limits: ServerLimits | None = None,
        ssl: _ssl.SSLContext | None = None,
        access_log: bool | TextIO = False,
        max_workers: int = DEFAULT_MAX_WORKERS,
        backlog: int = 1024,
    ) -> None:
        self.router = router_of(app)
        self.limits = limits or ServerLimits()
        self.access_log: TextIO | None = sys.stderr if access_log is True else (access_log or None)
        self._ssl = ssl
        if sock is None:
            sock = socket.create_server((host, port), backlog=backlog, reuse_port=False)
        else:
            sock.listen(backlog)
        self._sock = sock
        self._slots = threading.BoundedSemaphore(max_workers)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._active: set[threading.Thread] = set()
        self._date = _DateCache()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """Return the bound port."""
        return int(self._sock.getsockname()[1])

    @property
    def host(self) -> str:
        """Return the bound host."""
        return str(self._sock.getsockname()[0])

    # -- accept loop ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept and serve connections until :meth:`shutdown`."""
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                if not self._slots.acquire(timeout=_SHUTDOWN_POLL):
                    continue
                ready = False
                while not ready and not self._stopping.is_set():
                    ready = any(key.fileobj is self._sock for key, _ in sel.select())
                if not ready:
                    self._slots.release()
                    break
                try:
                    conn, addr = self._sock.accept()
                except OSError:
                    self._slots.release()
                    continue
                client = (str(addr[0]), int(addr[1])) if isinstance(addr, tuple) else None
                thread = threading.Thread(target=self._connection, args=(conn, client), daemon=True)
                with self._lock:
                    self._active.add(thread)
                thread.start()
        finally:
            sel.close()
            self._sock.close()
            self._stopped.set()

    # -- one connection --------------------------------------------------------------------------

    def _connection(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wire: _Wire
            if self._ssl is not None:
                sock.settimeout(self.limits.read_timeout)
                sock = self._ssl.wrap_socket(sock, server_side=True)
                wire = _TimeoutWire(sock)
            else:
                wire = _PollWire(sock)
            self._drive(wire, client)
        except Exception:
            _log.exception("connection handler failed")
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._active.discard(threading.current_thread())
            self._slots.release()

    def _drive(self, wire: _Wire, client: tuple[str, int] | None) -> None:
        now = time.monotonic
        core = HttpServerConnection(self.limits, now(), client=client)
        router = self.router
        stopping = self._stopping
        send_timeout = self.limits.read_timeout
        shut = False
        while True:
            event = core.next_event(now())
            if event is NEED_DATA:
                out = core.data_to_send()
                if out:
                    wire.sendall(out, send_timeout)
                if stopping.is_set() and not shut:
                    shut = True
                    core.start_shutdown()
                    continue
                deadline = core.get_timer()
                wait = _SHUTDOWN_POLL if deadline is None else deadline - now()
                if core.phase is ServerPhase.IDLE:
                    wait = min(wait, _SHUTDOWN_POLL)
                if wait <= 0:
                    core.handle_timer(now())
                    continue
                try:
                    data = wire.recv(wait)
                except OSError:
                    core.send_failed()
                    continue
                if data is None:  # nothing arrived within ``wait``
                    core.handle_timer(now())
                    continue
                core.receive_data(data, now())
                continue
            if event is END_OF_INPUT:
                out = core.data_to_send()
                if out:
                    with contextlib.suppress(OSError):
                        wire.sendall(out, send_timeout)
                return
            assert isinstance(event, Request)
            start = now()
            response = dispatch(router, event, now)
            if stopping.is_set() and not shut:
                shut = True
                core.start_shutdown()  # this answer says Connection: close
            core.send_response(response, start, date=self._date.get())
            try:
                # a client that stops reading its answers gets read_timeout to drain them
                wire.sendall(core.data_to_send(), send_timeout)
            except OSError:  # TimeoutError included: drop what is queued (RST on close)
                wire.abort_on_close()
                core.send_failed()
            if self.access_log is not None:
                self._log_access(client, event, response, now() - start)

    def _log_access(
        self, client: tuple[str, int] | None, request: Request, response: Response, took: float
    ) -> None:
        if self.access_log is not None:
            line = format_access_log(client, request, response.status, len(response.body), took)
            self.access_log.write(line + "\n")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> HttpServer:
        """Run :meth:`serve_forever` in a background thread and return ``self``."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Stop accepting, let in-flight requests finish (answered with
        ``Connection: close``), close idle connections; wait up to ``drain_timeout``."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(drain_timeout)
        deadline = time.monotonic() + drain_timeout
        while True:
            with self._lock:
                threads = list(self._active)
            if not threads or time.monotonic() >= deadline:
                break
            threads[0].join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_server(app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> HttpServer:
    """Return a server for ``app`` already serving in a background thread.

    ``options`` are those of :class:`HttpServer` (``sock``, ``limits``, ``ssl``,
    ``access_log``, ``max_workers``, ``backlog``).

    Raises:
        TypeError: ``app`` has no router. OSError: the address cannot be bound.
    """
    return HttpServer(app, host, port, **options).start()


def serve(app: Any, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve ``app`` until Ctrl-C (or SIGTERM, in the main thread), then shut down
    gracefully. ``options`` are those of :class:`HttpServer`."""
    server = HttpServer(app, host, port, **options)
    runner = threading.Thread(target=server.serve_forever, daemon=True)
    runner.start()
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while runner.is_alive():
            runner.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

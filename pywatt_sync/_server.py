"""HTTP/1.1 server with blocking sockets and one thread per connection.

Concurrency bound: at most ``max_workers`` connection threads (default
:data:`DEFAULT_MAX_WORKERS`). The accept loop takes a worker slot *before*
accepting, so when every slot is busy further clients wait in the kernel's
listen backlog instead of piling up threads. A keep-alive connection holds its
slot until it closes (at most ``ServerLimits.keepalive_timeout`` idle).

Each connection thread is the driver loop over
:class:`pywatt_proto.HttpServerConnection`: pull an event; on ``NEED_DATA``
send what is queued and ``recv`` with the core's deadline as the socket
timeout; on a request run :func:`pywatt_sync.dispatch` and send the answer; on
``END_OF_INPUT`` flush and close. Idle waits are cut into slices of
``_SHUTDOWN_POLL`` seconds so a graceful shutdown reaches idle connections
without touching the core from another thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
import ssl as _ssl
import struct
import sys
import threading
import time
from typing import Any, TextIO

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
            if self._ssl is not None:
                sock.settimeout(self.limits.read_timeout)
                sock = self._ssl.wrap_socket(sock, server_side=True)
            self._drive(sock, client)
        except Exception:
            _log.exception("connection handler failed")
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._active.discard(threading.current_thread())
            self._slots.release()

    def _drive(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        now = time.monotonic
        core = HttpServerConnection(self.limits, now(), client=client)
        router = self.router
        stopping = self._stopping
        shut = False
        while True:
            event = core.next_event(now())
            if event is NEED_DATA:
                out = core.data_to_send()
                if out:
                    sock.sendall(out)
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
                sock.settimeout(wait)
                try:
                    data = sock.recv(_RECV_SIZE)
                except (TimeoutError, _ssl.SSLWantReadError):
                    core.handle_timer(now())
                    continue
                except OSError:
                    core.send_failed()
                    continue
                core.receive_data(data, now())
                continue
            if event is END_OF_INPUT:
                out = core.data_to_send()
                if out:
                    with contextlib.suppress(OSError):
                        sock.sendall(out)
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
                sock.settimeout(self.limits.read_timeout)
                sock.sendall(core.data_to_send())
            except OSError:  # TimeoutError included: drop what is queued (RST on close)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)
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

"""HTTP/1.1 server with blocking sockets and a small pool of event threads.

Plain sockets (on Linux, where ``select.epoll`` exists) are served by a few
*event threads* sharing one epoll set in ``EPOLLONESHOT`` mode: a ready socket
wakes exactly one thread, which then owns the connection (its
:class:`pywatt_proto.HttpServerConnection`) until it re-arms it. That thread
reads, feeds the core, runs each request's handler inline (handlers are plain
functions), writes the answer and serves pipelined requests, then re-arms the
socket and waits again. Few threads means little fighting over the GIL: 64
connection threads, each handing the GIL over at every syscall, served fewer
than half the requests of the asyncio driver.

Thread bound: :data:`_BASE_THREADS` event threads; when every one of them has
held its connection longer than :data:`_STALL` seconds (a slow handler, a slow
reader) the accept thread starts another, up to ``max_workers`` threads in all.
Threads above the base exit after :data:`_SPARE_IDLE` seconds without work.

Connection bound: at most ``max_connections`` open connections (default
:data:`DEFAULT_MAX_CONNECTIONS`, as the asyncio server); an idle keep-alive
connection sits in the epoll set and holds no thread. One more client is accepted,
answered 503 and closed at once, instead of waiting in the kernel's listen backlog.
With TLS (or without epoll) each connection holds a thread, so there the bound is
``max_workers``.

Send timeout: an answer that cannot be written is dropped (connection reset) after
``read_timeout`` seconds in which nothing was delivered -- neither accepted by
``send`` nor taken off the kernel's send queue (``SIOCOUTQ``) -- so a slow but
steady reader is never cut off (nginx's ``send_timeout`` model).

Deadlines: the accept thread ticks every :data:`_TICK` seconds; it applies the
core's ``get_timer`` deadline (408, keep-alive close) and a graceful shutdown to
connections no event thread holds (``Lock.acquire(blocking=False)``), so the
core is only ever touched by the thread holding the connection's lock.

TLS sockets (which may hold decrypted bytes epoll cannot see) and platforms
without epoll keep one thread per connection: the driver loop in
:meth:`HttpServer._drive`, waiting with socket timeouts or poll().
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

try:  # the kernel's send queue, for the send timeout (POSIX)
    import fcntl as _fcntl
    import termios as _termios
except ImportError:  # pragma: no cover - Windows
    _fcntl = None  # type: ignore[assignment]

from pywatt_proto import (
    END_OF_INPUT,
    NEED_DATA,
    HttpServerConnection,
    Request,
    Response,
    ServerLimits,
    ServerPhase,
    format_access_log,
    http_date,
)
from pywatt_proto._http import SendProgress, busy_response
from pywatt_proto._router import router_of

from ._dispatch import dispatch

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_WORKERS", "HttpServer", "serve", "start_server"]

_log = logging.getLogger("pywatt.http")

# Threads at most (each ~8 MiB of reserved, mostly untouched, stack).
DEFAULT_MAX_WORKERS = 256
# Open connections at most (each at most 64 KiB of buffered input; an idle one holds
# no thread); one more is answered 503 and closed. The asyncio server's default.
DEFAULT_MAX_CONNECTIONS = 1024
# Seconds the accept loop pauses after an accept error (EMFILE: a descriptor must free up).
_ACCEPT_RETRY = 0.1
_BUSY = busy_response()
# Event threads always running. One: under the GIL a second thread only adds
# hand-overs (wrk -c64 GET /hello: 1 thread 14.5k req/s, 2 threads 8.7k, one
# thread per connection 6.2k). A handler slower than _STALL gets company.
_BASE_THREADS = 1
# An event thread holding one connection this long counts as stalled (slow
# handler, slow reader); when all are stalled another thread is started.
_STALL = 0.05
# Accept-thread period: deadlines (408, keep-alive), shutdown, stall checks.
_TICK = 0.05
# Seconds an extra (above _BASE_THREADS) event thread waits for work before exiting.
_SPARE_IDLE = 5.0
_HAS_EPOLL = hasattr(select, "epoll")
_ARM = (select.EPOLLIN | select.EPOLLONESHOT) if _HAS_EPOLL else 0
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


def unsent_bytes(sock: socket.socket) -> int:
    """Return the bytes in ``sock``'s kernel send queue not yet acknowledged by the peer
    (Linux ``SIOCOUTQ``; 0 where it cannot be asked)."""
    if _fcntl is None:
        return 0
    try:
        raw = _fcntl.ioctl(sock.fileno(), _termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):
        return 0
    queued: int = struct.unpack("i", raw)[0]
    return queued


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
        """Send all of ``data``; TimeoutError once nothing was delivered for ``timeout``
        seconds (see the module docstring), OSError if the connection fails."""

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
        progress = SendProgress(timeout, len(view) + unsent_bytes(sock), time.monotonic())
        while view:
            if self._ready(_OUT, progress.check_interval()):
                with contextlib.suppress(BlockingIOError):
                    view = view[sock.send(view) :]
            now = time.monotonic()
            progress.update(len(view) + unsent_bytes(sock), now)
            if view and progress.expired(now):
                raise TimeoutError("send timed out: nothing delivered")

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
        sock = self._sock
        view = memoryview(data)
        progress = SendProgress(timeout, len(view), time.monotonic())
        sock.settimeout(progress.check_interval())
        while view:
            with contextlib.suppress(TimeoutError, _ssl.SSLWantWriteError):
                view = view[sock.send(view) :]
            now = time.monotonic()
            progress.update(len(view) + unsent_bytes(sock), now)
            if view and progress.expired(now):
                raise TimeoutError("send timed out: nothing delivered")

    def abort_on_close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)


class _Conn:
    """A plain connection served by the event threads; ``lock`` is held by whoever
    touches ``core`` (an event thread, or the accept thread's tick)."""

    __slots__ = ("client", "closed", "core", "fd", "lock", "shut", "sock", "wire")

    def __init__(self, sock: socket.socket, core: HttpServerConnection, client: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.wire = _PollWire(sock)
        self.core = core
        self.client: tuple[str, int] | None = client
        self.lock = threading.Lock()
        self.closed = False
        self.shut = False  # start_shutdown() already called


class _Worker:
    """An event thread's state as the accept thread sees it."""

    __slots__ = ("busy",)

    def __init__(self) -> None:
        self.busy = 0.0  # monotonic time it took its current connection; 0.0 when waiting


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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
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
        self._max_workers = max_workers
        self._epoll: Any = select.epoll() if _HAS_EPOLL and ssl is None else None
        # an idle evented connection holds no thread; a threaded one holds its thread
        self._cap = max_connections if self._epoll is not None else max_workers
        self._open = 0  # connections counted against _cap (under _lock)
        self.refused = 0  # clients answered 503 at the cap
        self._conns: dict[int, _Conn] = {}
        self._workers: list[_Worker] = []
        self._closed = False  # event threads exit
        self._drain_deadline = math.inf
        self._serving = False
        self._finished = threading.Event()
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
        self._serving = True
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        evented = self._epoll is not None
        wait = _TICK if evented else _SHUTDOWN_POLL
        try:
            for _ in range(_BASE_THREADS if evented else 0):
                self._spawn(spare=False)
            while not self._stopping.is_set():
                if evented:
                    self._tick()
                if not any(key.fileobj is self._sock for key, _ in sel.select(wait)):
                    continue
                try:
                    conn, addr = self._sock.accept()
                except OSError as exc:  # EMFILE and the like: let descriptors free up
                    _log.debug("accept failed: %s", exc)
                    time.sleep(_ACCEPT_RETRY)
                    continue
                with self._lock:
                    admitted = self._open < self._cap
                    if admitted:
                        self._open += 1
                if not admitted:
                    self._refuse(conn)
                    continue
                client = (str(addr[0]), int(addr[1])) if isinstance(addr, tuple) else None
                if evented:
                    self._add(conn, client)
                    continue
                thread = threading.Thread(target=self._connection, args=(conn, client), daemon=True)
                with self._lock:
                    self._active.add(thread)
                thread.start()
            sel.close()
            self._sock.close()  # stop accepting before draining
            while evented and self._conns and time.monotonic() < self._drain_deadline:
                self._tick()
                time.sleep(_TICK)
            if evented and not self._conns:
                self._closed = True
                self._epoll.close()  # a waiting event thread then gets ValueError and exits
        finally:
            sel.close()
            self._sock.close()
            self._stopped.set()
            self._finished.set()

    def _refuse(self, conn: socket.socket) -> None:
        """Answer 503 to a client past the connection cap and close it (never blocks)."""
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_BUSY)
        with contextlib.suppress(OSError):
            conn.close()

    def _release(self) -> None:
        with self._lock:
            self._open -= 1

    # -- event threads (plain sockets, epoll) ------------------------------------------------------

    def _add(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(
                sock,
                HttpServerConnection(
                    self.limits, time.monotonic(), client=client, date=self._date.get
                ),
                client,
            )
            with self._lock:
                self._conns[conn.fd] = conn
            self._epoll.register(conn.fd, _ARM)
        except OSError:
            with self._lock:
                self._conns.pop(sock.fileno(), None)
            with contextlib.suppress(OSError):
                sock.close()
            self._release()

    def _spawn(self, *, spare: bool) -> None:
        worker = _Worker()
        with self._lock:
            self._workers.append(worker)
        threading.Thread(target=self._event_thread, args=(worker, spare), daemon=True).start()

    def _event_thread(self, me: _Worker, spare: bool) -> None:
        """Wait for one ready connection, serve it until it needs data again, repeat."""
        poll = self._epoll.poll
        conns = self._conns
        now = time.monotonic
        idle_since = now()
        try:
            while not self._closed:
                try:
                    events = poll(_SHUTDOWN_POLL, 1)
                except (OSError, ValueError):  # closed by serve_forever
                    return
                if not events:
                    if spare and now() - idle_since > _SPARE_IDLE:
                        return
                    continue
                conn = conns.get(events[0][0])
                if conn is None:
                    continue
                me.busy = now()
                with conn.lock:
                    if not conn.closed:
                        try:
                            self._ready(conn)
                        except Exception:
                            _log.exception("connection handler failed")
                            self._close(conn)
                me.busy = 0.0
                idle_since = now()
        finally:
            with self._lock:
                self._workers.remove(me)

    def _ready(self, conn: _Conn) -> None:
        """Read what the (readable) socket holds and serve it. Caller holds ``conn.lock``."""
        core = conn.core
        try:
            data: bytes | None = conn.sock.recv(_RECV_SIZE)
        except BlockingIOError:  # a stale event (another thread served it first)
            data = None
        except OSError:
            core.send_failed()
            data = None
        if data is None:
            core.handle_timer(time.monotonic())
        else:
            core.receive_data(data, time.monotonic())
        self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        """Drive ``conn``'s core until it needs data (re-arm) or ends (close).

        Caller holds ``conn.lock``. Handlers run here, on the calling thread.
        """
        now = time.monotonic
        core = conn.core
        wire = conn.wire
        router = self.router
        stopping = self._stopping
        send_timeout = self.limits.read_timeout
        while True:
            event = core.next_event(now())
            if event is NEED_DATA:
                out = core.data_to_send()
                if out:
                    try:
                        wire.sendall(out, send_timeout)
                    except OSError:
                        core.send_failed()
                        continue
                if stopping.is_set() and not conn.shut:
                    conn.shut = True
                    core.start_shutdown()
                    continue
                deadline = core.get_timer()
                if deadline is not None and deadline <= now():
                    core.handle_timer(now())
                    continue
                self._epoll.modify(conn.fd, _ARM)
                return
            if event is END_OF_INPUT:
                out = core.data_to_send()
                if out:
                    with contextlib.suppress(OSError):
                        wire.sendall(out, send_timeout)
                self._close(conn)
                return
            assert isinstance(event, Request)
            start = now()
            response = dispatch(router, event, now)
            if stopping.is_set() and not conn.shut:
                conn.shut = True
                core.start_shutdown()  # this answer says Connection: close
            core.send_response(response, start, date=self._date.get())
            try:
                # a client that stops reading its answers gets read_timeout to drain them
                wire.sendall(core.data_to_send(), send_timeout)
            except OSError:  # TimeoutError included: drop what is queued (RST on close)
                wire.abort_on_close()
                core.send_failed()
            if self.access_log is not None:
                self._log_access(conn.client, event, response, now() - start)

    def _close(self, conn: _Conn) -> None:
        """Forget and close ``conn`` (caller holds its lock) and free its slot."""
        if conn.closed:
            return
        conn.closed = True
        with self._lock:
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self._release()

    def _tick(self) -> None:
        """Apply expired deadlines and a shutdown to connections no thread holds, and
        start another event thread when all of them are stalled."""
        now = time.monotonic()
        stopping = self._stopping.is_set()
        with self._lock:
            conns = list(self._conns.values())
            workers = list(self._workers)
        for conn in conns:
            if not conn.lock.acquire(blocking=False):
                continue  # an event thread is serving it
            try:
                if conn.closed:
                    continue
                core = conn.core
                if stopping and not conn.shut:
                    conn.shut = True
                    core.start_shutdown()
                else:
                    deadline = core.get_timer()
                    if deadline is None or now < deadline:
                        continue
                    core.handle_timer(now)
                self._advance(conn)
            except Exception:
                _log.exception("connection handler failed")
                self._close(conn)
            finally:
                conn.lock.release()
        if (
            len(workers) < self._max_workers
            and not self._closed
            and all(0.0 < w.busy <= now - _STALL for w in workers)
        ):
            self._spawn(spare=True)

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
            self._release()

    def _drive(self, wire: _Wire, client: tuple[str, int] | None) -> None:
        now = time.monotonic
        core = HttpServerConnection(self.limits, now(), client=client, date=self._date.get)
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
        deadline = time.monotonic() + drain_timeout
        self._drain_deadline = deadline
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._serving:  # the accept thread drains the event threads' connections
            self._finished.wait(drain_timeout + 2 * _TICK)
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

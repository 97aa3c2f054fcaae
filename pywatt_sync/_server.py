"""HTTP/1.1 server with blocking sockets and a small pool of event threads.

Plain sockets (where ``select.epoll`` exists) are served by *event threads* sharing one
epoll set in ``EPOLLONESHOT`` mode: a ready socket wakes one thread, which owns the
connection (its :class:`pywatt_proto.HttpServerConnection`) until it re-arms it: it reads,
feeds the core, runs each handler inline, writes the answers, then re-arms the socket. Few
threads means little fighting over the GIL. :data:`_BASE_THREADS` always run; when all
have held their connection longer than :data:`_STALL` seconds (a slow handler or reader)
the accept thread starts another, up to ``max_workers``; those exit after
:data:`_SPARE_IDLE` seconds without work.

At most ``max_connections`` connections are open (an idle one holds no thread); one more
client is answered 503 and closed at once, not left in the listen backlog. TLS sockets
(which may hold decrypted bytes epoll cannot see) and platforms without epoll keep one
thread per connection, bounded by ``max_workers``, waiting with socket timeouts or poll().

Send timeout: an answer is dropped (connection reset) after ``read_timeout`` seconds in
which nothing was delivered, the kernel's send queue (``SIOCOUTQ``) included, so a slow
but steady reader is never cut off (nginx's ``send_timeout`` model).

Deadlines: every :data:`_TICK` seconds the accept thread applies the core's deadlines
(408, keep-alive close) and a graceful shutdown to connections no thread holds
(``Lock.acquire(blocking=False)``): a core is only touched under its connection's lock.
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
from typing import Any, TextIO

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
    ServerLimits,
    ServerPhase,
    format_access_log,
    http_date,
)
from pywatt_proto._driver import refused_answer
from pywatt_proto._errors import LocalProtocolError
from pywatt_proto._http import SendProgress, busy_response
from pywatt_proto._router import router_of

from ._dispatch import dispatch

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


def unsent_bytes(sock: Any) -> int:
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


def reset_on_close(sock: Any) -> None:
    """Make closing ``sock`` reset the connection: the kernel drops what is still queued."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)


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


class _Wire:
    """How a connection's thread reads and writes its socket (see the two subclasses)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, wait: float) -> bytes | None:
        """Return the next bytes (``b""`` at EOF), or None when none came within ``wait`` s."""
        raise NotImplementedError

    def sendall(self, data: bytes, timeout: float) -> None:
        """Send all of ``data``; TimeoutError once nothing was delivered for ``timeout``
        seconds (see the module docstring), OSError if the connection fails."""
        raise NotImplementedError

    def _wait_writable(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for room in the socket's send buffer."""
        raise NotImplementedError

    def _send_rest(self, view: memoryview, timeout: float) -> None:
        """Send ``view`` once the socket's buffer is full: the send timeout's loop."""
        sock = self._sock
        progress = SendProgress(timeout, len(view) + unsent_bytes(sock), time.monotonic())
        while view:
            self._wait_writable(progress.check_interval())
            with contextlib.suppress(BlockingIOError, TimeoutError, _ssl.SSLWantWriteError):
                view = view[sock.send(view) :]
            now = time.monotonic()
            progress.update(len(view) + unsent_bytes(sock), now)
            if view and progress.expired(now):
                raise TimeoutError("send timed out: nothing delivered")


class _PollWire(_Wire):
    """A plain socket in non-blocking mode: a read waits in poll() and then reads; a
    write sends at once and polls only when the kernel's buffer is full. Half the syscalls
    (each a GIL hand-over) of a socket with a timeout, which polls before every call."""

    __slots__ = ("_fd", "_poll")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        sock.setblocking(False)
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
        if not self._ready(_IN, wait):
            return None
        try:
            return self._sock.recv(_RECV_SIZE)
        except BlockingIOError:  # a spurious wake-up: the caller checks its deadline
            return None

    def sendall(self, data: bytes, timeout: float) -> None:
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._send_rest(memoryview(data)[sent:], timeout)

    def _wait_writable(self, wait: float) -> None:
        self._ready(_OUT, wait)


class _TimeoutWire(_Wire):
    """A TLS socket, driven with socket timeouts (it may hold decrypted bytes that a
    poll() on its file descriptor would not see)."""

    __slots__ = ()

    def recv(self, wait: float) -> bytes | None:
        self._sock.settimeout(wait)
        try:
            return self._sock.recv(_RECV_SIZE)
        except (TimeoutError, _ssl.SSLWantReadError):
            return None

    def sendall(self, data: bytes, timeout: float) -> None:
        self._send_rest(memoryview(data), timeout)

    def _wait_writable(self, wait: float) -> None:
        self._sock.settimeout(wait)  # the next send waits this long for room


class _Conn:
    """One connection and its core; ``lock`` is held by whoever touches ``core`` (an event
    thread or the accept thread's tick; a threaded connection's own thread)."""

    __slots__ = ("closed", "core", "fd", "lock", "shut", "sock", "wire")

    def __init__(self, sock: socket.socket, wire: _Wire, core: HttpServerConnection) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.wire = wire
        self.core = core
        self.lock = threading.Lock()
        self.closed = False
        self.shut = False  # start_shutdown() already called

    def shutdown(self) -> bool:
        """Tell the core to finish (once); return True if this call did."""
        if self.shut:
            return False
        self.shut = True
        self.core.start_shutdown()
        return True


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
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._active: set[threading.Thread] = set()
        self._date = _DateCache()

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

    def _core(self, client: tuple[str, int] | None) -> HttpServerConnection:
        now = time.monotonic()
        return HttpServerConnection(self.limits, now, client=client, date=self._date.get)

    def _advance(self, conn: _Conn) -> bool:
        """Drive ``conn``'s core until it waits for bytes (True) or the connection is over
        (False, its last bytes sent). Handlers run here, on the calling thread, which
        holds ``conn.lock``."""
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
                if stopping.is_set() and conn.shutdown():
                    continue
                deadline = core.get_timer()
                if deadline is None or deadline > now():
                    return True
                core.handle_timer(now())
                continue
            if event is END_OF_INPUT:
                out = core.data_to_send()
                if out:
                    with contextlib.suppress(OSError):
                        wire.sendall(out, send_timeout)
                return False
            assert isinstance(event, Request)
            start = now()
            response = dispatch(router, event, now)
            if stopping.is_set():
                conn.shutdown()  # this answer says Connection: close
            try:
                core.send_response(response, start, date=self._date.get())
            except LocalProtocolError as exc:  # nothing was queued: answer 500 instead
                response = refused_answer(router, event, exc)
                core.send_response(response, start, date=self._date.get())
            try:
                # a client that stops reading its answers gets read_timeout to drain them
                wire.sendall(core.data_to_send(), send_timeout)
            except OSError:  # TimeoutError included: drop what is queued (RST on close)
                reset_on_close(conn.sock)
                core.send_failed()
            if self.access_log is not None:
                line = format_access_log(
                    core.client, event, response.status, len(response.body), now() - start
                )
                self.access_log.write(line + "\n")

    # -- event threads (plain sockets, epoll) ------------------------------------------------------

    def _add(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, _PollWire(sock), self._core(client))
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
        try:
            conn.core.receive_data(conn.sock.recv(_RECV_SIZE), time.monotonic())
        except BlockingIOError:  # a stale event (another thread served it first)
            pass
        except OSError:
            conn.core.send_failed()
        self._serve(conn)

    def _serve(self, conn: _Conn) -> None:
        """Advance ``conn`` (caller holds its lock); re-arm it, or close it when over."""
        if self._advance(conn):
            self._epoll.modify(conn.fd, _ARM)
        else:
            self._close(conn)

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
                deadline = conn.core.get_timer()
                due = deadline is not None and now >= deadline
                if not conn.closed and (due or (stopping and not conn.shut)):
                    self._serve(conn)
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

    # -- one thread per connection (TLS, or no epoll) ------------------------------------------

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
            conn = _Conn(sock, wire, self._core(client))
            core = conn.core
            while self._advance(conn):
                deadline = core.get_timer()
                wait = _SHUTDOWN_POLL if deadline is None else deadline - time.monotonic()
                if core.phase is ServerPhase.IDLE:
                    wait = min(wait, _SHUTDOWN_POLL)
                if wait <= 0:
                    continue  # due: _advance applies it
                try:
                    data = wire.recv(wait)
                except OSError:
                    core.send_failed()
                    continue
                if data is not None:  # None: nothing arrived within ``wait``
                    core.receive_data(data, time.monotonic())
        except Exception:
            _log.exception("connection handler failed")
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._active.discard(threading.current_thread())
            self._release()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> HttpServer:
        """Run :meth:`serve_forever` in a background thread and return ``self``."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
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

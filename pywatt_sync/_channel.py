"""A framed TCP / Unix-socket channel offered in ``init``, driven with blocking sockets.

The blocking twin of ``pywatt_asyncio._channel``: the protocol (envelopes, heartbeat acks,
request rules, deadlines, the reconnect schedule) is :class:`pywatt_proto.ChannelConnection`;
this file moves bytes with one reader thread per channel and a locked writer.

* **Reader thread** -- connects (each attempt bounded by ``connect_timeout``), then waits for
  the socket to become readable with ``select`` (never a socket timeout, which would also
  apply to writers on other threads), feeds the core, and hands events to ``on_event``
  *after* releasing the core lock (so a callback may answer at once). Between reads it wakes
  for the core's next request deadline. On loss it sleeps per the core's schedule
  (interruptible by :meth:`close`) and reconnects.
* **Writer** -- any thread: take the core's output and ``sendall`` it while holding the write
  lock, so frames are whole and in the order the core produced them. A peer that stops
  reading blocks writers, the reader included: back-pressure, not an unbounded buffer.

``tls=True`` wraps the TCP socket with ``ssl.create_default_context()`` (system trust
store; the certificate must carry the address as an IP SAN). No plain-text fallback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from pywatt_proto._channel import (
    DEFAULT_CONNECT_TIMEOUT,
    ChannelConnection,
    ChannelEvent,
    ChannelKind,
    ChannelState,
    ChannelTarget,
    connect_failure_reason,
)
from pywatt_proto._errors import LocalProtocolError, RemoteProtocolError
from pywatt_proto._framing import END_OF_INPUT, NEED_DATA
from pywatt_proto._lazylog import LazyLogger

_log = LazyLogger("pywatt.channel")  # loads logging for the first emitted record

#: Bytes asked for per socket read.
READ_CHUNK: Final = 256 * 1024

EventHandler = Callable[["SyncChannel", ChannelEvent], None]


class SyncChannel:
    """One framed channel served by a reader thread (see the module docstring).

    Args:
        target: where to connect (from ``pywatt_proto.channel_targets(init)``).
        on_event: called on the reader thread for every event.
        conn: the protocol core (default: a new ``ChannelConnection(kind=target.kind)``).
        connect_timeout: seconds per connect attempt.
        clock: monotonic seconds (default ``time.monotonic``).
    """

    def __init__(
        self,
        target: ChannelTarget,
        *,
        on_event: EventHandler,
        conn: ChannelConnection | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.conn = conn if conn is not None else ChannelConnection(kind=target.kind)
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._lock = threading.Lock()  # guards the core
        self._drained = threading.Condition(self._lock)  # notified when in_flight may drop
        self._write_lock = threading.Lock()  # one writer at a time, whole frames
        self._stop = threading.Event()  # close() interrupts back-off sleeps
        self._first = threading.Event()
        self._first_failure: str | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SyncChannel({self.target.describe()}, state={self.conn.state.name})"

    # ------------------------------------------------------------------ public
    def start(self) -> str | None:
        """Start the reader thread and wait for the first connection.

        Returns None once connected (the thread keeps serving and reconnecting), or the
        reason the first connection failed after every allowed attempt (the thread ends).
        """
        self._thread = threading.Thread(
            target=self._run, name=f"pywatt {self.target.describe()}", daemon=True
        )
        self._thread.start()
        self._first.wait()
        return self._first_failure

    def send_response(
        self,
        request_id: str,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | None,
    ) -> bool:
        """Answer a request received on this channel (any thread). Returns False when the
        core already answered it (504) or its connection is gone."""
        with self._write_lock:
            with self._lock:
                try:
                    sent = self.conn.send_response(request_id, status, headers, body)
                except LocalProtocolError as exc:
                    _log.error("%s: response to %s not sent: %s", self, request_id, exc)
                    return False
                data = self.conn.data_to_send()
                self._drained.notify_all()
            self._write_locked(data)
        return sent

    def begin_shutdown(self) -> None:
        """The module is stopping: refuse new requests (503), stop reconnecting."""
        with self._lock:
            self.conn.begin_shutdown()
            stopped = self.conn.state is ChannelState.CLOSED
        if stopped:
            self._stop.set()

    def wait_drained(self, timeout: float | None) -> bool:
        """Wait until no request received on this channel is unanswered (answered by the
        module, 504, or abandoned with a lost connection). Returns False on timeout."""
        with self._drained:
            return self._drained.wait_for(lambda: self.conn.in_flight == 0, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Close the socket and stop the reader thread (joined for up to ``timeout`` s)."""
        with self._lock:
            self.conn.close()
            self._drained.notify_all()
        self._stop.set()
        self._shutdown_socket()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---------------------------------------------------------------- the loop
    def _run(self) -> None:
        conn, what = self.conn, self.target.describe()
        try:
            while not self._stop.is_set():
                with self._lock:
                    conn.start_connect(self._clock())
                try:
                    sock = self._open()
                except (OSError, ValueError) as exc:
                    reason = connect_failure_reason(exc, self._connect_timeout)
                    with self._lock:
                        at = conn.connect_failed(self._clock(), reason)
                    if at is None:
                        self._resolve_first(reason)
                        if conn.connections:
                            _log.error(
                                "%s: giving up after %d attempts: %s", what, conn.attempts, reason
                            )
                        return
                    _log.debug("%s: connect failed (%s); retrying", what, reason)
                    self._stop.wait(max(0.0, at - self._clock()))
                    continue
                with self._lock:
                    if conn.state is not ChannelState.CONNECTING:  # closed meanwhile
                        sock.close()
                        return
                    conn.connected(self._clock())
                    self._sock = sock
                _log.info("%s connected", what)
                self._resolve_first(None)
                reason = self._serve(sock)
                self._shutdown_socket()
                with self._lock:
                    at = conn.connection_lost(self._clock(), reason)
                    self._drained.notify_all()
                if at is None:
                    return
                _log.warning("%s lost (%s); reconnecting", what, reason)
                self._stop.wait(max(0.0, at - self._clock()))
        except LocalProtocolError:
            pass  # close()/begin_shutdown() moved the core on while we connected or slept
        except Exception:
            _log.exception("%s: channel thread failed", what)
        finally:
            self._resolve_first(conn.last_failure or "channel closed")

    def _resolve_first(self, reason: str | None) -> None:
        if not self._first.is_set():
            self._first_failure = reason
            self._first.set()

    def _open(self) -> socket.socket:
        target = self.target
        if target.kind is ChannelKind.IPC:
            assert target.socket_path is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self._connect_timeout)
                sock.connect(target.socket_path)
            except BaseException:
                sock.close()
                raise
        else:
            assert target.address is not None
            host, port = target.address.host, target.address.port
            sock = socket.create_connection((host, port), timeout=self._connect_timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if target.tls:
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(None)
        return sock

    def _serve(self, sock: socket.socket) -> str:
        """Read until the stream ends; return why it ended."""
        conn = self.conn
        while True:
            with self._lock:
                deadline = conn.get_timer()
            wait = None if deadline is None else max(0.0, deadline - self._clock())
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not pending:
                try:
                    readable, _, _ = select.select([sock], [], [], wait)
                except (OSError, ValueError) as exc:
                    return f"read failed: {exc}"
                if not readable:
                    with self._lock:
                        conn.handle_timer(self._clock())
                        self._drained.notify_all()
                    self._dispatch()
                    continue
            try:
                data = sock.recv(READ_CHUNK)
            except (OSError, ValueError) as exc:
                return f"read failed: {exc}"
            with self._lock:
                try:
                    if data:
                        conn.receive_data(data, self._clock())
                    else:
                        conn.receive_eof()
                except LocalProtocolError:
                    return "channel closed"
            if not self._dispatch():
                return str(conn.error)
            if not data:
                return "connection closed by the peer"

    def _dispatch(self) -> bool:
        """Take every event (core lock held), write the output, then run the callbacks.
        Returns False after a fatal framing error (the channel is FAILED)."""
        events: list[ChannelEvent] = []
        ok = True
        with self._write_lock:
            with self._lock:
                try:
                    while True:
                        event = self.conn.next_event()
                        if event is NEED_DATA or event is END_OF_INPUT:
                            break
                        events.append(event)
                except RemoteProtocolError as exc:
                    _log.error("%s: closing the channel: %s", self.target.describe(), exc)
                    ok = False
                    self._drained.notify_all()  # in-flight requests were abandoned
                data = self.conn.data_to_send()
            self._write_locked(data)
        for event in events:
            self._on_event(self, event)
        return ok

    def _write_locked(self, data: bytes) -> None:
        sock = self._sock
        if not data or sock is None:
            return
        try:
            sock.sendall(data)
        except OSError as exc:
            _log.warning("%s: write failed: %s", self.target.describe(), exc)
            self._shutdown_socket()  # the reader sees the end and reports the loss

    def _shutdown_socket(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        if threading.current_thread() is self._thread:
            self._sock = None
            sock.close()

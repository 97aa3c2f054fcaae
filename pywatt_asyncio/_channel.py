"""A framed TCP / Unix-socket channel offered in ``init``, driven with asyncio.

The protocol (envelopes, heartbeat acks, which requests are accepted, deadlines, the
reconnect schedule) lives in :class:`pywatt_proto.ChannelConnection`; this file only moves
bytes and sleeps when the core says so.

Shape: the read half belongs to one reader loop (the channel's
task), the write half to one writer task fed through a bounded queue. A pending read never
holds up a write, and a read is never cancelled half-way through a frame (timeouts apply to
requests, not to the socket). When the writer's queue is full the reader waits before
queueing more automatic replies, so a peer that stops reading stops being read.

``tls=True`` (init's ``tls_enabled``) wraps the TCP connection with
``ssl.create_default_context()``: the orchestrator's certificate must verify against the
system trust store and carry the address as an IP SAN. No plain-text fallback is tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
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

_log = logging.getLogger("pywatt.channel")

#: Bytes asked for per socket read.
READ_CHUNK: Final = 256 * 1024
#: Outbound chunks (one or more whole frames each) waiting for the writer task. A chunk is
#: one call's output, so this bounds memory at a few chunks per slot; producers wait beyond.
MAX_QUEUED_WRITES: Final = 256

EventHandler = Callable[["AsyncChannel", ChannelEvent], None]


class AsyncChannel:
    """One framed channel: connects, reconnects per the core's schedule, reads, writes.

    Args:
        target: where to connect (from ``pywatt_proto.channel_targets(init)``).
        conn: the protocol core (default: a new ``ChannelConnection(kind=target.kind)``).
        on_event: called on the loop for every event (requests, shutdown, bad frames, ...).
        connect_timeout: seconds per connect attempt.
    """

    def __init__(
        self,
        target: ChannelTarget,
        *,
        on_event: EventHandler,
        conn: ChannelConnection | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.target = target
        self.conn = conn if conn is not None else ChannelConnection(kind=target.kind)
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[str | None] | None = None
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"AsyncChannel({self.target.describe()}, state={self.conn.state.name})"

    # ------------------------------------------------------------------ public
    async def start(self) -> str | None:
        """Start the channel's task and wait for the first connection.

        Returns None once connected (the task keeps serving and reconnecting), or the
        reason the first connection could not be made after every allowed attempt (the
        task has ended; the channel is FAILED or CLOSED).
        """
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"pywatt {self.target.describe()}")
        self._task.add_done_callback(self._task_done)
        return await self._first

    async def send_response(
        self,
        request_id: str,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes | None,
    ) -> bool:
        """Answer a request received on this channel. Returns False when it was already
        answered by the core (504) or its connection is gone."""
        try:
            sent = self.conn.send_response(request_id, status, headers, body)
        except LocalProtocolError as exc:
            _log.error("%s: response to %s not sent: %s", self.target.describe(), request_id, exc)
            return False
        if sent:
            await self._flush()
        return sent

    def begin_shutdown(self) -> None:
        """The module is stopping: refuse new requests (503), stop reconnecting."""
        self.conn.begin_shutdown()
        if self.conn.state is ChannelState.CLOSED and self._task is not None:
            self._task.cancel()  # it was only waiting to reconnect

    async def aclose(self, timeout: float = 1.0) -> None:
        """Write what is queued (up to ``timeout`` seconds), close the socket, stop the task."""
        self.conn.close()
        queue, writer_task = self._queue, self._writer_task
        if queue is not None and writer_task is not None and not writer_task.done():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
            await asyncio.wait({writer_task}, timeout=timeout)
        self._close_socket()
        for task in (self._task, self._writer_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._timer is not None:
            self._timer.cancel()

    # ---------------------------------------------------------------- the loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        conn = self.conn
        what = self.target.describe()
        try:
            while True:
                conn.start_connect(loop.time())
                try:
                    reader, writer = await asyncio.wait_for(self._open(), self._connect_timeout)
                except (TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
                    reason = connect_failure_reason(exc, self._connect_timeout)
                    at = conn.connect_failed(loop.time(), reason)
                    if at is None:
                        self._resolve_first(reason)
                        if conn.connections:
                            _log.error(
                                "%s: giving up after %d attempts: %s", what, conn.attempts, reason
                            )
                        return
                    _log.debug("%s: connect failed (%s); retrying", what, reason)
                    await asyncio.sleep(max(0.0, at - loop.time()))
                    continue
                conn.connected(loop.time())
                _log.info("%s connected", what)
                self._resolve_first(None)
                reason = await self._serve(reader, writer)
                at = conn.connection_lost(loop.time(), reason)
                if at is None:
                    return
                _log.warning("%s lost (%s); reconnecting", what, reason)
                await asyncio.sleep(max(0.0, at - loop.time()))
        except LocalProtocolError:
            pass  # close()/begin_shutdown() moved the core on while we connected or slept
        finally:
            self._resolve_first(conn.last_failure or "channel closed")

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("%s: channel task failed", self.target.describe(), exc_info=task.exception())

    def _resolve_first(self, reason: str | None) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(reason)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = self.target
        if target.kind is ChannelKind.IPC:
            assert target.socket_path is not None
            return await asyncio.open_unix_connection(target.socket_path, limit=READ_CHUNK)
        assert target.address is not None
        context = ssl.create_default_context() if target.tls else None
        return await asyncio.open_connection(
            target.address.host, target.address.port, ssl=context, limit=READ_CHUNK
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Read until the stream ends; return why it ended."""
        loop = asyncio.get_running_loop()
        conn = self.conn
        self._queue = asyncio.Queue(MAX_QUEUED_WRITES)
        self._writer = writer
        self._writer_task = loop.create_task(self._write_loop(writer, self._queue))
        reason = "connection closed by the peer"
        try:
            while True:
                try:
                    data = await reader.read(READ_CHUNK)
                except (OSError, ssl.SSLError) as exc:
                    reason = f"read failed: {exc}"
                    break
                if self._writer_task.done():
                    reason = "write failed"
                    break
                if not data:
                    conn.receive_eof()
                    await self._process()
                    break
                try:
                    conn.receive_data(data, loop.time())
                except LocalProtocolError:
                    break  # closed locally meanwhile
                if not await self._process():
                    reason = str(conn.error)
                    break
        finally:
            self._close_socket()
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer_task
            self._queue = None
        return reason

    async def _process(self) -> bool:
        """Hand every event to the module, then queue the output. False after a fatal
        framing error (the channel is FAILED and must be closed)."""
        conn = self.conn
        ok = True
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is END_OF_INPUT:
                    break
                self._on_event(self, event)
        except RemoteProtocolError as exc:
            _log.error("%s: closing the channel: %s", self.target.describe(), exc)
            ok = False
        await self._flush()
        self._arm_timer()
        return ok

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        queue, writer_task = self._queue, self._writer_task
        if data and queue is not None and writer_task is not None and not writer_task.done():
            await queue.put(data)  # waits while the queue is full: back-pressure

    async def _write_loop(
        self, writer: asyncio.StreamWriter, queue: asyncio.Queue[bytes | None]
    ) -> None:
        try:
            while True:
                data = await queue.get()
                if data is None:
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError) as exc:
            _log.warning("%s: write failed: %s", self.target.describe(), exc)
            writer.close()  # the reader sees the end and reports the loss
        finally:
            # Wake producers waiting on a full queue; their output has nowhere to go now.
            while not queue.empty():
                queue.get_nowait()

    def _close_socket(self) -> None:
        writer = self._writer
        self._writer = None
        if writer is not None:
            writer.close()

    # ------------------------------------------------------------------ timers
    def _arm_timer(self) -> None:
        when = self.conn.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer, when)

    def _on_timer(self, when: float) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        self.conn.handle_timer(max(loop.time(), when))
        task = loop.create_task(self._process())
        _background.add(task)
        task.add_done_callback(_background.discard)


#: Strong references to timer-started processing tasks (asyncio keeps only weak ones).
_background: set[asyncio.Task[bool]] = set()

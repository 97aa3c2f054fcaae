"""The process's stdin/stdout for the asyncio loop: :class:`PipeLink`, one reader and one
writer. ``guard_stdout`` (``_guard``, shared with the blocking driver) keeps fd 1 and
``sys.stdout`` off the protocol channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Final

_log = logging.getLogger("pywatt.module")

#: Bytes asked for per read of stdin: a pipe holds 64 KiB on Linux, and a larger buffer costs
#: an allocation above glibc's mmap threshold (an mmap + munmap) on every read. asyncio's pipe
#: transport asks for 256 KiB; its ``max_size`` is set to this instead.
READ_CHUNK: Final = 64 * 1024
#: Unsent output above which reading is paused (bounded memory when the peer stalls).
WRITE_HIGH_WATER: Final = 16 * 1024 * 1024
#: Output below which reading resumes.
WRITE_LOW_WATER: Final = 1024 * 1024


class _ReadProtocol(asyncio.Protocol):
    def __init__(self, link: PipeLink) -> None:
        self._link = link

    def data_received(self, data: bytes) -> None:
        self._link._on_data(data)

    def eof_received(self) -> bool | None:
        self._link._on_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._on_eof()


class _WriteProtocol(asyncio.Protocol):
    def __init__(self, link: PipeLink) -> None:
        self._link = link

    def pause_writing(self) -> None:
        self._link._set_write_paused(True)

    def resume_writing(self) -> None:
        self._link._set_write_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._on_write_lost(exc)


class PipeLink:
    """One reader fd and one writer fd, wired to callbacks on the running loop (pipe
    transports; a reader thread and blocking writes for regular files).

    ``on_data(chunk)`` is called for each chunk read, ``on_eof()`` once when input ends (or
    reading fails), ``on_write_error(exc)`` once if the output side breaks. ``write`` never
    blocks and hands each call to the transport whole (one writer: lines never
    interleave). Above :data:`WRITE_HIGH_WATER` of unsent output (the peer stopped
    reading) reading pauses until the buffer drains: back-pressure, not an unbounded buffer.
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        *,
        on_data: Callable[[bytes], None],
        on_eof: Callable[[], None],
        on_write_error: Callable[[BaseException], None],
    ) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._on_data_cb = on_data
        self._on_eof_cb = on_eof
        self._on_write_error_cb = on_write_error
        self._eof_seen = False
        self._write_failed = False
        self._rtransport: asyncio.ReadTransport | None = None
        self._wtransport: asyncio.WriteTransport | None = None
        self._thread_reader: threading.Thread | None = None
        self._blocking_write = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Attach both fds to the running loop (threads/blocking writes for regular files)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        # Writer first: the reader may deliver data (and the core answer it) at once.
        wfile = open(self._write_fd, "wb", buffering=0, closefd=False)  # noqa: SIM115
        try:
            self._wtransport, _ = await loop.connect_write_pipe(lambda: _WriteProtocol(self), wfile)
            self._wtransport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        except (ValueError, OSError):
            wfile.close()
            self._blocking_write = True
        rfile = open(self._read_fd, "rb", buffering=0, closefd=False)  # noqa: SIM115
        try:
            self._rtransport, _ = await loop.connect_read_pipe(lambda: _ReadProtocol(self), rfile)
            if isinstance(getattr(self._rtransport, "max_size", None), int):
                self._rtransport.max_size = READ_CHUNK  # type: ignore[attr-defined]
        except (ValueError, OSError):
            rfile.close()
            self._thread_reader = threading.Thread(
                target=self._read_thread, name="pywatt-stdin", daemon=True
            )
            self._thread_reader.start()

    def _read_thread(self) -> None:
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(OSError):
            while True:
                chunk = os.read(self._read_fd, READ_CHUNK)
                if not chunk:
                    break
                loop.call_soon_threadsafe(self._on_data, chunk)
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._on_eof)

    def _on_data(self, data: bytes) -> None:
        if not self._eof_seen:
            self._on_data_cb(data)

    def _on_eof(self) -> None:
        if not self._eof_seen:
            self._eof_seen = True
            self._on_eof_cb()

    def _set_write_paused(self, paused: bool) -> None:
        """Pause reading while the write buffer is above :data:`WRITE_HIGH_WATER`."""
        if self._rtransport is not None and not self._eof_seen:
            if paused:
                self._rtransport.pause_reading()
            else:
                self._rtransport.resume_reading()

    def _on_write_lost(self, exc: BaseException | None) -> None:
        if exc is not None and not self._write_failed:
            self._write_failed = True
            self._on_write_error_cb(exc)

    def write(self, data: bytes) -> None:
        """Queue ``data`` (whole lines) for the output fd; errors go to ``on_write_error``."""
        if self._write_failed or not data:
            return
        if self._blocking_write:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._write_fd, view)
                    view = view[n:]
            except OSError as exc:
                self._write_failed = True
                self._on_write_error_cb(exc)
            return
        t = self._wtransport
        if t is None or t.is_closing():
            self._write_failed = True
            self._on_write_error_cb(BrokenPipeError("output closed"))
            return
        t.write(data)

    async def flush_and_close(self, timeout: float = 5.0) -> bool:
        """Wait for queued output to be written, giving up after ``timeout`` s without
        progress (a peer that stopped reading), then detach both fds. Returns False if
        output was left unwritten."""
        t = self._wtransport
        written = True
        if t is not None and not t.is_closing():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            left = t.get_write_buffer_size()
            while left and loop.time() < deadline and not self._write_failed:
                await asyncio.sleep(0.005)
                if t.get_write_buffer_size() < left:  # the peer reads: wait on
                    left = t.get_write_buffer_size()
                    deadline = loop.time() + timeout
            if left and not self._write_failed:
                _log.error("protocol output stalled for %s s: %d byte(s) dropped", timeout, left)
                written = False
            t.close()
        if self._rtransport is not None:
            self._rtransport.close()
        return written

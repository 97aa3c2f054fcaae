"""The blocking driver's stdout: one writer and the ordered output queue in front of it.

Back-pressure is the blocking ``os.write`` itself: a stalled orchestrator stalls the
flusher, the backlog grows, and the reader stops reading above its high-water mark (as
the asyncio driver pauses reading above its write buffer's).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:
    from typing import Final

#: Bytes asked for per read of stdin: a Linux pipe holds 64 KiB, so one read takes
#: everything waiting. Not more: ``os.read`` allocates the full size first, and above
#: glibc's mmap threshold (128 KiB) that is an mmap/munmap per read (docs/performance.md).
READ_CHUNK: Final = 64 * 1024


class BlockingWriter:
    """Writes whole byte strings to ``fd`` (partial pipe writes are continued).

    The first failed write (``BrokenPipeError`` when the orchestrator is gone) calls
    ``on_error(exc)`` on the writing thread and sets :attr:`failed`; later writes are
    dropped. One caller at a time: :class:`OutputQueue`'s flusher.
    """

    __slots__ = ("_fd", "_on_error", "failed")

    def __init__(self, fd: int, on_error: Callable[[OSError], None]) -> None:
        self._fd = fd
        self._on_error = on_error
        self.failed = False

    def write(self, data: bytes | memoryview) -> None:
        """Write all of ``data``; returns when done (or when the output failed)."""
        if self.failed or not data:
            return
        try:
            written = os.write(self._fd, data)  # a pipe usually takes it all at once
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
        except OSError as exc:
            self.failed = True
            self._on_error(exc)


#: Bytes per write call of the flusher (a pipe's capacity). The backlog counts what has
#: not been handed to a write call yet.
WRITE_PIECE: Final = 64 * 1024


class OutputQueue:
    """Protocol output in the order it was queued, written by one thread at a time.

    Whoever takes output from the core queues it under the core's lock (so in the
    core's order) with :meth:`append` or :meth:`claim`, and the thread that
    :meth:`claim` names the flusher calls :meth:`drain` after releasing that lock.
    One caller at a time is the *flusher*: it writes until the queue is empty,
    holding this queue's small lock only for the list operations, never while writing;
    callers that find a flusher at work leave their bytes to it. So lines reach the fd
    in exactly the order queued, whole, batched under load, and a thread holding the
    core's lock never waits for a write. Lock order: core lock, then this queue's.

    ``backlog`` (bytes queued, not yet handed to a write call) is bounded by the caller:
    it stops taking input above its high-water mark (:meth:`wait_below`).
    """

    __slots__ = ("_chunks", "_cond", "_flushing", "_lock", "_waiters", "backlog", "writer")

    def __init__(self, writer: BlockingWriter) -> None:
        """An empty queue writing through ``writer``."""
        self.writer = writer
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # backlog drained / flush ended
        self._chunks: list[bytes] = []
        self._flushing = False
        self._waiters = 0
        self.backlog = 0

    def append(self, data: bytes) -> None:
        """Queue ``data`` (call it under the lock that orders the output)."""
        if data:
            with self._lock:
                self._chunks.append(data)
                self.backlog += len(data)

    def claim(self, data: bytes) -> bytes | None:
        """Queue ``data`` (under the ordering lock, like :meth:`append`) and take the
        flusher role if it is free and there is something to write. Returns None when
        another thread writes it (or nothing waits), else the bytes to hand to
        :meth:`drain` after releasing the ordering lock (``data`` itself in the usual
        case: nothing else waiting, one pipe's worth or less; it is then counted as
        handed to the write already)."""
        with self._lock:
            if data:
                if not self._flushing and not self._chunks and len(data) <= WRITE_PIECE:
                    self._flushing = True
                    return data
                self.backlog += len(data)
                self._chunks.append(data)
            if self._flushing or not self._chunks:
                return None
            self._flushing = True
            return b""

    def drain(self, first: bytes) -> bool:
        """The flusher's loop, after :meth:`claim` returned ``first``: write it, then
        the queue until it is empty. Returns False if the output failed (the queue is
        emptied then: the peer is gone)."""
        lock = self._lock
        writer = self.writer
        if first:  # claim() handed it over uncounted and unqueued: write it before locking
            writer.write(first)
        lock.acquire()
        try:
            chunks = self._chunks
            while chunks and not writer.failed:  # queued by others meanwhile: all of it
                chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                # In pieces of at most a pipe's capacity; each piece leaves the backlog
                # as it is handed to the kernel, so a paused reader resumes before the
                # last bytes reach the peer, not after.
                size = len(chunk)
                view = memoryview(chunk) if size > WRITE_PIECE else chunk
                for start in range(0, size, WRITE_PIECE):
                    piece = view[start : start + WRITE_PIECE]
                    self.backlog -= len(piece)
                    if self._waiters:
                        self._cond.notify_all()
                    lock.release()
                    writer.write(piece)
                    lock.acquire()
                    if writer.failed:
                        break
            failed = writer.failed
            if failed:
                chunks.clear()
                self.backlog = 0
            self._flushing = False
            if self._waiters:
                self._cond.notify_all()
            return not failed
        finally:
            lock.release()

    def wait_below(self, low: int) -> None:
        """Block while more than ``low`` bytes wait and a flush is under way."""
        with self._lock:
            while self.backlog > low and self._flushing:
                self._waiters += 1
                self._cond.wait()
                self._waiters -= 1

    def wait_idle(self, timeout: float) -> bool:
        """Block until no flush is under way, giving up after ``timeout`` seconds in which
        the backlog did not shrink (the peer stopped reading); return whether it ended."""
        with self._lock:
            give_up = time.monotonic() + timeout
            backlog = self.backlog
            while self._flushing:
                if self.backlog < backlog:  # the peer reads: wait on
                    backlog = self.backlog
                    give_up = time.monotonic() + timeout
                left = give_up - time.monotonic()
                if left <= 0:
                    return False
                self._waiters += 1
                self._cond.wait(left)
                self._waiters -= 1
            return True

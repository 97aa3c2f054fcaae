"""The process's stdin/stdout as one blocking reader and one locked writer.

* :func:`guard_stdout` is the asyncio driver's guard, imported rather than
  copied: it is process-wide state (the duplicated protocol fd, fd 1 pointed at
  stderr, ``sys.stdout`` replaced) and must be installed exactly once whichever
  driver asks first.
* :class:`BlockingWriter` writes whole byte strings to one fd under a lock: a
  call never returns before all of its bytes are written (partial pipe writes
  are continued) and no other call's bytes can come between them, so protocol
  lines never interleave. A failed write is reported once and later writes are
  dropped (the peer is gone).
* :func:`read_chunks` is the body of the single reader thread.

Nothing here buffers output: back-pressure is the blocking ``os.write`` itself
(a stalled orchestrator stalls the writer, the writer's lock stalls whoever
flushes next, and the reader stops reading -- the same behaviour as the
asyncio driver pausing reads above its write high-water mark).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["READ_CHUNK", "BlockingWriter", "guard_stdout", "read_chunks"]

#: Bytes asked for per read of stdin (a Linux pipe holds 64 KiB; larger reads
#: just return what is there).
READ_CHUNK: Final = 256 * 1024


def guard_stdout() -> int:
    """Reserve the real stdout for the protocol; return its duplicated fd (idempotent).

    Delegates to the asyncio driver's guard (one process-wide implementation).
    After the call fd 1 and ``sys.stdout`` write to stderr.

    Raises:
        OSError: the fds cannot be duplicated.
    """
    from pywatt_asyncio._guard import guard_stdout as guard

    return guard()


class BlockingWriter:
    """Writes whole byte strings to ``fd``, one caller at a time.

    ``on_error(exc)`` is called once, from the writing thread, when a write
    fails (``BrokenPipeError`` when the orchestrator is gone).
    """

    __slots__ = ("_failed", "_fd", "_on_error", "lock")

    def __init__(self, fd: int, on_error: Callable[[OSError], None]) -> None:
        """Write to ``fd``; nothing is written until :meth:`write`."""
        self._fd = fd
        self._on_error = on_error
        self._failed = False
        #: Held for the whole of each write. A caller that must keep output in
        #: order acquires it *before* releasing its own lock, then calls
        #: :meth:`write_locked`.
        self.lock = threading.Lock()

    @property
    def failed(self) -> bool:
        """True once a write has failed."""
        return self._failed

    def write(self, data: bytes) -> None:
        """Write all of ``data``; returns when done (or when the output failed)."""
        with self.lock:
            self.write_locked(data)

    def write_locked(self, data: bytes) -> None:
        """Like :meth:`write`, for a caller already holding :attr:`lock`."""
        if self._failed or not data:
            return
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self._failed = True
            self._on_error(exc)


def read_chunks(fd: int, on_data: Callable[[bytes], bool], on_eof: Callable[[], None]) -> None:
    """Read ``fd`` until end of input, calling ``on_data`` per chunk, then ``on_eof`` once.

    ``on_data`` returns False to stop reading at once (without ``on_eof``):
    the consumer is gone, and a stray reader must not take input meant for
    the next one. A read error counts as end of input. Exceptions from the
    callbacks propagate.
    """
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            on_eof()
            return
        if not on_data(chunk):
            return

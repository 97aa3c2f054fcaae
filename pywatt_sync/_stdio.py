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
* :data:`READ_CHUNK` is what the module's reading thread asks for per read.

Nothing here buffers output: back-pressure is the blocking ``os.write`` itself
(a stalled orchestrator stalls the writer, the writer's lock stalls whoever
flushes next, and the reader stops reading -- the same behaviour as the
asyncio driver pausing reads above its write high-water mark).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

TYPE_CHECKING = False  # no typing import at run time (start-up time); mypy reads True
if TYPE_CHECKING:
    from typing import Final

__all__ = ["READ_CHUNK", "BlockingWriter", "guard_stdout"]

#: Bytes asked for per read of stdin: a Linux pipe holds 64 KiB, so one read
#: takes everything waiting. Not more: ``os.read`` allocates the full size
#: first, and above glibc's mmap threshold (128 KiB) that is an mmap/munmap
#: per read -- 256 KiB cost 16 us per read against 1 us for 64 KiB (one
#: request line waiting), more than the rest of the request at one in flight.
READ_CHUNK: Final = 64 * 1024


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

    def write_locked(self, data: bytes | memoryview) -> None:
        """Like :meth:`write`, for a caller already holding :attr:`lock`."""
        if self._failed or not data:
            return
        try:
            written = os.write(self._fd, data)  # a pipe usually takes it all at once
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
        except OSError as exc:
            self._failed = True
            self._on_error(exc)

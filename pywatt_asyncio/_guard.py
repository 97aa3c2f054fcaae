"""The stdout guard, shared by both drivers (no asyncio import: the blocking driver uses it).

:func:`guard_stdout` keeps the protocol channel clean. It duplicates the real fd 1 for the
protocol writer and then points fd 1 (and ``sys.stdout``) at stderr, so ``print()``, logging,
C extensions and child processes that write to "stdout" end up on stderr and can never put a
stray byte between two protocol lines. It is process-wide state, installed exactly once
whichever driver asks first.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time (start-up time)
    from typing import Final

__all__ = ["PROTOCOL_FD_ENV", "guard_stdout"]

#: Environment marker "<pid>:<fd>" left by the guard, so a second guard in the same process
#: (the blocking driver, an adapter) finds the protocol fd instead of duplicating stderr.
#: The pid makes it meaningless in child processes, which do not inherit the fd.
PROTOCOL_FD_ENV: Final = "PYWATT_PROTOCOL_FD"

_guard_lock = threading.Lock()
_guarded_fd: int | None = None


def guard_stdout() -> int:
    """Reserve the real stdout for the protocol and return its (duplicated) fd.

    After the call fd 1 and ``sys.stdout`` write to stderr. Idempotent: later calls return the
    same fd. Raises ``OSError`` if the fds cannot be duplicated.
    """
    global _guarded_fd
    with _guard_lock:
        if _guarded_fd is not None:
            return _guarded_fd
        inherited = _marked_fd()
        if inherited is not None:  # another driver in this process guarded already
            _guarded_fd = inherited
            return inherited
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stdout.flush()
        proto_fd = os.dup(1)
        os.dup2(2, 1)
        # fd 1 is now stderr; give sys.stdout a line-buffered writer on it so print()
        # output appears promptly and interleaves sanely with logging.
        try:
            sys.stdout = io.TextIOWrapper(
                open(1, "wb", buffering=0, closefd=False),  # noqa: SIM115
                encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                errors="backslashreplace",
                line_buffering=True,
                write_through=True,
            )
        except (OSError, ValueError):  # pragma: no cover - exotic platforms
            sys.stdout = sys.stderr
        _guarded_fd = proto_fd
        os.environ[PROTOCOL_FD_ENV] = f"{os.getpid()}:{proto_fd}"
        return proto_fd


def _marked_fd() -> int | None:
    """Return the protocol fd recorded by a guard earlier in *this* process, if any."""
    pid, _, fd = os.environ.get(PROTOCOL_FD_ENV, "").partition(":")
    if pid != str(os.getpid()) or not fd.isdigit():
        return None
    try:
        os.fstat(int(fd))
    except OSError:
        return None
    return int(fd)
